import Foundation
import Testing
@testable import Kernels

/// Runs `body` with pointers to arrays; keeps the tests readable.
func withPointers<R>(_ a: [Float], _ body: (UnsafePointer<Float>) -> R) -> R {
    a.withUnsafeBufferPointer { body($0.baseAddress!) }
}

@Suite struct NormTests {
    @Test func rmsnormMatchesDoubleReference() {
        var rng = Rng(21)
        for (rows, C) in [(1, 1), (3, 17), (9, 576), (2, 33)] {
            let x = rng.floats(rows * C, scale: 3), w = rng.floats(C)
            var y = [Float](repeating: 0, count: rows * C), rstd = [Float](repeating: 0, count: rows)
            withPointers(x) { xp in withPointers(w) { wp in y.withUnsafeMutableBufferPointer { yp in rstd.withUnsafeMutableBufferPointer { rp in
                rmsnormForward(out: yp.baseAddress!, rstd: rp.baseAddress!, input: xp, weight: wp, rows: rows, channels: C, eps: 1e-5, pool: pool2)
            }}}}
            var ref = [Double](), refR = [Double]()
            for r in 0..<rows {
                let ms = (0..<C).reduce(0.0) { $0 + Double(x[r * C + $1]) * Double(x[r * C + $1]) } / Double(C)
                let s = 1 / (ms + 1e-5).squareRoot()
                refR.append(s)
                for c in 0..<C { ref.append(Double(x[r * C + c]) * s * Double(w[c])) }
            }
            #expect(nse(y, ref) <= nseBound, "rows=\(rows) C=\(C)")
            #expect(nse(rstd, refR) <= nseBound)
        }
    }

    @Test func layernormMatchesDoubleReferenceEvenWithLargeMean() {
        var rng = Rng(22)
        for (rows, C) in [(1, 1), (4, 19), (5, 768)] {
            let x = rng.floats(rows * C).map { $0 + 100 }, w = rng.floats(C), b = rng.floats(C)
            var y = [Float](repeating: 0, count: rows * C)
            var mean = [Float](repeating: 0, count: rows), rstd = mean
            withPointers(x) { xp in withPointers(w) { wp in withPointers(b) { bp in
                y.withUnsafeMutableBufferPointer { yp in mean.withUnsafeMutableBufferPointer { mp in rstd.withUnsafeMutableBufferPointer { rp in
                    layernormForward(out: yp.baseAddress!, mean: mp.baseAddress!, rstd: rp.baseAddress!, input: xp,
                                     weight: wp, bias: bp, rows: rows, channels: C, eps: 1e-5, pool: pool2)
                }}}
            }}}
            var ref = [Double](), refM = [Double]()
            for r in 0..<rows {
                let row = (0..<C).map { Double(x[r * C + $0]) }
                let m = row.reduce(0, +) / Double(C)
                let v = row.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(C)
                refM.append(m)
                for c in 0..<C { ref.append((row[c] - m) / (v + 1e-5).squareRoot() * Double(w[c]) + Double(b[c])) }
            }
            #expect(nse(y, ref) <= nseBound, "rows=\(rows) C=\(C)")
            #expect(nse(mean, refM) <= nseBound)
        }
    }
}

@Suite struct ActivationTests {
    @Test func swigluAndGeluMatchDoubleReference() {
        var rng = Rng(31)
        for n in [1, 15, 16, 17, 1000, 9000] {
            let g = rng.floats(n, scale: 12), u = rng.floats(n, scale: 2)
            var y = [Float](repeating: 0, count: n), z = y
            withPointers(g) { gp in withPointers(u) { up in y.withUnsafeMutableBufferPointer { yp in z.withUnsafeMutableBufferPointer { zp in
                swigluForward(out: yp.baseAddress!, gate: gp, up: up, count: n, pool: pool2)
                geluForward(out: zp.baseAddress!, input: gp, count: n, pool: pool2)
            }}}}
            let refS = (0..<n).map { i -> Double in let x = Double(g[i]); return x / (1 + Foundation.exp(-x)) * Double(u[i]) }
            let refG = (0..<n).map { i -> Double in
                let x = Double(g[i]); return 0.5 * x * (1 + tanh((2 / Double.pi).squareRoot() * (x + 0.044715 * x * x * x)))
            }
            #expect(nse(y, refS) <= nseBound, "n=\(n)")
            #expect(nse(z, refG) <= nseBound, "n=\(n)")
        }
    }

    @Test func simdExpIsAccurateAndHandlesExtremes() {
        var worst = 0.0
        var x: Float = -87
        while x < 88 {
            let got = Double(scalarExp(x)), ref = Foundation.exp(Double(x))
            worst = max(worst, abs(got - ref) / ref)
            x += 0.0137
        }
        #expect(worst < 5e-7)
        #expect(scalarExp(-.infinity) == 0 && scalarExp(-1000) == 0 && scalarExp(0) == 1)
        #expect(scalarExp(.nan).isNaN)
    }
}

@Suite struct EmbeddingTests {
    @Test func lookupAddsPositionsAndWidensHalfTables() throws {
        let V = 7, C = 5, T = 3, B = 2
        var rng = Rng(41)
        let table = rng.floats(V * C), pos = rng.floats(T * C)
        let bf = table.map { UInt16($0.bitPattern >> 16) }
        let tokens: [Int32] = [6, 0, 3, 3, 1, 6]
        var out = [Float](repeating: 0, count: B * T * C)
        try bf.withUnsafeBytes { tp in try pos.withUnsafeBytes { pp in try out.withUnsafeMutableBufferPointer { op in
            try tokens.withUnsafeBufferPointer { kp in
                try embeddingForward(out: op.baseAddress!, tokens: kp.baseAddress!, batch: B, length: T,
                                     tokenTable: EmbeddingTable(base: tp.baseAddress!, type: .bfloat16, rows: V, columns: C),
                                     positionTable: EmbeddingTable(base: pp.baseAddress!, type: .float32, rows: T, columns: C), pool: pool2)
            }
        }}}
        for r in 0..<(B * T) {
            for c in 0..<C {
                #expect(out[r * C + c] == widenBFloat16(bf[Int(tokens[r]) * C + c]) + pos[(r % T) * C + c])
            }
        }
    }

    @Test func outOfRangeTokenIsAnErrorNamingTheRow() {
        let table = [Float](repeating: 1, count: 8)
        var out = [Float](repeating: 0, count: 8)
        let tokens: [Int32] = [1, 4]
        #expect(throws: KernelError.tokenOutOfRange(row: 1, id: 4, vocab: 4)) {
            try table.withUnsafeBytes { tp in try out.withUnsafeMutableBufferPointer { op in try tokens.withUnsafeBufferPointer { kp in
                try embeddingForward(out: op.baseAddress!, tokens: kp.baseAddress!, batch: 1, length: 2,
                                     tokenTable: EmbeddingTable(base: tp.baseAddress!, type: .float32, rows: 4, columns: 2), pool: pool1)
            }}}
        }
    }
}
