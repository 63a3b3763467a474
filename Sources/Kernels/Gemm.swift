// One register-tiled, packed SIMD GEMM for every matrix product in a transformer:
//   forward   y  = x · Wᵀ        x (M,K), W (N,K) -> y (M,N)
//   backward  dX = dY · W        dY (M,N), W (N,K) -> dX (M,K)
//             dW = dYᵀ · X       dY (M,N), X (M,K) -> dW (N,K)
// The right-hand operand is always a PackedMatrix (panels of gemmNR columns of the product,
// each [K][gemmNR]); the left-hand operand is packed per block of rows into micro-panels of
// gemmMR rows ([K][gemmMR]). The micro-kernel keeps a gemmMR x gemmNR tile of C in SIMD
// registers. Every C element is reduced over K in the same order (kc blocks ascending, k
// ascending inside) whatever the threading, so results are identical for any thread count.

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Rows of the register tile (rows of C per micro-kernel call).
@usableFromInline let gemmMR = 6
/// Columns of the register tile: two SIMD16 vectors; also the packed panel width.
@usableFromInline let gemmNR = 32
/// Largest reduction block. Measured on AVX-512 (Sapphire Rapids): long blocks win — C is
/// loaded and stored once per block, and a K x NR slice of B sits comfortably in L2.
@usableFromInline let gemmKCMax = 1024
/// Most rows of A packed per block (B panels stream past them).
@usableFromInline let gemmMC = 516

@usableFromInline typealias F16 = SIMD16<Float>

/// The reduction block size for a reduction of length K: the K range split into equal blocks
/// of at most gemmKCMax. Depends on K only, never on threading.
@inline(__always)
func gemmBlockK(_ K: Int) -> Int {
    let blocks = max(1, (K + gemmKCMax - 1) / gemmKCMax)
    return (K + blocks - 1) / blocks
}

/// The left-hand operand of a product: A (M,K) row-major, or Aᵀ stored as (K,M).
@usableFromInline struct GemmA {
    @usableFromInline let base: UnsafePointer<Float>
    @usableFromInline let ld: Int
    @usableFromInline let transposed: Bool
}

/// Packs rows i0..<i0+mc of op(A), all K columns, into micro-panels of gemmMR rows.
/// dst (⌈mc/MR⌉, K, MR); rows past mc are zero. A reduction block k0..<k0+kc of micro-panel
/// r then starts at dst + r·MR·K + k0·MR.
@inline(__always)
func gemmPackA(_ a: GemmA, _ i0: Int, _ mc: Int, _ K: Int, _ dst: UnsafeMutablePointer<Float>) {
    if a.transposed { gemmPackATransposed(a, i0, mc, K, dst); return }
    let MR = gemmMR
    var r0 = 0
    while r0 < mc {
        let h = min(MR, mc - r0)
        let panel = dst + r0 * K
        if h == MR {
            // Six row streams in, one sequential stream out (wrapping arithmetic: the indices
            // are bounded by the buffer sizes, so no overflow checks are needed).
            // Safe because rows i0+r0 ..< i0+r0+6 are < M and kk < K keep reads inside A.
            let s0 = a.base + (i0 + r0) * a.ld
            let s1 = s0 + a.ld, s2 = s1 + a.ld, s3 = s2 + a.ld, s4 = s3 + a.ld, s5 = s4 + a.ld
            var out = panel
            for kk in 0..<K {
                out[0] = s0[kk]; out[1] = s1[kk]; out[2] = s2[kk]
                out[3] = s3[kk]; out[4] = s4[kk]; out[5] = s5[kk]
                out += MR
            }
        } else {
            for r in 0..<h {
                // Safe because row i0+r0+r < M and kk < K keep reads inside A.
                let src = a.base + (i0 + r0 + r) * a.ld
                for kk in 0..<K { panel[kk &* MR &+ r] = src[kk] }
            }
            for kk in 0..<K { for r in h..<MR { panel[kk &* MR &+ r] = 0 } }
        }
        r0 += MR
    }
}

/// gemmPackA for op(A) = Aᵀ, A stored (K, M): micro-panel r takes 6 consecutive floats of
/// every source row. Taken panel by panel over all K, each source cache line would be fetched
/// again for every panel (a large-stride walk the prefetchers do not follow); in blocks of 16
/// source rows the lines stay in L1 until every panel has taken its columns.
@inline(__always)
func gemmPackATransposed(_ a: GemmA, _ i0: Int, _ mc: Int, _ K: Int, _ dst: UnsafeMutablePointer<Float>) {
    let MR = gemmMR, kBlock = 16
    var k0 = 0
    while k0 < K {
        let k1 = min(K, k0 + kBlock)
        var r0 = 0
        while r0 < mc {
            let h = min(MR, mc - r0)
            let panel = dst + r0 * K
            if h == MR {
                // One 8-lane copy per source row: the two extra lanes spill into the next
                // row's slot of this micro-panel, which the next k writes afterwards (k runs
                // ascending within the panel), so only the panel's last k needs six stores
                // (its spill would land in the next micro-panel). The extra lanes read are
                // columns of the same or the next source row (ld >= M), never past row K-1.
                // Safe because (kk, i0+r0+r) lies inside the (K,M) source for kk < K, r < 6,
                // and for kk < K-1 the 8-float read ends inside row kk+1.
                var src = UnsafeRawPointer(a.base + k0 * a.ld + i0 + r0)
                var out = UnsafeMutableRawPointer(panel + k0 * MR)
                let stride = a.ld * 4
                let spillFree = min(k1, K - 1)
                var kk = k0
                while kk < spillFree {
                    out.storeBytes(of: src.loadUnaligned(as: SIMD8<Float>.self), as: SIMD8<Float>.self)
                    src += stride; out += MR * 4
                    kk += 1
                }
                if kk < k1 {
                    let s = src.assumingMemoryBound(to: Float.self), o = out.assumingMemoryBound(to: Float.self)
                    o[0] = s[0]; o[1] = s[1]; o[2] = s[2]; o[3] = s[3]; o[4] = s[4]; o[5] = s[5]
                }
            } else {
                for kk in k0..<k1 {
                    // Safe because (kk, i0+r0+r) lies inside the (K,M) source for r < h.
                    let src = a.base + kk * a.ld + i0 + r0
                    let out = panel + kk * MR
                    for r in 0..<h { out[r] = src[r] }
                    for r in h..<MR { out[r] = 0 }
                }
            }
            r0 += MR
        }
        k0 = k1
    }
}

/// Stores one register-tile row: c[0..<32] = x (+ c if load) (+ bias if given).
@inline(__always)
func gemmStoreRow(_ c: UnsafeMutablePointer<Float>, _ x0: F16, _ x1: F16, _ load: Bool, _ bias: UnsafePointer<Float>?) {
    var y0 = x0, y1 = x1
    let raw = UnsafeMutableRawPointer(c)
    // Safe because the caller stores only full tiles here: 32 floats of this C row exist.
    if load {
        y0 += raw.loadUnaligned(as: F16.self)
        y1 += raw.loadUnaligned(fromByteOffset: 64, as: F16.self)
    } else if let bias {
        y0 += UnsafeRawPointer(bias).loadUnaligned(as: F16.self)
        y1 += UnsafeRawPointer(bias).loadUnaligned(fromByteOffset: 64, as: F16.self)
    }
    raw.storeBytes(of: y0, as: F16.self)
    raw.storeBytes(of: y1, toByteOffset: 64, as: F16.self)
}

/// The 6x32 micro-kernel: C tile (+)= Ap (kc, 6) · Bp (kc, 32).
/// a (kc, MR) packed, b (kc, NR) packed, c (mValid, nValid) with row stride ldc.
@inline(__always)
func gemmKernel(_ kc: Int, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
                _ c: UnsafeMutablePointer<Float>, _ ldc: Int, _ mValid: Int, _ nValid: Int,
                _ load: Bool, _ bias: UnsafePointer<Float>?) {
    var c00 = F16(), c01 = F16(), c10 = F16(), c11 = F16(), c20 = F16(), c21 = F16()
    var c30 = F16(), c31 = F16(), c40 = F16(), c41 = F16(), c50 = F16(), c51 = F16()
    var ap = a
    var bp = UnsafeRawPointer(b)
    for _ in 0..<kc {
        // Safe because packed panels hold kc rows of NR floats (B) and MR floats (A).
        let b0 = bp.loadUnaligned(as: F16.self)
        let b1 = bp.loadUnaligned(fromByteOffset: 64, as: F16.self)
        var x = F16(repeating: ap[0])
        c00 = c00.addingProduct(x, b0); c01 = c01.addingProduct(x, b1)
        x = F16(repeating: ap[1])
        c10 = c10.addingProduct(x, b0); c11 = c11.addingProduct(x, b1)
        x = F16(repeating: ap[2])
        c20 = c20.addingProduct(x, b0); c21 = c21.addingProduct(x, b1)
        x = F16(repeating: ap[3])
        c30 = c30.addingProduct(x, b0); c31 = c31.addingProduct(x, b1)
        x = F16(repeating: ap[4])
        c40 = c40.addingProduct(x, b0); c41 = c41.addingProduct(x, b1)
        x = F16(repeating: ap[5])
        c50 = c50.addingProduct(x, b0); c51 = c51.addingProduct(x, b1)
        ap += gemmMR
        bp += gemmNR * 4
    }
    if mValid == gemmMR && nValid == gemmNR {
        gemmStoreRow(c, c00, c01, load, bias)
        gemmStoreRow(c + ldc, c10, c11, load, bias)
        gemmStoreRow(c + 2 * ldc, c20, c21, load, bias)
        gemmStoreRow(c + 3 * ldc, c30, c31, load, bias)
        gemmStoreRow(c + 4 * ldc, c40, c41, load, bias)
        gemmStoreRow(c + 5 * ldc, c50, c51, load, bias)
        return
    }
    // Edge tile: spill the registers and copy only the valid part.
    withUnsafeTemporaryAllocation(of: F16.self, capacity: 2 * gemmMR) { t in
        t[0] = c00; t[1] = c01; t[2] = c10; t[3] = c11; t[4] = c20; t[5] = c21
        t[6] = c30; t[7] = c31; t[8] = c40; t[9] = c41; t[10] = c50; t[11] = c51
        // Safe because the temporary holds MR*NR floats laid out row by row.
        let tile = UnsafeRawPointer(t.baseAddress!).assumingMemoryBound(to: Float.self)
        for r in 0..<mValid {
            let row = c + r * ldc
            for j in 0..<nValid {
                var v = tile[r * gemmNR + j]
                if load { v += row[j] } else if let bias { v += bias[j] }
                row[j] = v
            }
        }
    }
}

/// Single-threaded product of packed operands: C[0..<mc, panels] (+)= Ap · B[:, panels].
/// ap: op(A) rows packed by gemmPackA (⌈mc/MR⌉, K, MR); b: packed (N,K); c points at C
/// element (first row, panels.lowerBound·NR), row stride ldc; bias (N) or nil.
@usableFromInline
func gemmPacked(_ ap: UnsafePointer<Float>, mc: Int, _ b: PackedMatrix, panels: Range<Int>,
                _ c: UnsafeMutablePointer<Float>, _ ldc: Int, accumulate: Bool, bias: UnsafePointer<Float>?) {
    let K = b.columns, N = b.rows, NR = gemmNR
    if K == 0 {
        let n0 = panels.lowerBound * NR
        for i in 0..<mc {
            for n in n0..<min(N, panels.upperBound * NR) {
                // Safe because i < mc and n < N index inside C's block and bias.
                if !accumulate { c[i * ldc + n - n0] = bias?[n] ?? 0 }
            }
        }
        return
    }
    let kcBlock = gemmBlockK(K)
    var pc = 0
    while pc < K {
        let kc = min(kcBlock, K - pc)
        let load = accumulate || pc > 0
        let blockBias = pc == 0 ? bias : nil
        for p in panels {
            // Safe because p < panelCount and pc+kc <= K stay inside the packed storage.
            let bp = b.storage + p * K * NR + pc * NR
            let n0 = p * NR
            let nValid = min(NR, N - n0)
            let cPanel = c + (n0 - panels.lowerBound * NR)
            var ir = 0
            while ir < mc {
                // Safe because micro-panel ir/MR holds K·MR packed floats and row ir < mc.
                gemmKernel(kc, ap + ir * K + pc * gemmMR, bp, cPanel + ir * ldc, ldc,
                           min(gemmMR, mc - ir), nValid, load, blockBias.map { $0 + n0 })
                ir += gemmMR
            }
        }
        pc += kc
    }
}

/// Rows per packed block of A for reduction length K: about 2 MiB of packed A, a multiple
/// of MR, at least 4·MR, at most gemmMC.
@inline(__always)
func gemmRowBlock(_ K: Int) -> Int {
    let rows = (1 << 19) / max(1, K) / gemmMR * gemmMR
    return max(4 * gemmMR, min(gemmMC, rows))
}

/// Single-threaded block product: C[rows, panels] (+)= op(A)[rows, :] · B[:, panels], packing
/// A block by block. c points at C element (rows.lowerBound, panels.lowerBound·NR).
@usableFromInline
func gemmBlock(_ a: GemmA, rows: Range<Int>, _ b: PackedMatrix, panels: Range<Int>,
               _ c: UnsafeMutablePointer<Float>, _ ldc: Int, accumulate: Bool, bias: UnsafePointer<Float>?) {
    let K = b.columns
    let mcMax = min(gemmRowBlock(K), (rows.count + gemmMR - 1) / gemmMR * gemmMR)
    withGemmScratch(mcMax * K) { ap in
        var ic = rows.lowerBound
        while ic < rows.upperBound {
            let mc = min(mcMax, rows.upperBound - ic)
            gemmPackA(a, ic, mc, K, ap)
            gemmPacked(ap, mc: mc, b, panels: panels, c + (ic - rows.lowerBound) * ldc, ldc,
                       accumulate: accumulate, bias: bias)
            ic += mc
        }
    }
}

/// Scratch buffers kept between GEMM calls: a training step runs hundreds of GEMMs, and
/// allocating their packing space afresh each time maps and faults in new pages every call.
/// Entries are (address, capacity in floats); guarded by gemmScratchLock.
nonisolated(unsafe) private var gemmScratchFree: [(address: UInt, capacity: Int)] = []
nonisolated(unsafe) private var gemmScratchLock = pthread_mutex_t()
private let gemmScratchLockReady: Bool = {
    pthread_mutex_init(&gemmScratchLock, nil)
    return true
}()
/// Most buffers kept: one or two per thread and nesting level is all that is ever live.
private let gemmScratchKeep = 16

/// Lends `count` floats of 64-byte aligned scratch to `body` (contents undefined), from the
/// buffers kept between calls when one is large enough.
@inline(__always)
func withGemmScratch<R>(_ count: Int, _ body: (UnsafeMutablePointer<Float>) -> R) -> R {
    let n = max(16, count)
    _ = gemmScratchLockReady
    pthread_mutex_lock(&gemmScratchLock)
    var best = -1
    for (i, e) in gemmScratchFree.enumerated() where e.capacity >= n {
        if best < 0 || e.capacity < gemmScratchFree[best].capacity { best = i }
    }
    let taken = best >= 0 ? gemmScratchFree.remove(at: best) : nil
    pthread_mutex_unlock(&gemmScratchLock)
    let capacity = taken?.capacity ?? n
    // Safe because a kept buffer was allocated below with `capacity` floats, bound to Float,
    // and is owned by exactly one caller between taking and returning it.
    let p = taken.flatMap { UnsafeMutablePointer<Float>(bitPattern: $0.address) }
        ?? UnsafeMutableRawPointer.allocate(byteCount: n * 4, alignment: 64).bindMemory(to: Float.self, capacity: n)
    defer {
        pthread_mutex_lock(&gemmScratchLock)
        gemmScratchFree.append((UInt(bitPattern: p), capacity))
        var evicted: UInt? = nil
        if gemmScratchFree.count > gemmScratchKeep,
           let smallest = gemmScratchFree.indices.min(by: { gemmScratchFree[$0].capacity < gemmScratchFree[$1].capacity }) {
            evicted = gemmScratchFree.remove(at: smallest).address
        }
        pthread_mutex_unlock(&gemmScratchLock)
        // Safe because an evicted buffer is no longer reachable from the free list.
        if let evicted { UnsafeMutableRawPointer(bitPattern: evicted)?.deallocate() }
    }
    return body(p)
}

/// Splits C (M, N) over the pool: by rows in register-tile multiples when there are enough
/// rows, otherwise by column panels. Either way no two tasks write the same C element and
/// each element's arithmetic is the same.
@inline(__always)
func gemmParallel(_ M: Int, _ b: PackedMatrix, _ pool: ThreadPool,
                  _ body: (Range<Int>, Range<Int>) -> Void) {
    let T = pool.threadCount
    let rowTiles = (M + gemmMR - 1) / gemmMR
    if T == 1 || rowTiles >= 4 * T || b.panelCount < 2 * T {
        pool.parallelFor(M, granule: gemmMR) { rows in
            body(rows, 0..<b.panelCount)
        }
    } else {
        pool.parallelFor(b.panelCount) { panels in
            body(0..<M, panels)
        }
    }
}

/// C (+)= op(A) · Wᵀ with W packed: the product behind every linear layer.
///
/// - Parameters:
///   - rows: M, the rows of op(A) and C.
///   - a: op(A) (M, K) with K = `b.columns`: row-major with row stride `lda` (>= K), or, when
///     `transposeA`, stored as (K, M) with row stride `lda` (>= M).
///   - b: W (N, K), N = `b.rows`.
///   - c: C (M, N), row stride `ldc` (>= N).
///   - accumulate: add to C instead of overwriting it.
///   - bias: (N) added to every row (ignored when `accumulate`), or nil.
///   - pool: threads; results are identical for every thread count.
/// - Complexity: 2·M·N·K flops.
///
/// API status: final.
public func gemm(rows M: Int, a: UnsafePointer<Float>, lda: Int, transposeA: Bool = false,
                 b: PackedMatrix, c: UnsafeMutablePointer<Float>, ldc: Int,
                 accumulate: Bool = false, bias: UnsafePointer<Float>? = nil, pool: ThreadPool) {
    precondition(M >= 0, "gemm: negative rows")
    precondition(lda >= (transposeA ? M : b.columns) && ldc >= b.rows, "gemm: leading dimension too small")
    guard M > 0, b.rows > 0 else { return }
    let op = GemmA(base: a, ld: lda, transposed: transposeA)
    gemmParallel(M, b, pool) { rows, panels in
        // Safe because rows < M and panels·NR < N + NR address C's block origin inside C.
        let origin = c + rows.lowerBound * ldc + panels.lowerBound * gemmNR
        gemmBlock(op, rows: rows, b, panels: panels, origin, ldc, accumulate: accumulate,
                  bias: accumulate ? nil : bias)
    }
}

/// General float32 GEMM: C (M, N) (+)= op(A) (M, K) · op(B) (K, N), BLAS conventions, all
/// matrices row-major. op(A) = A (M, K) or Aᵀ with A stored (K, M); op(B) = B (K, N) or Bᵀ
/// with B stored (N, K). Packs B first (O(K·N)), then runs the packed product.
///
/// API status: final.
public func gemm(m M: Int, n N: Int, k K: Int,
                 a: UnsafePointer<Float>, lda: Int, transposeA: Bool = false,
                 b: UnsafePointer<Float>, ldb: Int, transposeB: Bool = false,
                 c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool = false, pool: ThreadPool) {
    // op(B) (K, N) is Wᵀ for W (N, K): stored (N, K) = W row-major, stored (K, N) = W transposed.
    let w = PackedMatrix(rows: N, columns: K, float32: b, layout: transposeB ? .rowMajor : .transposed,
                         stride: ldb, pool: pool)
    gemm(rows: M, a: a, lda: lda, transposeA: transposeA, b: w, c: c, ldc: ldc,
         accumulate: accumulate, pool: pool)
}

/// Linear layer forward, llm.c `matmul_forward`: out = inp · Wᵀ + bias.
///
/// inp (rows, C), weight (OC, C) packed, bias (OC) or nil -> out (rows, OC), all dense.
///
/// API status: final.
public func matmulForward(out: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>,
                          weight: PackedMatrix, bias: UnsafePointer<Float>? = nil,
                          rows: Int, pool: ThreadPool) {
    gemm(rows: rows, a: input, lda: weight.columns, b: weight, c: out, ldc: weight.rows,
         bias: bias, pool: pool)
}

/// Linear layer backward, llm.c `matmul_backward`, for out = inp · Wᵀ + bias.
///
/// dout (rows, OC), inp (rows, C), weight (OC, C) float32 row-major ->
/// dinp (rows, C) = dout · W, dweight (OC, C) = doutᵀ · inp, dbias (OC) = Σ_rows dout.
/// Pass nil for a gradient that is not needed. With `accumulate` the gradients are added to
/// the buffers (llm.c semantics); without, they are overwritten.
///
/// API status: final.
public func matmulBackward(dInput: UnsafeMutablePointer<Float>?, dWeight: UnsafeMutablePointer<Float>?,
                           dBias: UnsafeMutablePointer<Float>?, dOut: UnsafePointer<Float>,
                           input: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                           rows: Int, inFeatures C: Int, outFeatures OC: Int,
                           accumulate: Bool = true, pool: ThreadPool) {
    if let dInput {
        // dX (rows, C) = dY (rows, OC) · W (OC, C)
        gemm(m: rows, n: C, k: OC, a: dOut, lda: OC, b: weight, ldb: C, c: dInput, ldc: C,
             accumulate: accumulate, pool: pool)
    }
    if let dWeight {
        // dW (OC, C) = dYᵀ (OC, rows) · X (rows, C); dY stored (rows, OC) is the transposed form.
        gemm(m: OC, n: C, k: rows, a: dOut, lda: OC, transposeA: true, b: input, ldb: C,
             c: dWeight, ldc: C, accumulate: accumulate, pool: pool)
    }
    if let dBias {
        pool.parallelFor(OC) { cols in
            for o in cols {
                var s: Float = accumulate ? dBias[o] : 0
                // Safe because r < rows and o < OC index inside dout.
                for r in 0..<rows { s += dOut[r * OC + o] }
                dBias[o] = s
            }
        }
    }
}
