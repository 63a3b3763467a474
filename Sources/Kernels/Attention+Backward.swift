#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Attention backward, beside `attentionForward` in Attention.swift.

/// Causal grouped-query attention backward, recomputing the probabilities from the saved
/// per-row logsumexp (FlashAttention-style): no (T, T) matrix is stored.
///
/// With s_tj = scale·q_t·k_j, p_tj = exp(s_tj − lse_t) for j <= t and Δ_t = dout_t·out_t:
/// dv_j = Σ_t p_tj·dout_t, ds_tj = p_tj·(dout_t·v_j − Δ_t), dq_t = scale·Σ_j ds_tj·k_j,
/// dk_j = scale·Σ_t ds_tj·q_t, summed over the query heads that share kv head g.
///
/// q, dq (B, T, H, D) with row stride `queryStride`; k, dk (B, T, KH, D) with `keyStride`;
/// v, dv (B, T, KH, D) with `valueStride`; out, dout (B, T, H, D) with `outStride`;
/// lse (B, H, T) from `attentionForward` -> dq, dk, dv overwritten (only their head slices;
/// other columns of a fused buffer are left alone). Strides mean what they mean in the
/// forward; nil is dense.
///
/// One task per (b, kv head): it owns dk, dv of that head and dq of its query heads, so no two
/// threads write one element and the result does not depend on the thread count.
///
/// - Complexity: about 4·B·H·T²·D flops (twice the forward); O(1) extra memory.
///
/// API status: provisional (trainer).
public func attentionBackward(dQuery: UnsafeMutablePointer<Float>, dKey: UnsafeMutablePointer<Float>,
                              dValue: UnsafeMutablePointer<Float>, dOut: UnsafePointer<Float>,
                              out: UnsafePointer<Float>, outStride: Int? = nil,
                              logsumexp lse: UnsafePointer<Float>,
                              query: UnsafePointer<Float>, queryStride: Int? = nil,
                              key: UnsafePointer<Float>, keyStride: Int? = nil,
                              value: UnsafePointer<Float>, valueStride: Int? = nil,
                              batch B: Int, length T: Int, heads H: Int, kvHeads KH: Int, headDim D: Int,
                              scale: Float, pool: ThreadPool) {
    precondition(KH > 0 && H % KH == 0, "attentionBackward: \(H) heads not a multiple of \(KH) kv heads")
    let ldq = queryStride ?? H * D, ldo = outStride ?? H * D
    let ldk = keyStride ?? KH * D, ldv = valueStride ?? KH * D
    precondition(ldq >= H * D && ldo >= H * D && ldk >= KH * D && ldv >= KH * D, "attentionBackward: stride too small")
    guard B > 0, T > 0, H > 0, D > 0 else { return }
    let group = H / KH
    pool.parallelFor(B * KH) { tasks in
        for task in tasks {
            let b = task / KH, g = task % KH
            for t in 0..<T {
                // Safe because (b, t) < (B, T) and g·D + D <= the kv strides.
                let dk = dKey + (b * T + t) * ldk + g * D, dv = dValue + (b * T + t) * ldv + g * D
                for d in 0..<D { dk[d] = 0; dv[d] = 0 }
            }
            for h in (g * group)..<((g + 1) * group) {
                for t in 0..<T {
                    // Safe because (b, t) < (B, T) and h·D + D <= the query/out strides.
                    let q = query + (b * T + t) * ldq + h * D, dq = dQuery + (b * T + t) * ldq + h * D
                    let o = out + (b * T + t) * ldo + h * D, dout = dOut + (b * T + t) * ldo + h * D
                    let l = lse[(b * H + h) * T + t]
                    let delta = dot(dout, o, D)
                    for d in 0..<D { dq[d] = 0 }
                    for j in 0...t {
                        // Safe because j <= t < T rows exist in k, v, dk, dv.
                        let kj = key + (b * T + j) * ldk + g * D, vj = value + (b * T + j) * ldv + g * D
                        let dk = dKey + (b * T + j) * ldk + g * D, dv = dValue + (b * T + j) * ldv + g * D
                        let p = expf(scale * dot(q, kj, D) - l)
                        axpy(dv, dout, p, D)
                        let ds = p * (dot(dout, vj, D) - delta) * scale
                        axpy(dq, kj, ds, D)
                        axpy(dk, q, ds, D)
                    }
                }
            }
        }
    }
}

/// x (n) · y (n), 16 lanes at a time.
@inline(__always)
func dot(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ n: Int) -> Float {
    let rx = UnsafeRawPointer(x), ry = UnsafeRawPointer(y)
    var acc = SIMD16<Float>()
    var i = 0
    while i + 16 <= n {
        // Safe because i+16 <= n elements exist in both.
        acc = acc.addingProduct(rx.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self),
                                ry.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self))
        i += 16
    }
    var s = acc.sum()
    while i < n { s += x[i] * y[i]; i += 1 }
    return s
}
