import Foundation
import ShardFormat

/// Loss-ready rows of one window, made by a decode worker (n = window length, k = slots).
struct WindowRows {
    var inputIDs: [Int32]   // [n]
    var labels: [Int32]     // [n] next input id, −1 past the sequence's last token
    var ids: [Int32]        // [n, k] −1 in unused slots
    var weights: [Float]    // [n, k] 0 in unused slots
    var tail: [Float]       // [n] uncovered mass (tail mode), else 0
    var counts: [Int32]     // [n] used slots
}

/// Turns decoded cache rows into the targets of a ``TargetMode``.
struct TargetConverter {
    let k: Int
    let mode: TargetMode
    let invTau: Double

    /// Rows of window `w` from `tb`, whose row 0 is global token `base`. `tb` holds at least
    /// the window's tokens and, when the sequence continues, one more (for the last label).
    func rows(_ w: Window, from tb: TargetBatch, base: Int) -> WindowRows {
        let n = w.length, off = w.firstToken - base, K = k
        var out = WindowRows(inputIDs: Array(tb.inputIDs[off..<(off + n)]), labels: [Int32](repeating: -1, count: n),
                             ids: [], weights: [],
                             tail: [Float](repeating: 0, count: n), counts: [Int32](repeating: 0, count: n))
        for t in 0..<n where w.firstToken + t + 1 < w.sequenceEnd { out.labels[t] = tb.inputIDs[off + t + 1] }
        if mode == .sampled {
            out.ids = .init(repeating: -1, count: n * K); out.weights = .init(repeating: 0, count: n * K)
            for t in 0..<n {
                let q = tb.sampleOffsets[off + t]..<tb.sampleOffsets[off + t + 1]
                var N: UInt64 = 0
                for i in q { N += UInt64(tb.sampleDraws[i]) }
                out.counts[t] = Int32(q.count)
                for (j, i) in q.enumerated() {
                    out.ids[t * K + j] = tb.sampleIDs[i]
                    out.weights[t * K + j] = Float(Double(tb.sampleDraws[i]) / Double(N))
                }
            }
            return out
        }
        let kd = tb.k   // decoded row width (== k)
        // Filled row by row below (every slot written), so no zero-fill first.
        out.ids = [Int32](unsafeUninitializedCapacity: n * K) { oid, count in
        out.weights = [Float](unsafeUninitializedCapacity: n * K) { ow, wcount in
            tb.entryLogProbs.withUnsafeBufferPointer { lp in
            tb.entryIDs.withUnsafeBufferPointer { eid in
                for t in 0..<n {
                    let r = off + t, c = Int(tb.entryCounts[r])
                    // Safe because c <= k = kd (the reader clamps counts to the prefix) and rows are K wide.
                    let oi = oid.baseAddress! + t * K, o = ow.baseAddress! + t * K
                    out.counts[t] = Int32(c)
                    oi.update(from: eid.baseAddress! + r * kd, count: c)
                    (oi + c).update(repeating: -1, count: K - c)
                    (o + c).update(repeating: 0, count: K - c)
                    if c == 0 { if mode == .tail { out.tail[t] = 1 }; continue }
                    out.tail[t] = fill(o, lp.baseAddress! + r * kd, c)
                }
            }}
            wcount = n * K
        }
            count = n * K
        }
        return out
    }

    /// Writes the c weights of one row from its log-probs `l` (descending); returns its tail.
    /// Exponentials in float32 (the weights are float32); sums in double.
    @inline(__always)
    private func fill(_ o: UnsafeMutablePointer<Float>, _ l: UnsafePointer<Float>, _ c: Int) -> Float {
        let a = Float(invTau)
        if mode == .renormalized {
            // Shift by the largest log-prob so exp never overflows at small τ.
            let m = l[0]
            var s = 0.0
            for i in 0..<c { let e = expf((l[i] - m) * a); o[i] = e; s += Double(e) }
            let inv = Float(1 / s)
            for i in 0..<c { o[i] *= inv }
            return 0
        }
        if invTau == 1 {
            var s = 0.0
            for i in 0..<c { let p = expf(l[i]); o[i] = p; s += Double(p) }
            return Float(max(0, 1 - s))
        }
        // Everything scaled by e^(−l_0/τ) so neither head nor tail leaves float range.
        let m = Double(l[0]) * invTau
        var s = 0.0, head = 0.0
        for i in 0..<c { head += exp(Double(l[i])); let e = exp(Double(l[i]) * invTau - m); o[i] = Float(e); s += e }
        let tailT = max(0, 1 - head) * exp(Double(l[c - 1]) * (invTau - 1) - m)
        let z = s + tailT
        for i in 0..<c { o[i] = Float(Double(o[i]) / z) }
        return Float(tailT / z)
    }
}
