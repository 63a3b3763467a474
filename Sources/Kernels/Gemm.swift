// One register-tiled, packed SIMD GEMM for every matrix product in a transformer:
//   forward   y  = x · Wᵀ        x (M,K), W (N,K) -> y (M,N)
//   backward  dX = dY · W        dY (M,N), W (N,K) -> dX (M,K)
//             dW = dYᵀ · X       dY (M,N), X (M,K) -> dW (N,K)
// The right-hand operand is always a PackedMatrix (panels of gemmNR columns of the product,
// each [K][gemmNR]); the left-hand operand is packed per cache block into micro-panels of
// gemmMR rows ([kc][gemmMR]). The micro-kernel keeps a gemmMR x gemmNR tile of C in SIMD
// registers. Every C element is reduced over K in the same order (kc blocks ascending, k
// ascending inside) whatever the threading, so results are identical for any thread count.

/// Rows of the register tile (rows of C per micro-kernel call).
@usableFromInline let gemmMR = 6
/// Columns of the register tile: two SIMD16 vectors; also the packed panel width.
@usableFromInline let gemmNR = 32
/// Largest reduction block: a kc x NR slice of B (32 KiB) stays in L1.
@usableFromInline let gemmKCMax = 256
/// Rows of A packed per block (kept in L2 while B panels stream past).
@usableFromInline let gemmMC = 144

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

/// Packs rows i0..<i0+mc, reduction indices k0..<k0+kc of A into micro-panels.
/// dst (⌈mc/MR⌉, kc, MR); rows past mc are zero.
@inline(__always)
func gemmPackA(_ a: GemmA, _ i0: Int, _ mc: Int, _ k0: Int, _ kc: Int, _ dst: UnsafeMutablePointer<Float>) {
    let MR = gemmMR
    var r0 = 0
    while r0 < mc {
        let h = min(MR, mc - r0)
        let panel = dst + r0 * kc
        if a.transposed {
            for kk in 0..<kc {
                // Safe because (k0+kk, i0+r0+r) lies inside the (K,M) source for r < h.
                let src = a.base + (k0 + kk) * a.ld + i0 + r0
                let out = panel + kk * MR
                for r in 0..<h { out[r] = src[r] }
                for r in h..<MR { out[r] = 0 }
            }
        } else {
            for r in 0..<h {
                // Safe because row i0+r0+r < M and k0+kc <= K keep reads inside A.
                let src = a.base + (i0 + r0 + r) * a.ld + k0
                for kk in 0..<kc { panel[kk * MR + r] = src[kk] }
            }
            if h < MR {
                for kk in 0..<kc { for r in h..<MR { panel[kk * MR + r] = 0 } }
            }
        }
        r0 += MR
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

/// Single-threaded block product: C[rows, panels] (+)= A[rows, :] · B[:, panels].
/// a: rows `rows` of op(A) (M,K); b: packed (N,K); c points at C element
/// (rows.lowerBound, panels.lowerBound·NR), row stride ldc; bias (N) or nil;
/// scratch (gemmMC · gemmKCMax) floats, 64-byte aligned.
@usableFromInline
func gemmBlock(_ a: GemmA, rows: Range<Int>, _ b: PackedMatrix, panels: Range<Int>,
               _ c: UnsafeMutablePointer<Float>, _ ldc: Int, accumulate: Bool,
               bias: UnsafePointer<Float>?, scratch: UnsafeMutablePointer<Float>) {
    let K = b.columns, N = b.rows, NR = gemmNR
    if K == 0 {
        let n0 = panels.lowerBound * NR
        for i in 0..<rows.count {
            for n in n0..<min(N, panels.upperBound * NR) {
                // Safe because i < rows.count and n < N index inside C's block and bias.
                if !accumulate { c[i * ldc + n - n0] = bias?[n] ?? 0 }
            }
        }
        return
    }
    let kcBlock = gemmBlockK(K)
    var ic = rows.lowerBound
    while ic < rows.upperBound {
        let mc = min(gemmMC, rows.upperBound - ic)
        var pc = 0
        while pc < K {
            let kc = min(kcBlock, K - pc)
            gemmPackA(a, ic, mc, pc, kc, scratch)
            let load = accumulate || pc > 0
            let blockBias = pc == 0 ? bias : nil
            for p in panels {
                // Safe because p < panelCount and pc+kc <= K stay inside the packed storage.
                let bp = b.storage + p * K * NR + pc * NR
                let n0 = p * NR
                let nValid = min(NR, N - n0)
                // cTile: C element (ic, n0) relative to c's origin.
                let cTile = c + (ic - rows.lowerBound) * ldc + (n0 - panels.lowerBound * NR)
                var ir = 0
                while ir < mc {
                    gemmKernel(kc, scratch + ir * kc, bp, cTile + ir * ldc, ldc,
                               min(gemmMR, mc - ir), nValid, load, blockBias.map { $0 + n0 })
                    ir += gemmMR
                }
            }
            pc += kc
        }
        ic += mc
    }
}

/// Allocates the per-task packing scratch for gemmBlock and passes it to `body`.
@inline(__always)
func withGemmScratch<R>(_ body: (UnsafeMutablePointer<Float>) -> R) -> R {
    let n = gemmMC * gemmKCMax
    // Safe because the buffer is bound to Float, used only inside body and freed after.
    let p = UnsafeMutableRawPointer.allocate(byteCount: n * 4, alignment: 64).bindMemory(to: Float.self, capacity: n)
    defer { p.deallocate() }
    return body(p)
}

/// Splits C (M, N) over the pool: by rows in register-tile multiples when there are enough
/// rows, otherwise by column panels. Either way no two tasks write the same C element and
/// each element's arithmetic is the same.
@inline(__always)
func gemmParallel(_ M: Int, _ b: PackedMatrix, _ pool: ThreadPool,
                  _ body: (Range<Int>, Range<Int>, UnsafeMutablePointer<Float>) -> Void) {
    let T = pool.threadCount
    let rowTiles = (M + gemmMR - 1) / gemmMR
    if T == 1 || rowTiles >= 4 * T || b.panelCount < 2 * T {
        pool.parallelFor(M, granule: gemmMR) { rows in
            withGemmScratch { body(rows, 0..<b.panelCount, $0) }
        }
    } else {
        pool.parallelFor(b.panelCount) { panels in
            withGemmScratch { body(0..<M, panels, $0) }
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
    gemmParallel(M, b, pool) { rows, panels, scratch in
        // Safe because rows < M and panels·NR < N + NR address C's block origin inside C.
        let origin = c + rows.lowerBound * ldc + panels.lowerBound * gemmNR
        gemmBlock(op, rows: rows, b, panels: panels, origin, ldc, accumulate: accumulate,
                  bias: accumulate ? nil : bias, scratch: scratch)
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
