#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Softmax and logsumexp (the streaming top-K selection is in TopK.swift).

/// Largest element of x (n >= 1), 16 lanes at a time; NaN elements are skipped in vectors.
@inline(__always)
func rowMax(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
    // Four independent accumulators: one compare+blend chain would wait on its own latency.
    var m0 = SIMD16<Float>(repeating: -.infinity), m1 = m0, m2 = m0, m3 = m0
    let raw = UnsafeRawPointer(x)
    var i = 0
    while i + 64 <= n {
        // Safe because i+64 <= n elements exist. (A compare+blend: `pointwiseMax` goes lane
        // by lane for its NaN rules.)
        let v0 = raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
        let v1 = raw.loadUnaligned(fromByteOffset: i * 4 + 64, as: SIMD16<Float>.self)
        let v2 = raw.loadUnaligned(fromByteOffset: i * 4 + 128, as: SIMD16<Float>.self)
        let v3 = raw.loadUnaligned(fromByteOffset: i * 4 + 192, as: SIMD16<Float>.self)
        m0 = m0.replacing(with: v0, where: v0 .> m0); m1 = m1.replacing(with: v1, where: v1 .> m1)
        m2 = m2.replacing(with: v2, where: v2 .> m2); m3 = m3.replacing(with: v3, where: v3 .> m3)
        i += 64
    }
    while i + 16 <= n {
        // Safe because i+16 <= n elements exist.
        let v = raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
        m0 = m0.replacing(with: v, where: v .> m0)
        i += 16
    }
    m0 = m0.replacing(with: m1, where: m1 .> m0)
    m2 = m2.replacing(with: m3, where: m3 .> m2)
    m0 = m0.replacing(with: m2, where: m2 .> m0)
    var r = horizontalMax(m0)
    while i < n { r = Swift.max(r, x[i]); i += 1 }
    return r
}

/// Largest lane of a vector without NaN lanes, by halving (the generic `max()` is a call).
@inline(__always)
func horizontalMax(_ v: SIMD16<Float>) -> Float {
    let a8 = v.lowHalf.replacing(with: v.highHalf, where: v.highHalf .> v.lowHalf)
    let a4 = a8.lowHalf.replacing(with: a8.highHalf, where: a8.highHalf .> a8.lowHalf)
    let a2 = a4.lowHalf.replacing(with: a4.highHalf, where: a4.highHalf .> a4.lowHalf)
    return a2[1] > a2[0] ? a2[1] : a2[0]
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
