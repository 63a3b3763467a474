#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Query rows per block of the blockwise attention (a multiple of the 4-row register tile).
@usableFromInline let attentionQueryBlock = 32
/// Keys per block of the online softmax (a multiple of the 32-key register tile): the running
/// maximum and sum are rescaled once per block, so horizontal reductions stay rare.
@usableFromInline let attentionKeyBlock = 256

/// Causal self-attention with grouped-query heads, computed blockwise with an online softmax
/// (FlashAttention-style): scores exist only for one block of 32 queries × 256 keys at a
/// time; no (T, T) buffer.
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
/// - Complexity: 2·B·H·T²·D flops (the causal half of QKᵀ and of PV); per thread
///   O(T·D + 32·256) scratch floats.
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
    let QB = attentionQueryBlock
    let blocksPerHead = (T + QB - 1) / QB
    let items = B * H * blocksPerHead
    // Causal cost of query block qb is about qb+1 key spans: split items into contiguous
    // ranges of equal cost (the split never changes results, only who computes them).
    let headCost = blocksPerHead * (blocksPerHead + 1) / 2
    func costBefore(_ item: Int) -> Int {
        let head = item / blocksPerHead, qb = item % blocksPerHead
        return head * headCost + qb * (qb + 1) / 2
    }
    let total = costBefore(items)
    let parts = min(pool.chunkCount, items)
    let geometry = AttentionGeometry(T: T, D: D, H: H, group: H / KH, ldq: ldq, ldk: ldk, ldv: ldv, ldo: ldo, scale: scale)
    pool.parallelFor(parts) { chunks in
        for chunk in chunks {
            // First item whose cost prefix reaches chunk/parts of the total, by binary search.
            func boundary(_ c: Int) -> Int {
                let target = total * c / parts
                var lo = 0, hi = items
                while lo < hi { let mid = (lo + hi) / 2; if costBefore(mid) < target { lo = mid + 1 } else { hi = mid } }
                return lo
            }
            let range = boundary(chunk)..<boundary(chunk + 1)
            if range.isEmpty { continue }
            var scratch = AttentionScratch(geometry)
            defer { scratch.deallocate() }
            var loaded = -1
            for item in range {
                let head = item / blocksPerHead, qb = item % blocksPerHead
                let b = head / H, h = head % H
                let kvHead = b * KH + h / geometry.group
                if kvHead != loaded {
                    // Safe because batch b < B and kv head < KH address rows inside k and v.
                    scratch.load(key: key + b * T * ldk + (h / geometry.group) * D,
                                 value: value + b * T * ldv + (h / geometry.group) * D, geometry)
                    loaded = kvHead
                }
                // Safe because (b, t) < (B, T) and h·D + D <= stride keep q and out rows in bounds.
                attentionBlock(query: query + b * T * ldq + h * D, out: out + b * T * ldo + h * D,
                               lse: lse.map { $0 + (b * H + h) * T }, t0: qb * QB, geometry, &scratch)
            }
        }
    }
}

/// Shapes and strides of one attention call.
@usableFromInline struct AttentionGeometry {
    let T: Int, D: Int, H: Int, group: Int
    let ldq: Int, ldk: Int, ldv: Int, ldo: Int
    let scale: Float
    /// Keys padded to the 32-key tile; head dimension padded to two SIMD16 vectors.
    var Tp: Int { (T + 31) / 32 * 32 }
    var Dp: Int { (D + 31) / 32 * 32 }
    init(T: Int, D: Int, H: Int, group: Int, ldq: Int, ldk: Int, ldv: Int, ldo: Int, scale: Float) {
        self.T = T; self.D = D; self.H = H; self.group = group
        self.ldq = ldq; self.ldk = ldk; self.ldv = ldv; self.ldo = ldo; self.scale = scale
    }
}

/// Per-thread buffers of the blockwise attention.
@usableFromInline struct AttentionScratch {
    /// kt (D, Tp): one key head transposed, zero past T.
    let kt: UnsafeMutablePointer<Float>
    /// vp (Tp, Dp): one value head, zero-padded to Dp columns and Tp rows.
    let vp: UnsafeMutablePointer<Float>
    /// q (QB, D): the query block, zero rows past T.
    let q: UnsafeMutablePointer<Float>
    /// s (QB, KB): scores, then probabilities, of one key block.
    let s: UnsafeMutablePointer<Float>
    /// o (QB, Dp): unnormalised output accumulators.
    let o: UnsafeMutablePointer<Float>
    /// Running maximum and sum per query row (QB each).
    let m: UnsafeMutablePointer<Float>
    let l: UnsafeMutablePointer<Float>

    init(_ g: AttentionGeometry) {
        let QB = attentionQueryBlock, KB = attentionKeyBlock
        func alloc(_ n: Int) -> UnsafeMutablePointer<Float> {
            // Safe because each buffer is bound to Float, owned here and freed in deallocate().
            let p = UnsafeMutableRawPointer.allocate(byteCount: max(1, n) * 4, alignment: 64).bindMemory(to: Float.self, capacity: max(1, n))
            p.initialize(repeating: 0, count: max(1, n))
            return p
        }
        kt = alloc(g.D * g.Tp); vp = alloc(g.Tp * g.Dp); q = alloc(QB * g.D)
        s = alloc(QB * KB); o = alloc(QB * g.Dp); m = alloc(QB); l = alloc(QB)
    }

    func deallocate() { [kt, vp, q, s, o, m, l].forEach { $0.deallocate() } }

    /// Copies one kv head: key (T, D) row stride ldk -> kt; value (T, D) row stride ldv -> vp.
    func load(key: UnsafePointer<Float>, value: UnsafePointer<Float>, _ g: AttentionGeometry) {
        let T = g.T, D = g.D, Tp = g.Tp, Dp = g.Dp
        transposeRows(key, g.ldk, rows: T, columns: D, into: kt, Tp)
        for j in 0..<T {
            // Safe because j < T and d < D stay inside the value rows.
            (vp + j * Dp).update(from: value + j * g.ldv, count: D)
        }
        // Rows and columns past T and D stay zero from initialisation.
    }
}

/// dst[c·ldd + r] = src[r·lds + c] for r < rows, c < columns: src (rows, columns) with row
/// stride lds -> dst (columns, rows) with row stride ldd. In blocks of 16 source rows, so each
/// destination cache line is written whole while 16 source rows stream past, instead of one
/// float per line with the lines evicted before they fill.
@inline(__always)
func transposeRows(_ src: UnsafePointer<Float>, _ lds: Int, rows: Int, columns: Int,
                   into dst: UnsafeMutablePointer<Float>, _ ldd: Int) {
    var r0 = 0
    while r0 < rows {
        let r1 = min(rows, r0 + 16)
        for c in 0..<columns {
            // Safe because r < rows and c < columns lie inside both matrices.
            let out = dst + c * ldd
            for r in r0..<r1 { out[r] = src[r * lds + c] }
        }
        r0 = r1
    }
}

/// One query block of 32 rows starting at t0 against all keys 0...t0+31 (causal).
/// query, out point at row 0 of this (batch, head); lse at (batch, head, 0).
@inline(__always)
func attentionBlock(query: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, lse: UnsafeMutablePointer<Float>?,
                    t0: Int, _ g: AttentionGeometry, _ sc: inout AttentionScratch) {
    let QB = attentionQueryBlock, KB = attentionKeyBlock
    let D = g.D, Dp = g.Dp
    let rows = min(QB, g.T - t0)
    let keyEnd = t0 + rows  // keys 0..<keyEnd are visible to some row of the block
    for i in 0..<QB {
        // Safe because rows past `rows` are zeroed rather than read.
        let dst = sc.q + i * D
        if i < rows { dst.update(from: query + (t0 + i) * g.ldq, count: D) } else { dst.update(repeating: 0, count: D) }
        sc.m[i] = -.infinity
        sc.l[i] = 0
    }
    sc.o.update(repeating: 0, count: QB * Dp)
    var j0 = 0
    while j0 < keyEnd {
        let kb = min(KB, keyEnd - j0)
        let kbp = (kb + 31) / 32 * 32
        attentionScores(sc, g, j0: j0, keys: kbp)
        // Online softmax update, one row at a time, vectorised over the key block.
        for i in 0..<rows {
            let t = t0 + i
            let row = sc.s + i * KB
            let visible = min(kbp, max(0, t + 1 - j0))  // keys j0..<j0+visible are <= t
            if visible == 0 {
                // No visible key in this block (cannot happen with the current block sizes,
                // kept so a change of sizes cannot feed -inf into the value product).
                row.update(repeating: 0, count: kbp)
                continue
            }
            for j in visible..<kbp { row[j] = -.infinity }
            let mNew = max(sc.m[i], rowMax(row, visible))
            let correction = sc.m[i] == -.infinity ? 0 : expf(sc.m[i] - mNew)
            mapSIMD(row, row, kbp) { simdExp($0 - mNew) }
            let (p, _) = sumAndSquares(row, visible)
            sc.l[i] = sc.l[i] * correction + p
            sc.m[i] = mNew
            if correction != 1 {
                let o = sc.o + i * Dp
                mapSIMD(o, o, Dp) { $0 * correction }
            }
        }
        for i in rows..<QB {
            // Padding rows contribute nothing: zero probabilities.
            (sc.s + i * KB).update(repeating: 0, count: kbp)
        }
        attentionValues(sc, g, j0: j0, keys: kbp)
        j0 += kb
    }
    for i in 0..<rows {
        // Safe because t0+i < T addresses a row of out and of lse.
        let inv = 1 / sc.l[i]
        let o = sc.o + i * Dp, dst = out + (t0 + i) * g.ldo
        for d in 0..<D { dst[d] = o[d] * inv }
        lse?[t0 + i] = sc.m[i] + logf(sc.l[i])
    }
}

/// s (QB, KB)[:, 0..<keys] = scale · q (QB, D) · kt[:, j0..<j0+keys], 4 rows × 32 keys per
/// register tile. keys is a multiple of 32 and j0+keys <= Tp.
@inline(__always)
func attentionScores(_ sc: AttentionScratch, _ g: AttentionGeometry, j0: Int, keys: Int) {
    let QB = attentionQueryBlock, KB = attentionKeyBlock
    let D = g.D, Tp = g.Tp
    let scale = SIMD16<Float>(repeating: g.scale)
    let kt = UnsafeRawPointer(sc.kt)
    var i = 0
    while i < QB {
        let q0 = sc.q + i * D, q1 = q0 + D, q2 = q1 + D, q3 = q2 + D
        var j = 0
        while j < keys {
            var a00 = SIMD16<Float>(), a01 = SIMD16<Float>(), a10 = SIMD16<Float>(), a11 = SIMD16<Float>()
            var a20 = SIMD16<Float>(), a21 = SIMD16<Float>(), a30 = SIMD16<Float>(), a31 = SIMD16<Float>()
            for d in 0..<D {
                // Safe because d < D and j0+j+32 <= Tp stay inside kt; q rows hold D floats.
                let off = (d &* Tp &+ j0 &+ j) &* 4
                let k0 = kt.loadUnaligned(fromByteOffset: off, as: SIMD16<Float>.self)
                let k1 = kt.loadUnaligned(fromByteOffset: off &+ 64, as: SIMD16<Float>.self)
                var x = SIMD16<Float>(repeating: q0[d])
                a00 = a00.addingProduct(x, k0); a01 = a01.addingProduct(x, k1)
                x = SIMD16<Float>(repeating: q1[d])
                a10 = a10.addingProduct(x, k0); a11 = a11.addingProduct(x, k1)
                x = SIMD16<Float>(repeating: q2[d])
                a20 = a20.addingProduct(x, k0); a21 = a21.addingProduct(x, k1)
                x = SIMD16<Float>(repeating: q3[d])
                a30 = a30.addingProduct(x, k0); a31 = a31.addingProduct(x, k1)
            }
            // Safe because rows i..<i+4 < QB and columns j..<j+32 <= KB lie inside s.
            let s = UnsafeMutableRawPointer(sc.s + i * KB + j)
            let ld = KB * 4
            s.storeBytes(of: a00 * scale, as: SIMD16<Float>.self)
            s.storeBytes(of: a01 * scale, toByteOffset: 64, as: SIMD16<Float>.self)
            s.storeBytes(of: a10 * scale, toByteOffset: ld, as: SIMD16<Float>.self)
            s.storeBytes(of: a11 * scale, toByteOffset: ld + 64, as: SIMD16<Float>.self)
            s.storeBytes(of: a20 * scale, toByteOffset: 2 * ld, as: SIMD16<Float>.self)
            s.storeBytes(of: a21 * scale, toByteOffset: 2 * ld + 64, as: SIMD16<Float>.self)
            s.storeBytes(of: a30 * scale, toByteOffset: 3 * ld, as: SIMD16<Float>.self)
            s.storeBytes(of: a31 * scale, toByteOffset: 3 * ld + 64, as: SIMD16<Float>.self)
            j += 32
        }
        i += 4
    }
}

/// o (QB, Dp) += p (QB, KB)[:, 0..<keys] · vp[j0..<j0+keys, :], 4 rows × 32 columns per
/// register tile.
@inline(__always)
func attentionValues(_ sc: AttentionScratch, _ g: AttentionGeometry, j0: Int, keys: Int) {
    let QB = attentionQueryBlock, KB = attentionKeyBlock
    let Dp = g.Dp
    let vp = UnsafeRawPointer(sc.vp)
    var i = 0
    while i < QB {
        let p0 = sc.s + i * KB, p1 = p0 + KB, p2 = p1 + KB, p3 = p2 + KB
        var c = 0
        while c < Dp {
            let o = UnsafeMutableRawPointer(sc.o + i * Dp + c)
            let ld = Dp * 4
            // Safe because rows i..<i+4 < QB and columns c..<c+32 <= Dp lie inside o.
            var a00 = o.loadUnaligned(as: SIMD16<Float>.self)
            var a01 = o.loadUnaligned(fromByteOffset: 64, as: SIMD16<Float>.self)
            var a10 = o.loadUnaligned(fromByteOffset: ld, as: SIMD16<Float>.self)
            var a11 = o.loadUnaligned(fromByteOffset: ld + 64, as: SIMD16<Float>.self)
            var a20 = o.loadUnaligned(fromByteOffset: 2 * ld, as: SIMD16<Float>.self)
            var a21 = o.loadUnaligned(fromByteOffset: 2 * ld + 64, as: SIMD16<Float>.self)
            var a30 = o.loadUnaligned(fromByteOffset: 3 * ld, as: SIMD16<Float>.self)
            var a31 = o.loadUnaligned(fromByteOffset: 3 * ld + 64, as: SIMD16<Float>.self)
            for j in 0..<keys {
                // Safe because j0+j < Tp rows and c+32 <= Dp columns lie inside vp.
                let off = ((j0 &+ j) &* Dp &+ c) &* 4
                let v0 = vp.loadUnaligned(fromByteOffset: off, as: SIMD16<Float>.self)
                let v1 = vp.loadUnaligned(fromByteOffset: off &+ 64, as: SIMD16<Float>.self)
                var x = SIMD16<Float>(repeating: p0[j])
                a00 = a00.addingProduct(x, v0); a01 = a01.addingProduct(x, v1)
                x = SIMD16<Float>(repeating: p1[j])
                a10 = a10.addingProduct(x, v0); a11 = a11.addingProduct(x, v1)
                x = SIMD16<Float>(repeating: p2[j])
                a20 = a20.addingProduct(x, v0); a21 = a21.addingProduct(x, v1)
                x = SIMD16<Float>(repeating: p3[j])
                a30 = a30.addingProduct(x, v0); a31 = a31.addingProduct(x, v1)
            }
            o.storeBytes(of: a00, as: SIMD16<Float>.self)
            o.storeBytes(of: a01, toByteOffset: 64, as: SIMD16<Float>.self)
            o.storeBytes(of: a10, toByteOffset: ld, as: SIMD16<Float>.self)
            o.storeBytes(of: a11, toByteOffset: ld + 64, as: SIMD16<Float>.self)
            o.storeBytes(of: a20, toByteOffset: 2 * ld, as: SIMD16<Float>.self)
            o.storeBytes(of: a21, toByteOffset: 2 * ld + 64, as: SIMD16<Float>.self)
            o.storeBytes(of: a30, toByteOffset: 3 * ld, as: SIMD16<Float>.self)
            o.storeBytes(of: a31, toByteOffset: 3 * ld + 64, as: SIMD16<Float>.self)
            c += 32
        }
        i += 4
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
