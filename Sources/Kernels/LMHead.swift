/// Vocabulary columns per tile of the fused head (a multiple of the GEMM panel width): the
/// logits tile of a row block stays in L2 between the GEMM writing it and the scan reading it.
@usableFromInline let lmHeadTileV = 512
/// Positions per block of the fused head (a multiple of the register tile height): the whole
/// weight streams past once per block, so blocks are as large as L2 allows.
@usableFromInline let lmHeadRowBlock = 516

/// LM head fused with per-position top-K and logsumexp over the full vocabulary.
///
/// Computes logits = scale · (hidden · Wᵀ) tile by tile over the vocabulary (a block of
/// positions × one vocabulary tile per thread exists at once), keeping per row the `k` largest logits and a
/// running logsumexp; the full (rows, V) logits never exist. The logits are bit-identical to
/// ``matmulForward(out:input:weight:bias:rows:pool:)`` followed by
/// ``topKLogsumexp(logits:rows:vocab:k:topIds:topLogits:logsumexp:pool:)`` (times `scale`).
///
/// hidden (rows, C), weight (V, C) packed ->
/// topIds (rows, k), topLogits (rows, k) descending, ties by lower id; logsumexp (rows);
/// targetLogits (rows) = scaled logit of `targets[r]` when both are given (the exact value,
/// in the top-K or not).
///
/// - Parameters:
///   - scale: multiplies every logit (1/temperature); 1 for plain logits.
/// - Throws: ``KernelError/tokenOutOfRange(row:id:vocab:)`` for a target outside `0..<V`,
///   before any work.
///
/// API status: final.
public func lmHeadTopK(hidden: UnsafePointer<Float>, rows T: Int, weight: PackedMatrix, k: Int,
                       scale: Float = 1,
                       topIds: UnsafeMutablePointer<Int32>, topLogits: UnsafeMutablePointer<Float>,
                       logsumexp lse: UnsafeMutablePointer<Float>,
                       targets: UnsafePointer<Int32>? = nil, targetLogits: UnsafeMutablePointer<Float>? = nil,
                       pool: ThreadPool) throws(KernelError) {
    let V = weight.rows, C = weight.columns
    precondition(k >= 0 && k <= V, "lmHeadTopK: k=\(k) outside 0...\(V)")
    if let targets, targetLogits != nil {
        for r in 0..<T {
            // Safe because r < T targets exist (caller contract).
            if targets[r] < 0 || Int(targets[r]) >= V { throw .tokenOutOfRange(row: r, id: targets[r], vocab: V) }
        }
    }
    guard T > 0 else { return }
    let op = GemmA(base: hidden, ld: C, transposed: false)
    let tileV = lmHeadTileV, panelsPerTile = tileV / gemmNR
    let wanted = targetLogits != nil ? targets : nil
    let ldt = tileV + 16  // padded: a power-of-two row stride would alias in the caches
    pool.parallelFor(T, granule: gemmMR) { rows in
        let rowBlock = min(lmHeadRowBlock, (rows.count + gemmMR - 1) / gemmMR * gemmMR)
        // ap: packed rows of hidden (⌈rowBlock/MR⌉, C, MR); tile (rowBlock, ldt) logits;
        // accs (rowBlock) per-row running top-K states.
        withGemmScratch(rowBlock * C) { ap in withGemmScratch(rowBlock * ldt) { tile in
        withTopKScratch(tile: tileV, k: k) { scratch in
            // Safe because accs is freed on exit and each slot is initialised before use.
            let accs = UnsafeMutablePointer<TopKAccumulator>.allocate(capacity: rowBlock)
            defer { accs.deallocate() }
            var r0 = rows.lowerBound
            while r0 < rows.upperBound {
                let rb = r0..<min(rows.upperBound, r0 + rowBlock)
                gemmPackA(op, r0, rb.count, C, ap)
                // Safe because r < T keeps each accumulator inside its own output row.
                for (i, r) in rb.enumerated() {
                    (accs + i).initialize(to: TopKAccumulator(vals: topLogits + r * k, ids: topIds + r * k, k: k))
                }
                var p0 = 0
                while p0 < weight.panelCount {
                    let panels = p0..<min(weight.panelCount, p0 + panelsPerTile)
                    let n0 = p0 * gemmNR
                    let width = min(V, panels.upperBound * gemmNR) - n0
                    gemmPacked(ap, mc: rb.count, weight, panels: panels, tile, ldt, accumulate: false, bias: nil)
                    for (i, r) in rb.enumerated() {
                        let row = tile + i * ldt
                        if scale != 1 { mapSIMD(row, row, width) { $0 * scale } }
                        if let wanted, let targetLogits {
                            let id = Int(wanted[r])
                            // Safe because the id was range-checked and lies in this tile.
                            if id >= n0 && id < n0 + width { targetLogits[r] = row[id - n0] }
                        }
                        accs[i].consume(row, width, firstId: n0, scratch: scratch)
                    }
                    p0 = panels.upperBound
                }
                for (i, r) in rb.enumerated() { lse[r] = accs[i].logsumexp }
                r0 = rb.upperBound
            }
        }}}
    }
}
