import Checkpoints
import Kernels

// The training graph: forward with saved activations, the loss, and the backward pass, each
// layer's backward reading the activations its forward saved. Gradients accumulate into
// `grads` (llm.c semantics), so several micro-batches may be summed before an update.

extension TrainableLlama {
    /// Packs a (rows, columns) row-major parameter matrix for the forward GEMM.
    func packed(_ offset: Int, _ rows: Int, _ columns: Int, _ pool: ThreadPool) -> PackedMatrix {
        PackedMatrix(rows: rows, columns: columns, float32: params + offset, pool: pool)
    }

    /// Forward over B windows of T tokens, saving what the backward needs; leaves the logits
    /// in `a.logits` (B·T, V).
    ///
    /// tokens (B, T) flat, B = `a.batch`, T = `a.length`.
    /// - Throws: `ModelError.kernel` for a token id outside the vocabulary or T beyond the
    ///   model's positions.
    public func forward(tokens: UnsafePointer<Int32>, activations a: TrainingActivations, pool: ThreadPool) throws(ModelError) {
        let c = config, L = layout
        let B = a.batch, T = a.length, N = B * T
        let C = c.hiddenSize, I = c.intermediateSize, V = c.vocabSize
        let H = c.headCount, KH = c.kvHeadCount, D = c.headDim, W = (H + 2 * KH) * D
        let eps = c.normEpsilon
        do {
            // Safe because the embedding slice holds V·C floats of params.
            let table = EmbeddingTable(base: UnsafeRawPointer(params + L.embedding), type: .float32, rows: V, columns: C)
            try embeddingForward(out: a.layers.first?.residualIn ?? a.residualOut, tokens: tokens, batch: B, length: T,
                                 tokenTable: table, pool: pool)
            for (l, o) in L.blocks.enumerated() {
                let s = a.layers[l]
                let next = l + 1 < a.layers.count ? a.layers[l + 1].residualIn : a.residualOut
                // attention half: resMid = resIn + attn(rmsnorm(resIn)) · Woᵀ
                rmsnormForward(out: s.attentionNormed, rstd: s.attentionRstd, input: s.residualIn,
                               weight: params + o.attentionNorm, rows: N, channels: C, eps: eps, pool: pool)
                matmulForward(out: s.qkv, input: s.attentionNormed, weight: packed(o.qkv, W, C, pool), rows: N, pool: pool)
                try ropeForward(s.qkv, batch: B, length: T, heads: H, rowStride: W, rope: rope, pool: pool)
                try ropeForward(s.qkv + H * D, batch: B, length: T, heads: KH, rowStride: W, rope: rope, pool: pool)
                attentionForward(out: s.attention, logsumexp: s.logsumexp, query: s.qkv, queryStride: W,
                                 key: s.qkv + H * D, keyStride: W, value: s.qkv + (H + KH) * D, valueStride: W,
                                 batch: B, length: T, heads: H, kvHeads: KH, headDim: D,
                                 scale: 1 / Float(D).squareRoot(), pool: pool)
                s.residualMid.update(from: s.residualIn, count: N * C)
                gemm(rows: N, a: s.attention, lda: H * D, b: packed(o.output, C, H * D, pool), c: s.residualMid,
                     ldc: C, accumulate: true, pool: pool)
                // MLP half: resOut = resMid + (silu(ln2·Wgᵀ) ⊙ ln2·Wuᵀ) · Wdᵀ
                rmsnormForward(out: s.mlpNormed, rstd: s.mlpRstd, input: s.residualMid,
                               weight: params + o.mlpNorm, rows: N, channels: C, eps: eps, pool: pool)
                matmulForward(out: s.gate, input: s.mlpNormed, weight: packed(o.gate, I, C, pool), rows: N, pool: pool)
                matmulForward(out: s.up, input: s.mlpNormed, weight: packed(o.up, I, C, pool), rows: N, pool: pool)
                swigluForward(out: s.activated, gate: s.gate, up: s.up, count: N * I, pool: pool)
                next.update(from: s.residualMid, count: N * C)
                gemm(rows: N, a: s.activated, lda: I, b: packed(o.down, C, I, pool), c: next, ldc: C,
                     accumulate: true, pool: pool)
            }
            rmsnormForward(out: a.finalNormed, rstd: a.finalRstd, input: a.residualOut,
                           weight: params + L.finalNorm, rows: N, channels: C, eps: eps, pool: pool)
            matmulForward(out: a.logits, input: a.finalNormed, weight: packed(L.head, V, C, pool), rows: N, pool: pool)
        } catch {
            throw .kernel(error)
        }
    }

    /// The loss of the logits in `a.logits` and its gradient into `a.dlogits`, averaged over
    /// the rows whose label is not −1.
    ///
    /// labels (B·T); targets in the loader's layout for B·T rows (see `DistillationTargets`).
    /// Returns the summed loss parts and the number of labelled rows; `a.dlogits` is scaled
    /// by 1/rows so that ``backward`` yields the gradient of the mean loss.
    public func loss(labels: UnsafePointer<Int32>, targets: DistillationTargets, mix: LossMix,
                     activations a: TrainingActivations, pool: ThreadPool) -> (parts: LossParts, rows: Int) {
        let N = a.batch * a.length, V = config.vocabSize
        var rows = 0
        for r in 0..<N where labels[r] >= 0 { rows += 1 }
        let scale = rows > 0 ? 1 / Float(rows) : 0
        // Per-row parts, summed in row order afterwards so the total is thread-independent.
        var perRow = [LossParts](repeating: LossParts(), count: N)
        perRow.withUnsafeMutableBufferPointer { out in
            let out = out.baseAddress!  // Safe because perRow has N elements.
            pool.parallelFor(N, granule: 8) { rs in
                let scratch = UnsafeMutablePointer<Float>.allocate(capacity: V)
                defer { scratch.deallocate() }
                for r in rs {
                    // Safe because r < N rows exist in every (N, ·) buffer.
                    var t = targets
                    let width = targets.kind == .dense ? V : targets.k
                    t.ids = targets.ids.map { $0 + r * width }
                    t.weights = targets.weights.map { $0 + r * width }
                    t.tail = targets.tail.map { $0 + r }
                    out[r] = distillationLossForwardBackward(
                        logits: a.logits + r * V, rows: 1, vocab: V, labels: labels + r, targets: t, mix: mix,
                        scale: scale, dlogits: a.dlogits + r * V, scratch: scratch)
                }
            }
        }
        var total = LossParts()
        for p in perRow {
            total.crossEntropy += p.crossEntropy
            total.distillation += p.distillation
            total.total += p.total
        }
        return (total, rows)
    }

    /// Backward from `a.dlogits` through the whole model: adds every parameter's gradient to
    /// ``grads``. Needs the activations of the ``forward`` call on the same tokens.
    ///
    /// tokens (B, T) flat.
    public func backward(tokens: UnsafePointer<Int32>, activations a: TrainingActivations, pool: ThreadPool) throws(ModelError) {
        let c = config, L = layout
        let B = a.batch, T = a.length, N = B * T
        let C = c.hiddenSize, I = c.intermediateSize, V = c.vocabSize
        let H = c.headCount, KH = c.kvHeadCount, D = c.headDim, W = (H + 2 * KH) * D
        let p = params, g = grads
        let dres = a.dResidual, dln = a.dNormed
        // head: logits = lnf · Whᵀ
        linearBackward(dInput: dln, accumulateInput: false, weight: L.head, dOut: a.dlogits, input: a.finalNormed,
                       rows: N, inFeatures: C, outFeatures: V, pool: pool)
        dres.update(repeating: 0, count: N * C)
        rmsnormBackward(dInput: dres, dWeight: g + L.finalNorm, dOut: dln, input: a.residualOut,
                        weight: p + L.finalNorm, rstd: a.finalRstd, rows: N, channels: C, pool: pool)
        do {
            for l in stride(from: L.blocks.count - 1, through: 0, by: -1) {
                let o = L.blocks[l], s = a.layers[l]
                // MLP half; dres holds dL/d resOut and becomes dL/d resMid (residual path + norm path).
                linearBackward(dInput: a.dActivated, accumulateInput: false, weight: o.down, dOut: dres,
                               input: s.activated, rows: N, inFeatures: I, outFeatures: C, pool: pool)
                swigluBackward(dGate: a.dGate, dUp: a.dUp, dOut: a.dActivated, gate: s.gate, up: s.up,
                               count: N * I, pool: pool)
                linearBackward(dInput: dln, accumulateInput: false, weight: o.gate, dOut: a.dGate,
                               input: s.mlpNormed, rows: N, inFeatures: C, outFeatures: I, pool: pool)
                linearBackward(dInput: dln, accumulateInput: true, weight: o.up, dOut: a.dUp,
                               input: s.mlpNormed, rows: N, inFeatures: C, outFeatures: I, pool: pool)
                rmsnormBackward(dInput: dres, dWeight: g + o.mlpNorm, dOut: dln, input: s.residualMid,
                                weight: p + o.mlpNorm, rstd: s.mlpRstd, rows: N, channels: C, pool: pool)
                // attention half; dres becomes dL/d resIn.
                linearBackward(dInput: a.dAttention, accumulateInput: false, weight: o.output, dOut: dres,
                               input: s.attention, rows: N, inFeatures: H * D, outFeatures: C, pool: pool)
                attentionBackward(dQuery: a.dQKV, dKey: a.dQKV + H * D, dValue: a.dQKV + (H + KH) * D,
                                  dOut: a.dAttention, out: s.attention, logsumexp: s.logsumexp,
                                  query: s.qkv, queryStride: W, key: s.qkv + H * D, keyStride: W,
                                  value: s.qkv + (H + KH) * D, valueStride: W,
                                  batch: B, length: T, heads: H, kvHeads: KH, headDim: D,
                                  scale: 1 / Float(D).squareRoot(), pool: pool)
                try ropeBackward(a.dQKV, batch: B, length: T, heads: H, rowStride: W, rope: rope, pool: pool)
                try ropeBackward(a.dQKV + H * D, batch: B, length: T, heads: KH, rowStride: W, rope: rope, pool: pool)
                linearBackward(dInput: dln, accumulateInput: false, weight: o.qkv, dOut: a.dQKV,
                               input: s.attentionNormed, rows: N, inFeatures: C, outFeatures: W, pool: pool)
                rmsnormBackward(dInput: dres, dWeight: g + o.attentionNorm, dOut: dln, input: s.residualIn,
                                weight: p + o.attentionNorm, rstd: s.attentionRstd, rows: N, channels: C, pool: pool)
            }
        } catch {
            throw .kernel(error)
        }
        embeddingBackward(dWeight: g + L.embedding, dOut: dres, tokens: tokens, rows: N, vocab: V, channels: C, pool: pool)
    }

    /// y = x · Wᵀ backward for the parameter matrix at `weight` (out, in): dX written (or
    /// added with `accumulateInput`), dW always added to ``grads``.
    ///
    /// dout (rows, out), inp (rows, in) -> dinp (rows, in), grads[weight] (out, in).
    private func linearBackward(dInput: UnsafeMutablePointer<Float>, accumulateInput: Bool, weight: Int,
                                dOut: UnsafePointer<Float>, input: UnsafePointer<Float>,
                                rows: Int, inFeatures: Int, outFeatures: Int, pool: ThreadPool) {
        matmulBackward(dInput: dInput, dWeight: nil, dBias: nil, dOut: dOut, input: input, weight: params + weight,
                       rows: rows, inFeatures: inFeatures, outFeatures: outFeatures,
                       accumulate: accumulateInput, pool: pool)
        matmulBackward(dInput: nil, dWeight: grads + weight, dBias: nil, dOut: dOut, input: input,
                       weight: params + weight, rows: rows, inFeatures: inFeatures, outFeatures: outFeatures,
                       accumulate: true, pool: pool)
    }
}
