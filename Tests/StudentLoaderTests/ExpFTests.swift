import Foundation
import Testing
import ShardFormat
@testable import StudentLoader
import Random

/// The loader's vector `expf8` must give the very bits of the scalar `expf` it replaced (so
/// batches stay bit-identical) and be accurate on any platform.
@Suite struct ExpFTests {
    /// Float bit patterns `0, s, 2s, …` over all 2^32 (NaNs, infinities and subnormals included),
    /// in vectors of 8. `LOADER_EXPF_EXHAUSTIVE=1` checks every pattern (about a minute).
    func sweep(_ body: (SIMD8<Float>, SIMD8<Float>) -> Void) {
        let s: UInt64 = ProcessInfo.processInfo.environment["LOADER_EXPF_EXHAUSTIVE"] == "1" ? 1 : 251
        var v = SIMD8<Float>(), n = 0
        for b in stride(from: UInt64(0), to: 1 << 32, by: Int(s)) {
            v[n] = Float(bitPattern: UInt32(b)); n += 1
            if n == 8 { body(v, expf8(v)); n = 0 }
        }
    }

    #if canImport(Glibc) && arch(x86_64)
    @Test func bitIdenticalToLibmExpf() {
        var mismatches = 0, first = ""
        sweep { x, y in
            for i in 0..<8 {
                let e = expf(x[i])
                if e.bitPattern != y[i].bitPattern && !(e.isNaN && y[i].isNaN) {
                    if mismatches == 0 { first = "expf(\(x[i])) = \(e), expf8 gave \(y[i])" }
                    mismatches += 1
                }
            }
        }
        #expect(mismatches == 0, "\(first)")
    }
    #endif

    @Test func withinOneUlpOfADoubleReference() {
        var worst = 0.0, at: Float = 0
        sweep { x, y in
            for i in 0..<8 where x[i].isFinite && x[i] > -87 && x[i] < 88 {
                let ref = Foundation.exp(Double(x[i]))
                let err = abs(Double(y[i]) - ref) / Double(Float(ref).ulp)
                if err > worst { worst = err; at = x[i] }
            }
        }
        #expect(worst <= 0.51, "worst \(worst) ulp at x = \(at)")
        let special = expf8(SIMD8<Float>(-.infinity, .infinity, .nan, -104, -103.5, 88.5, 89, -88))
        #expect(special[0] == 0 && special[1] == .infinity && special[2].isNaN && special[3] == 0)
        #expect(special[4] > 0 && special[4] < 1e-44 && special[5] > 2e38 && special[6] == .infinity)
        #expect(abs(Double(special[7]) - Foundation.exp(-88.0)) <= Double(Float(Foundation.exp(-88.0)).ulp))
    }

    /// Rows of every length and shape: values as `expf8` one by one, and the sum equal to the
    /// index-order double sum — on the vector path (terms in [2^-23, 1]) and on the ordered one
    /// (tiny terms, terms above 1, 128 or more terms).
    @Test func shiftedRowsMatchElementwiseAndTheOrderedSum() {
        var rng = SplitMix64(seed: 3)
        for count in [0, 1, 7, 8, 9, 16, 63, 64, 130] {
            for (spread, a) in [(Float(0.01), Float(1)), (0.3, 1 / 0.7), (3, 1), (-0.01, 1)] {
                var v: Float = 0
                let l = (0..<count).map { _ in v -= spread * Float(rng.next() % 1000) / 1000; return v }
                var o = [Float](repeating: .nan, count: count)
                let m: Float = l.first ?? 0
                let s = l.withUnsafeBufferPointer { lp in o.withUnsafeMutableBufferPointer { op in
                    count > 0 ? expShiftedSum(op.baseAddress!, lp.baseAddress!, count, minus: m, times: a) : 0
                }}
                let e = l.map { expf8(SIMD8(repeating: ($0 - m) * a))[0] }
                #expect(o.map(\.bitPattern) == e.map(\.bitPattern))
                var ordered = 0.0
                for x in e { ordered += Double(x) }
                #expect(s.bitPattern == ordered.bitPattern, "count \(count) spread \(spread)")
            }
        }
    }
}
