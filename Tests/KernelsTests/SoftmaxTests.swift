import Foundation
import Testing
@testable import Kernels

@Suite struct SoftmaxTests {
    @Test func softmaxAndLogsumexpMatchDoubleReference() {
        var rng = Rng(51)
        for (rows, C) in [(1, 1), (3, 31), (2, 1000)] {
            let x = rng.floats(rows * C, scale: 20)
            var y = [Float](repeating: 0, count: rows * C)
            withPointers(x) { xp in y.withUnsafeMutableBufferPointer { yp in
                softmaxForward(out: yp.baseAddress!, input: xp, rows: rows, columns: C, pool: pool2)
            }}
            var ref = [Double]()
            for r in 0..<rows {
                let row = (0..<C).map { Double(x[r * C + $0]) }
                let m = row.max()!, s = row.reduce(0) { $0 + Foundation.exp($1 - m) }
                ref += row.map { Foundation.exp($0 - m) / s }
                let lse = withPointers(x) { logsumexp($0 + r * C, count: C) }
                #expect(abs(Double(lse) - (m + Foundation.log(s))) <= 1e-6 * max(1, abs(m)))
            }
            #expect(nse(y, ref) <= nseBound)
        }
    }

    @Test func logsumexpIsStableForHugeLogits() {
        let x: [Float] = [1e30, 1e30, -1e30, 3e29]
        let lse = withPointers(x) { logsumexp($0, count: 4) }
        #expect(lse == 1e30)  // 1e30 + log 2 rounds back to 1e30 in float32
        let y: [Float] = [88.5, 89, 2000, 1999]
        let l2 = withPointers(y) { logsumexp($0, count: 4) }
        #expect(abs(Double(l2) - (2000 + Foundation.log(1 + Foundation.exp(-1.0)))) < 1e-3)
        let z: [Float] = [-.infinity, -.infinity]
        #expect(withPointers(z) { logsumexp($0, count: 2) } == -.infinity)
        #expect(withPointers([Float.infinity, 1]) { logsumexp($0, count: 2) } == .infinity)
    }

    @Test func topKMatchesFullSortWithTiesByLowerId() {
        var rng = Rng(53)
        let rows = 5, V = 3001
        // Few distinct values so ties are everywhere.
        let logits = (0..<(rows * V)).map { _ in Float(rng.next() % 40) - 20 + (rng.next() % 7 == 0 ? 1000 : 0) }
        for k in [0, 1, 7, 64, V] {
            var ids = [Int32](repeating: -1, count: rows * k), vals = [Float](repeating: 0, count: rows * k)
            var lse = [Float](repeating: 0, count: rows)
            withPointers(logits) { lp in ids.withUnsafeMutableBufferPointer { ip in vals.withUnsafeMutableBufferPointer { vp in
                lse.withUnsafeMutableBufferPointer { sp in
                    topKLogsumexp(logits: lp, rows: rows, vocab: V, k: k, topIds: ip.baseAddress!, topLogits: vp.baseAddress!,
                                  logsumexp: sp.baseAddress!, pool: pool2)
                }
            }}}
            for r in 0..<rows {
                let order = (0..<V).sorted { a, b in
                    let x = logits[r * V + a], y = logits[r * V + b]
                    return x != y ? x > y : a < b
                }
                #expect(ids[(r * k)..<(r * k + k)].map(Int.init) == Array(order.prefix(k)), "row \(r) k \(k)")
                #expect(vals[(r * k)..<(r * k + k)] == ArraySlice(order.prefix(k).map { logits[r * V + $0] }))
                let m = Double(order.first.map { logits[r * V + $0] }!)
                let s = (0..<V).reduce(0.0) { $0 + Foundation.exp(Double(logits[r * V + $1]) - m) }
                #expect(abs(Double(lse[r]) - (m + Foundation.log(s))) <= 1e-5 * abs(m))
            }
        }
    }
}
