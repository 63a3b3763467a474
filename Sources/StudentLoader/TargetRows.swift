import Foundation
import ShardFormat
import Truncation

/// Loss-ready rows of one window, written by a decode worker and copied into a ``Batch`` by the
/// consumer. Allocated once for T tokens and k slots and reused (the pipeline keeps a free
/// list), so converting a window allocates nothing. One owner at a time: the worker filling it,
/// the pipeline's ready set, or the consumer copying it out.
final class WindowRows {
    let capacity: Int, k: Int
    /// Tokens in use, 0...capacity.
    var n = 0
    let inputIDs: UnsafeMutablePointer<Int32>   // [T]
    let labels: UnsafeMutablePointer<Int32>     // [T] next input id, −1 past the sequence's last token
    let ids: UnsafeMutablePointer<Int32>        // [T, k] −1 in unused slots
    let weights: UnsafeMutablePointer<Float>    // [T, k] 0 in unused slots
    let tail: UnsafeMutablePointer<Float>       // [T] uncovered mass (tail mode), else 0
    let counts: UnsafeMutablePointer<Int32>     // [T] used slots
    private let storage: UnsafeMutableRawPointer

    init(capacity T: Int, k: Int) {
        capacity = T; self.k = k
        let row = T * 4, wide = T * k * 4
        storage = .allocate(byteCount: max(1, 4 * row + 2 * wide), alignment: 64)
        // Safe because the six arrays tile the allocation (4-byte elements, T or T·k each).
        inputIDs = storage.bindMemory(to: Int32.self, capacity: T)
        labels = (storage + row).bindMemory(to: Int32.self, capacity: T)
        counts = (storage + 2 * row).bindMemory(to: Int32.self, capacity: T)
        tail = (storage + 3 * row).bindMemory(to: Float.self, capacity: T)
        ids = (storage + 4 * row).bindMemory(to: Int32.self, capacity: T * k)
        weights = (storage + 4 * row + wide).bindMemory(to: Float.self, capacity: T * k)
    }

    deinit { storage.deallocate() }
}

/// Turns decoded cache rows into the targets of a ``TargetMode``.
struct TargetConverter {
    let k: Int
    let mode: TargetMode
    let invTau: Double

    /// Fills `out` with the rows of window `w` from `tb`, whose row 0 is global token `base`.
    /// `tb` holds at least the window's tokens and, when the sequence continues, one more (for
    /// the last label). `out` has capacity >= the window's length and k slots.
    func rows(_ w: Window, from tb: TargetBatch, base: Int, into out: WindowRows) {
        let n = w.length, off = w.firstToken - base, K = k
        out.n = n
        tb.inputIDs.withUnsafeBufferPointer { inp in
            // Safe because tb holds rows off..<off+n (and off+n when the sequence continues).
            out.inputIDs.update(from: inp.baseAddress! + off, count: n)
            for t in 0..<n { out.labels[t] = w.firstToken + t + 1 < w.sequenceEnd ? inp[off + t + 1] : -1 }
        }
        out.tail.update(repeating: 0, count: n)
        if mode == .sampled {
            out.ids.update(repeating: -1, count: n * K); out.weights.update(repeating: 0, count: n * K)
            tb.sampleOffsets.withUnsafeBufferPointer { so in
            tb.sampleIDs.withUnsafeBufferPointer { si in
            tb.sampleDraws.withUnsafeBufferPointer { sd in
                for t in 0..<n {
                    let a = so[off + t], c = so[off + t + 1] - a
                    var N: UInt64 = 0
                    for i in a..<(a + c) { N += UInt64(sd[i]) }
                    out.counts[t] = Int32(c)
                    // Safe because c <= maxSamples <= k (the loader refuses fewer slots) and
                    // the row has K = k slots.
                    if c > 0 { (out.ids + t * K).update(from: si.baseAddress! + a, count: c) }
                    let o = out.weights + t * K, total = Double(N)
                    for j in 0..<c { o[j] = Float(Double(sd[a + j]) / total) }
                }
            }}}
            return
        }
        let kd = tb.k   // decoded row width (== k)
        tb.entryLogProbs.withUnsafeBufferPointer { lp in
        tb.entryIDs.withUnsafeBufferPointer { eid in
        tb.entryCounts.withUnsafeBufferPointer { ec in
            for t in 0..<n {
                let r = off + t, c = Int(ec[r])
                // Safe because c <= k = kd (the reader clamps counts to the prefix) and rows are K wide.
                let oi = out.ids + t * K, o = out.weights + t * K
                out.counts[t] = Int32(c)
                oi.update(from: eid.baseAddress! + r * kd, count: c)
                (oi + c).update(repeating: -1, count: K - c)
                (o + c).update(repeating: 0, count: K - c)
                if c == 0 { if mode == .tail { out.tail[t] = 1 }; continue }
                out.tail[t] = fill(o, lp.baseAddress! + r * kd, c)
            }
        }}}
    }

    /// Writes the c weights of one row from its log-probs `l` (descending); returns its tail.
    /// Exponentials in float32 (the weights are float32) with ``expf8(_:)``; sums in double
    /// with the value of an index-order sum (see ``expShiftedSum(_:_:_:minus:times:)``).
    @inline(__always)
    private func fill(_ o: UnsafeMutablePointer<Float>, _ l: UnsafePointer<Float>, _ c: Int) -> Float {
        let a = Float(invTau)
        if mode == .renormalized {
            // Shift by the largest log-prob so exp never overflows at small τ.
            let s = expShiftedSum(o, l, c, minus: l[0], times: a)
            let inv = Float(1 / s)
            for i in 0..<c { o[i] *= inv }
            return 0
        }
        if invTau == 1 {
            let s = expShiftedSum(o, l, c, minus: 0, times: 1)
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
