import Foundation
import Testing
@testable import Kernels

/// The streaming top-K against a full sort, on rows shaped to reach every path of the
/// tile-at-a-time selection: a first tile cut by quickselect, later tiles with more than K
/// newcomers, NaN and -inf, ties across tiles, K larger than a tile.
@Suite struct TopKTests {
    /// (value desc, id asc) order of the non-NaN entries of a row: what top-K must return.
    func reference(_ row: ArraySlice<Float>) -> [Int] {
        let base = row.startIndex
        return row.indices.filter { !row[$0].isNaN }.map { $0 - base }.sorted { a, b in
            let x = row[base + a], y = row[base + b]
            return x != y ? x > y : a < b
        }
    }

    func check(_ logits: [Float], rows: Int, vocab V: Int, k: Int, _ label: String) {
        var ids = [Int32](repeating: -1, count: rows * k), vals = [Float](repeating: .nan, count: rows * k)
        var lse = [Float](repeating: 0, count: rows)
        logits.withUnsafeBufferPointer { lp in
            topKLogsumexp(logits: lp.baseAddress!, rows: rows, vocab: V, k: k, topIds: &ids, topLogits: &vals,
                          logsumexp: &lse, pool: pool2)
        }
        for r in 0..<rows {
            let row = logits[(r * V)..<(r * V + V)]
            let order = reference(row)
            let n = min(k, order.count)  // slots past the non-NaN values are left untouched
            #expect(ids[(r * k)..<(r * k + n)].map(Int.init) == Array(order.prefix(n)), "\(label) row \(r) k \(k)")
            #expect(vals[(r * k)..<(r * k + n)].elementsEqual(order.prefix(n).map { row[row.startIndex + $0] }),
                    "\(label) row \(r) k \(k)")
            let finite = row.filter { !$0.isNaN }
            if row.contains(where: \.isNaN) {
                #expect(lse[r].isNaN, "\(label) row \(r): a NaN logit makes the logsumexp NaN")
            } else if let m = finite.max(), m.isFinite {
                let s = finite.reduce(0.0) { $0 + Foundation.exp(Double($1) - Double(m)) }
                #expect(abs(Double(lse[r]) - (Double(m) + Foundation.log(s))) <= 1e-5 * max(1, abs(Double(m))),
                        "\(label) row \(r) logsumexp")
            }
        }
    }

    @Test func risingRowsSendMoreThanKNewcomersInEveryTile() {
        // Each tile beats the last one everywhere: every tile hands the merge more than K.
        let V = 2600
        var rng = Rng(91)
        let logits = (0..<(3 * V)).map { i in Float(i % V) * 0.01 + rng.float() * 0.005 }
        for k in [1, 5, 64, 100] { check(logits, rows: 3, vocab: V, k: k, "rising") }
    }

    @Test func nanMinusInfinityAndTiesAcrossTiles() {
        let V = 1700
        var rng = Rng(92)
        var logits = (0..<(4 * V)).map { _ in Float(rng.next() % 9) - 4 }  // nine values: ties everywhere
        for i in stride(from: 3, to: V, by: 37) { logits[i] = .nan }                     // row 0: NaN in every tile
        for i in V..<(2 * V) where i % 3 != 0 { logits[i] = -.infinity }                  // row 1: mostly -inf
        for i in (2 * V)..<(2 * V + 600) { logits[i] = -.infinity }                       // row 2: a first tile of -inf
        for i in (3 * V)..<(4 * V) { logits[i] = i % 700 == 0 ? 2 : -.infinity }          // row 3: fewer finite than K
        for k in [1, 8, 64] { check(logits, rows: 4, vocab: V, k: k, "special") }
    }

    @Test func kLargerThanATileAndRandomRows() {
        let V = 3000
        var rng = Rng(93)
        let logits = rng.floats(2 * V, scale: 10)
        for k in [63, 64, 65, 511, 513, 700] { check(logits, rows: 2, vocab: V, k: k, "random") }
    }

    @Test func kthLargestMatchesSorting() {
        var rng = Rng(94)
        for n in [1, 2, 17, 128, 129, 512] {
            let a = (0..<n).map { _ in n > 100 && rng.next() % 4 == 0 ? Float(3) : rng.float() }
            var buffers = [Float](repeating: 0, count: 2 * n)
            let sorted = a.sorted(by: >)
            for k in Set([1, 2, n / 3 + 1, n / 2 + 1, n]) where k >= 1 && k <= n {
                let got = a.withUnsafeBufferPointer { ap in
                    buffers.withUnsafeMutableBufferPointer { kthLargest(ap.baseAddress!, n, k, buffers: $0.baseAddress!) }
                }
                #expect(got == sorted[k - 1], "n \(n) k \(k)")
            }
        }
    }
}
