#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Attention backward, beside `attentionForward` in Attention.swift.

/// Query rows per block of the attention backward: one register tile (eight rows share every
/// key and value load, and every dk, dv row is loaded and stored once per eight query rows).
@usableFromInline let attentionBackwardRows = 8

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
/// threads write one element and the result does not depend on the thread count. Inside a
/// task, blocks of eight query rows run against all their visible keys with the scores and
/// dout·v products vectorised over 16 keys (keys and values held transposed) and the dq, dk,
/// dv products over 16 channels; every sum runs in a fixed order.
///
/// - Complexity: about 5·B·H·T²·D flops; per thread O(T·D) scratch floats.
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
    let g = AttentionGeometry(T: T, D: D, H: H, group: H / KH, ldq: ldq, ldk: ldk, ldv: ldv, ldo: ldo, scale: scale)
    pool.parallelFor(B * KH) { tasks in
        let sc = AttentionBackwardScratch(g)
        defer { sc.deallocate() }
        for task in tasks {
            let b = task / KH, kv = task % KH
            // Safe because batch b < B and kv head < KH address rows inside k, v, dk and dv.
            sc.load(key: key + b * T * ldk + kv * D, value: value + b * T * ldv + kv * D, g)
            for h in (kv * g.group)..<((kv + 1) * g.group) {
                var t0 = 0
                while t0 < T {
                    // Safe because (b, h) address the head's rows and lse[b, h, ·].
                    attentionBackwardBlock(dQuery: dQuery + b * T * ldq + h * D, dOut: dOut + b * T * ldo + h * D,
                                           out: out + b * T * ldo + h * D, lse: lse + (b * H + h) * T,
                                           query: query + b * T * ldq + h * D, t0: t0, g, sc)
                    t0 += attentionBackwardRows
                }
            }
            let Dp = g.Dp
            for j in 0..<T {
                // Safe because j < T rows and D columns of the head slice exist in dk and dv.
                (dKey + (b * T + j) * ldk + kv * D).update(from: sc.dk + j * Dp, count: D)
                (dValue + (b * T + j) * ldv + kv * D).update(from: sc.dv + j * Dp, count: D)
            }
        }
    }
}

/// Per-thread buffers of the attention backward for one (batch, kv head).
struct AttentionBackwardScratch {
    /// kt, vt (D, Tp): the head's keys and values transposed, zero past T.
    let kt: UnsafeMutablePointer<Float>
    let vt: UnsafeMutablePointer<Float>
    /// kp (Tp, Dp): the keys row by row, zero-padded; dk, dv (Tp, Dp): gradient accumulators.
    let kp: UnsafeMutablePointer<Float>
    let dk: UnsafeMutablePointer<Float>
    let dv: UnsafeMutablePointer<Float>
    /// q, dout (R, Dp): the block's query and output-gradient rows, zero-padded (R = 8).
    let q: UnsafeMutablePointer<Float>
    let dout: UnsafeMutablePointer<Float>
    /// p, ds (R, Tp): the block's probabilities and score gradients (zero where masked).
    let p: UnsafeMutablePointer<Float>
    let ds: UnsafeMutablePointer<Float>

    init(_ g: AttentionGeometry) {
        let R = attentionBackwardRows
        func alloc(_ n: Int) -> UnsafeMutablePointer<Float> {
            // Safe because each buffer is bound to Float, owned here and freed in deallocate().
            let p = UnsafeMutableRawPointer.allocate(byteCount: max(1, n) * 4, alignment: 64)
                .bindMemory(to: Float.self, capacity: max(1, n))
            p.initialize(repeating: 0, count: max(1, n))
            return p
        }
        kt = alloc(g.D * g.Tp); vt = alloc(g.D * g.Tp)
        kp = alloc(g.Tp * g.Dp); dk = alloc(g.Tp * g.Dp); dv = alloc(g.Tp * g.Dp)
        q = alloc(R * g.Dp); dout = alloc(R * g.Dp); p = alloc(R * g.Tp); ds = alloc(R * g.Tp)
    }

    func deallocate() { [kt, vt, kp, dk, dv, q, dout, p, ds].forEach { $0.deallocate() } }

    /// Copies one kv head (key, value (T, D) with the geometry's strides) and zeroes dk, dv.
    func load(key: UnsafePointer<Float>, value: UnsafePointer<Float>, _ g: AttentionGeometry) {
        let T = g.T, D = g.D, Tp = g.Tp, Dp = g.Dp
        transposeRows(key, g.ldk, rows: T, columns: D, into: kt, Tp)
        transposeRows(value, g.ldv, rows: T, columns: D, into: vt, Tp)
        for j in 0..<T {
            // Safe because j < T and d < D stay inside the key rows.
            (kp + j * Dp).update(from: key + j * g.ldk, count: D)
        }
        // Rows and columns past T and D stay zero from initialisation.
        dk.update(repeating: 0, count: Tp * Dp)
        dv.update(repeating: 0, count: Tp * Dp)
    }
}

/// Eight query rows t0..<t0+8 of one head against keys 0...t0+7: adds to the scratch dk, dv
/// and writes dq. Row pointers are at row 0 of this (batch, head); lse at (batch, head, 0).
/// Keys a row cannot see get p = ds = 0, so every sum matches a row-by-row evaluation.
@inline(__always)
func attentionBackwardBlock(dQuery: UnsafeMutablePointer<Float>, dOut: UnsafePointer<Float>,
                            out: UnsafePointer<Float>, lse: UnsafePointer<Float>,
                            query: UnsafePointer<Float>, t0: Int, _ g: AttentionGeometry,
                            _ sc: AttentionBackwardScratch) {
    typealias F = SIMD16<Float>
    let D = g.D, Dp = g.Dp, Tp = g.Tp
    let rows = min(attentionBackwardRows, g.T - t0)
    let keyEnd = t0 + rows  // keys 0..<keyEnd are visible to some row of the block
    // Per row: lse (+∞ for padding rows, so their probabilities are e^−∞ = 0) and Δ = dout·out.
    var l = SIMD8<Float>(repeating: .infinity), delta = SIMD8<Float>()
    for i in 0..<attentionBackwardRows {
        let q = sc.q + i * Dp, o = sc.dout + i * Dp
        if i < rows {
            // Safe because t0+i < T addresses rows of q, out, dout and lse.
            q.update(from: query + (t0 + i) * g.ldq, count: D)
            o.update(from: dOut + (t0 + i) * g.ldo, count: D)
            l[i] = lse[t0 + i]
            delta[i] = dot(o, out + (t0 + i) * g.ldo, D)
        } else {
            q.update(repeating: 0, count: D)
            o.update(repeating: 0, count: D)
        }
    }
    let scale = F(repeating: g.scale)
    // Key indices as floats (exact below 2^24): a float compare stays one vector instruction,
    // where an Int32 SIMD compare became a 16-step scalar loop.
    let lane = F(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
    let q0 = sc.q, q1 = sc.q + Dp, q2 = sc.q + 2 * Dp, q3 = sc.q + 3 * Dp
    let q4 = sc.q + 4 * Dp, q5 = sc.q + 5 * Dp, q6 = sc.q + 6 * Dp, q7 = sc.q + 7 * Dp
    let o0 = sc.dout, o1 = sc.dout + Dp, o2 = sc.dout + 2 * Dp, o3 = sc.dout + 3 * Dp
    let o4 = sc.dout + 4 * Dp, o5 = sc.dout + 5 * Dp, o6 = sc.dout + 6 * Dp, o7 = sc.dout + 7 * Dp
    // p and ds for 16 keys at a time: s = q·k and e = dout·v with kt, vt columns as vectors.
    var j0 = 0
    while j0 < keyEnd {
        var s0 = F(), s1 = F(), s2 = F(), s3 = F(), e0 = F(), e1 = F(), e2 = F(), e3 = F()
        var s4 = F(), s5 = F(), s6 = F(), s7 = F(), e4 = F(), e5 = F(), e6 = F(), e7 = F()
        // Safe because j0+16 <= Tp columns exist in kt and vt, and d < D rows.
        var kr = UnsafeRawPointer(sc.kt + j0), vr = UnsafeRawPointer(sc.vt + j0)
        for d in 0..<D {
            let k = kr.loadUnaligned(as: F.self), v = vr.loadUnaligned(as: F.self)
            s0 = s0.addingProduct(F(repeating: q0[d]), k); e0 = e0.addingProduct(F(repeating: o0[d]), v)
            s1 = s1.addingProduct(F(repeating: q1[d]), k); e1 = e1.addingProduct(F(repeating: o1[d]), v)
            s2 = s2.addingProduct(F(repeating: q2[d]), k); e2 = e2.addingProduct(F(repeating: o2[d]), v)
            s3 = s3.addingProduct(F(repeating: q3[d]), k); e3 = e3.addingProduct(F(repeating: o3[d]), v)
            s4 = s4.addingProduct(F(repeating: q4[d]), k); e4 = e4.addingProduct(F(repeating: o4[d]), v)
            s5 = s5.addingProduct(F(repeating: q5[d]), k); e5 = e5.addingProduct(F(repeating: o5[d]), v)
            s6 = s6.addingProduct(F(repeating: q6[d]), k); e6 = e6.addingProduct(F(repeating: o6[d]), v)
            s7 = s7.addingProduct(F(repeating: q7[d]), k); e7 = e7.addingProduct(F(repeating: o7[d]), v)
            kr += Tp * 4; vr += Tp * 4
        }
        let j = F(repeating: Float(j0)) + lane
        @inline(__always) func finish(_ i: Int, _ s: F, _ e: F) {
            // Keys after row t0+i are masked to probability 0 (and so gradient 0); only the
            // diagonal block has any.
            var p = simdExp(s * scale - F(repeating: l[i]))
            if j0 + 15 > t0 + i { p = p.replacing(with: 0, where: j .> F(repeating: Float(t0 + i))) }
            let ds = p * (e - F(repeating: delta[i])) * scale
            // Safe because i < 8 rows and j0+16 <= Tp columns exist in p and ds.
            UnsafeMutableRawPointer(sc.p + i * Tp + j0).storeBytes(of: p, as: F.self)
            UnsafeMutableRawPointer(sc.ds + i * Tp + j0).storeBytes(of: ds, as: F.self)
        }
        finish(0, s0, e0); finish(1, s1, e1); finish(2, s2, e2); finish(3, s3, e3)
        finish(4, s4, e4); finish(5, s5, e5); finish(6, s6, e6); finish(7, s7, e7)
        j0 += 16
    }
    let p0 = sc.p, p1 = sc.p + Tp, p2 = sc.p + 2 * Tp, p3 = sc.p + 3 * Tp
    let p4 = sc.p + 4 * Tp, p5 = sc.p + 5 * Tp, p6 = sc.p + 6 * Tp, p7 = sc.p + 7 * Tp
    let d0 = sc.ds, d1 = sc.ds + Tp, d2 = sc.ds + 2 * Tp, d3 = sc.ds + 3 * Tp
    let d4 = sc.ds + 4 * Tp, d5 = sc.ds + 5 * Tp, d6 = sc.ds + 6 * Tp, d7 = sc.ds + 7 * Tp
    var c = 0
    while c < Dp {
        // dq_t = Σ_j ds_tj·k_j for 16 channels of the eight rows.
        var a0 = F(), a1 = F(), a2 = F(), a3 = F(), a4 = F(), a5 = F(), a6 = F(), a7 = F()
        for j in 0..<keyEnd {
            // Safe because j < T rows and c+16 <= Dp columns exist in kp.
            let k = UnsafeRawPointer(sc.kp + j * Dp + c).loadUnaligned(as: F.self)
            a0 = a0.addingProduct(F(repeating: d0[j]), k); a1 = a1.addingProduct(F(repeating: d1[j]), k)
            a2 = a2.addingProduct(F(repeating: d2[j]), k); a3 = a3.addingProduct(F(repeating: d3[j]), k)
            a4 = a4.addingProduct(F(repeating: d4[j]), k); a5 = a5.addingProduct(F(repeating: d5[j]), k)
            a6 = a6.addingProduct(F(repeating: d6[j]), k); a7 = a7.addingProduct(F(repeating: d7[j]), k)
        }
        let width = min(16, D - c)
        func store(_ i: Int, _ a: F) {
            guard i < rows, width > 0 else { return }  // padding channels past D are not stored
            // Safe because t0+i < T and c+width <= D stay inside the head slice of dq.
            let dq = dQuery + (t0 + i) * g.ldq + c
            if width == 16 { UnsafeMutableRawPointer(dq).storeBytes(of: a, as: F.self) } else {
                for x in 0..<width { dq[x] = a[x] }
            }
        }
        store(0, a0); store(1, a1); store(2, a2); store(3, a3)
        store(4, a4); store(5, a5); store(6, a6); store(7, a7)
        // dk_j += Σ_t ds_tj·q_t and dv_j += Σ_t p_tj·dout_t, rows in order.
        // Safe because the eight rows hold Dp floats each and c+16 <= Dp.
        func row(_ x: UnsafeMutablePointer<Float>) -> F { UnsafeRawPointer(x + c).loadUnaligned(as: F.self) }
        let qa = row(q0), qb = row(q1), qc = row(q2), qd = row(q3), qe = row(q4), qf = row(q5), qg = row(q6), qh = row(q7)
        let oa = row(o0), ob = row(o1), oc = row(o2), od = row(o3), oe = row(o4), of = row(o5), og = row(o6), oh = row(o7)
        for j in 0..<keyEnd {
            // Safe because j < T rows and c+16 <= Dp columns exist in dk and dv.
            let dk = UnsafeMutableRawPointer(sc.dk + j * Dp + c), dv = UnsafeMutableRawPointer(sc.dv + j * Dp + c)
            var k = dk.loadUnaligned(as: F.self)
            k = k.addingProduct(F(repeating: d0[j]), qa); k = k.addingProduct(F(repeating: d1[j]), qb)
            k = k.addingProduct(F(repeating: d2[j]), qc); k = k.addingProduct(F(repeating: d3[j]), qd)
            k = k.addingProduct(F(repeating: d4[j]), qe); k = k.addingProduct(F(repeating: d5[j]), qf)
            k = k.addingProduct(F(repeating: d6[j]), qg); k = k.addingProduct(F(repeating: d7[j]), qh)
            dk.storeBytes(of: k, as: F.self)
            var v = dv.loadUnaligned(as: F.self)
            v = v.addingProduct(F(repeating: p0[j]), oa); v = v.addingProduct(F(repeating: p1[j]), ob)
            v = v.addingProduct(F(repeating: p2[j]), oc); v = v.addingProduct(F(repeating: p3[j]), od)
            v = v.addingProduct(F(repeating: p4[j]), oe); v = v.addingProduct(F(repeating: p5[j]), of)
            v = v.addingProduct(F(repeating: p6[j]), og); v = v.addingProduct(F(repeating: p7[j]), oh)
            dv.storeBytes(of: v, as: F.self)
        }
        c += 16
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
