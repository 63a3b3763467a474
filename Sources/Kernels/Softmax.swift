#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Softmax, logsumexp and streaming top-K selection.

/// Largest element of x (n >= 1), 16 lanes at a time.
@inline(__always)
func rowMax(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
    var m = SIMD16<Float>(repeating: -.infinity)
    let raw = UnsafeRawPointer(x)
    var i = 0
    while i + 16 <= n {
        // Safe because i+16 <= n elements exist. (A compare+blend: `pointwiseMax` goes lane
        // by lane for its NaN rules.)
        let v = raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
        m = m.replacing(with: v, where: v .> m)
        i += 16
    }
    var r = m.max()
    while i < n { r = Swift.max(r, x[i]); i += 1 }
    return r
}

/// Σ e^(x[i] - shift) over n elements, 16 lanes at a time (tail through a padded vector).
@inline(__always)
func sumExp(_ x: UnsafePointer<Float>, _ n: Int, _ shift: Float) -> Float {
    var s = SIMD16<Float>()
    let raw = UnsafeRawPointer(x)
    let sh = SIMD16<Float>(repeating: shift)
    var i = 0
    while i + 16 <= n {
        // Safe because i+16 <= n elements exist.
        s += simdExp(raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self) - sh)
        i += 16
    }
    if i < n {
        var v = SIMD16<Float>(repeating: -.infinity)
        // Safe because only the n-i remaining elements are read.
        for j in 0..<(n - i) { v[j] = x[i + j] }
        s += simdExp(v - sh)
    }
    return s.sum()
}

/// log Σ e^x[i], computed stably (shifted by the maximum). Returns -inf for n == 0 or an
/// all -inf row, +inf if any element is +inf.
///
/// API status: final.
public func logsumexp(_ x: UnsafePointer<Float>, count n: Int) -> Float {
    guard n > 0 else { return -.infinity }
    let m = rowMax(x, n)
    if !m.isFinite { return m }
    return m + logf(sumExp(x, n, m))
}

/// Softmax over each row: out = e^(inp - max) / Σ e^(inp - max).
///
/// inp (rows, C) -> out (rows, C); `out` may alias `inp`.
///
/// API status: final.
public func softmaxForward(out: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>,
                           rows: Int, columns C: Int, pool: ThreadPool) {
    pool.parallelFor(rows) { rs in
        for r in rs {
            // Safe because r < rows keeps every access inside row r's C floats.
            let x = input + r * C, y = out + r * C
            let m = rowMax(x, C)
            mapSIMD(y, x, C) { simdExp($0 - m) }
            let (s, _) = sumAndSquares(y, C)
            let k = 1 / s
            mapSIMD(y, y, C) { $0 * k }
        }
    }
}

/// Streaming per-row top-K and logsumexp over values that arrive in ascending id order.
/// Holds the K best (value, id) pairs sorted by value descending, ties by lower id — which,
/// since ids arrive ascending, means a newcomer must be strictly greater than the worst kept.
@usableFromInline
struct TopKAccumulator {
    /// vals (k), ids (k): the output row itself, filled in place.
    let vals: UnsafeMutablePointer<Float>
    let ids: UnsafeMutablePointer<Int32>
    let k: Int
    var filled = 0
    /// Running maximum and Σ e^(x - maximum) for the logsumexp.
    var maximum: Float = -.infinity
    var sum: Double = 0

    init(vals: UnsafeMutablePointer<Float>, ids: UnsafeMutablePointer<Int32>, k: Int) {
        self.vals = vals; self.ids = ids; self.k = k
    }

    @inline(__always)
    mutating func insert(_ v: Float, _ id: Int32) {
        // Binary search for the first kept value < v (equal values keep their earlier ids ahead).
        var lo = 0, hi = filled
        while lo < hi {
            let mid = (lo + hi) >> 1
            // Safe because mid < filled <= k.
            if vals[mid] < v { hi = mid } else { lo = mid + 1 }
        }
        let last = Swift.min(filled, k - 1)
        var j = last
        // Safe because j <= k-1 and j-1 >= lo >= 0 stay inside the k-element rows.
        while j > lo { vals[j] = vals[j - 1]; ids[j] = ids[j - 1]; j -= 1 }
        vals[lo] = v; ids[lo] = id
        if filled < k { filled += 1 }
    }

    /// Feeds values x (n) with ids firstId..<firstId+n.
    @inline(__always)
    mutating func consume(_ x: UnsafePointer<Float>, _ n: Int, firstId: Int) {
        guard n > 0 else { return }
        let m = rowMax(x, n)
        if m > maximum {
            if maximum != -.infinity { sum *= Double(scalarExp(maximum - m)) }
            maximum = m
        }
        if maximum != -.infinity && maximum != .infinity {
            sum += Double(sumExp(x, n, maximum))
        }
        guard k > 0 else { return }
        let raw = UnsafeRawPointer(x)
        var i = 0
        while i < n {
            let w = Swift.min(16, n - i)
            if filled == k && w == 16 {
                // Safe because i+16 <= n elements exist.
                let v = raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
                if !any(v .> SIMD16<Float>(repeating: vals[k - 1])) { i += 16; continue }
            }
            for j in i..<(i + w) {
                let v = x[j]
                if filled < k ? !v.isNaN : v > vals[k - 1] { insert(v, Int32(truncatingIfNeeded: firstId + j)) }
            }
            i += w
        }
    }

    var logsumexp: Float {
        if maximum == -.infinity || maximum == .infinity || maximum.isNaN { return maximum }
        return maximum + Float(log(sum))
    }
}


/// Per-row top-K and logsumexp of full logits.
///
/// logits (rows, V) -> topIds (rows, k), topLogits (rows, k) in descending order, ties broken
/// by lower id; logsumexp (rows) over the full row. NaN logits never enter the top-K.
/// Results are bit-identical to ``lmHeadTopK(hidden:rows:weight:k:scale:topIds:topLogits:logsumexp:targets:targetLogits:pool:)``
/// on the same logits. k must be <= V.
///
/// API status: final.
public func topKLogsumexp(logits: UnsafePointer<Float>, rows: Int, vocab V: Int, k: Int,
                          topIds: UnsafeMutablePointer<Int32>, topLogits: UnsafeMutablePointer<Float>,
                          logsumexp lse: UnsafeMutablePointer<Float>, pool: ThreadPool) {
    precondition(k >= 0 && k <= V, "topKLogsumexp: k=\(k) outside 0...\(V)")
    pool.parallelFor(rows) { rs in
        for r in rs {
            // Safe because r < rows keeps every access inside row r of each buffer.
            var acc = TopKAccumulator(vals: topLogits + r * k, ids: topIds + r * k, k: k)
            // Same vocabulary tiles as lmHeadTopK, so both paths round identically.
            var n0 = 0
            while n0 < V {
                let w = min(lmHeadTileV, V - n0)
                acc.consume(logits + r * V + n0, w, firstId: n0)
                n0 += w
            }
            lse[r] = acc.logsumexp
        }
    }
}
