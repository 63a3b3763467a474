#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Keys per block of the online softmax (one SIMD16 of scores).
@usableFromInline let attentionKeyBlock = 16

/// Causal self-attention with grouped-query heads, computed blockwise with an online softmax
/// (FlashAttention-style): no (T, T) score matrix is ever stored.
///
/// For batch b, query head h (kv head g = h / (H / KH), as transformers' `repeat_kv`) and
/// position t: out[b,t,h] = Σ_{j<=t} softmax_j(scale · q[b,t,h]·k[b,j,g]) · v[b,j,g].
///
/// q (B, T, H, D) with row stride `queryStride`; k, v (B, T, KH, D) with row strides
/// `keyStride`, `valueStride` -> out (B, T, H, D) with row stride `outStride`. A stride is the
/// number of floats between consecutive (b, t) rows; nil means dense (H·D or KH·D), and larger
/// strides let q, k and v live inside one fused QKV buffer. lse (B, H, T) receives the
/// per-row logsumexp of the scaled scores when non-nil (for the backward pass).
///
/// - Parameters:
///   - scale: multiplies q·k; usually 1/√D.
/// - Complexity: 2·B·H·T²·D flops (causal half of the full product, twice); memory O(D) per
///   row beyond inputs and output, plus a (D, T) copy of one key head per task.
///
/// API status: final.
public func attentionForward(out: UnsafeMutablePointer<Float>, outStride: Int? = nil,
                             logsumexp lse: UnsafeMutablePointer<Float>? = nil,
                             query: UnsafePointer<Float>, queryStride: Int? = nil,
                             key: UnsafePointer<Float>, keyStride: Int? = nil,
                             value: UnsafePointer<Float>, valueStride: Int? = nil,
                             batch B: Int, length T: Int, heads H: Int, kvHeads KH: Int, headDim D: Int,
                             scale: Float, pool: ThreadPool) {
    precondition(KH > 0 && H % KH == 0, "attentionForward: \(H) heads not a multiple of \(KH) kv heads")
    let ldq = queryStride ?? H * D, ldo = outStride ?? H * D
    let ldk = keyStride ?? KH * D, ldv = valueStride ?? KH * D
    precondition(ldq >= H * D && ldo >= H * D && ldk >= KH * D && ldv >= KH * D, "attentionForward: stride too small")
    guard B > 0, T > 0, H > 0, D > 0 else { return }
    let group = H / KH
    let KB = attentionKeyBlock
    let Tp = (T + KB - 1) / KB * KB
    pool.parallelFor(B * H) { tasks in
        // kt (D, Tp): one key head transposed so 16 scores come from D broadcast FMAs.
        // acc (D): the running weighted sum of values. Safe because both are bound to Float
        // and freed when the task ends.
        let kt = UnsafeMutablePointer<Float>.allocate(capacity: D * Tp)
        let acc = UnsafeMutablePointer<Float>.allocate(capacity: D)
        defer { kt.deallocate(); acc.deallocate() }
        for task in tasks {
            let b = task / H, h = task % H, g = h / group
            for j in 0..<Tp {
                // Safe because j < T rows exist in k for batch b; rows past T are zero padding.
                if j < T {
                    let kr = key + (b * T + j) * ldk + g * D
                    for d in 0..<D { kt[d * Tp + j] = kr[d] }
                } else {
                    for d in 0..<D { kt[d * Tp + j] = 0 }
                }
            }
            let ktRaw = UnsafeRawPointer(kt)
            for t in 0..<T {
                // Safe because (b, t) < (B, T) and h·D + D <= stride keep q and out rows in bounds.
                let q = query + (b * T + t) * ldq + h * D
                let o = out + (b * T + t) * ldo + h * D
                for d in 0..<D { acc[d] = 0 }
                var m = -Float.infinity, l: Float = 0
                var j0 = 0
                while j0 <= t {
                    var s = SIMD16<Float>()
                    for d in 0..<D {
                        // Safe because j0 + 16 <= Tp columns exist in row d of kt.
                        s = s.addingProduct(SIMD16<Float>(repeating: q[d]),
                                            ktRaw.loadUnaligned(fromByteOffset: (d * Tp + j0) * 4, as: SIMD16<Float>.self))
                    }
                    s *= scale
                    let valid = min(KB, t + 1 - j0)
                    if valid < KB {
                        for lane in valid..<KB { s[lane] = -.infinity }
                    }
                    let mNew = max(m, s.max())
                    let correction = m == -.infinity ? 0 : scalarExp(m - mNew)
                    let p = simdExp(s - SIMD16<Float>(repeating: mNew))
                    l = l * correction + p.sum()
                    if correction != 1 { for d in 0..<D { acc[d] *= correction } }
                    for lane in 0..<valid {
                        // Safe because key position j0+lane <= t < T lies inside v.
                        let vr = value + (b * T + j0 + lane) * ldv + g * D
                        let w = p[lane]
                        axpy(acc, vr, w, D)
                    }
                    m = mNew
                    j0 += KB
                }
                let inv = 1 / l
                for d in 0..<D { o[d] = acc[d] * inv }
                lse?[(b * H + h) * T + t] = m + logf(l)
            }
        }
    }
}

/// y (n) += a · x (n), 16 lanes at a time.
@inline(__always)
func axpy(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ a: Float, _ n: Int) {
    let ry = UnsafeMutableRawPointer(y), rx = UnsafeRawPointer(x)
    let av = SIMD16<Float>(repeating: a)
    var i = 0
    while i + 16 <= n {
        // Safe because i+16 <= n elements exist in both.
        let v = ry.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
            .addingProduct(av, rx.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self))
        ry.storeBytes(of: v, toByteOffset: i * 4, as: SIMD16<Float>.self)
        i += 16
    }
    while i < n { y[i] = y[i].addingProduct(a, x[i]); i += 1 }
}
