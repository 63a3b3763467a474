import Checkpoints
import Kernels

/// Fused LM-head output for every position: the k largest logits in descending order (ties by
/// lower id) and the logsumexp over the whole vocabulary, so log p(id) = logit − logsumexp.
public struct TopKLogits: Sendable, Equatable {
    public let k: Int
    /// ids (B·T, k)
    public var ids: [Int32]
    /// logits (B·T, k), descending per row
    public var logits: [Float]
    /// logsumexp (B·T)
    public var logsumexp: [Float]
}

extension Transformer {
    /// Checks a batch request and returns T.
    func windowLength(tokenCount: Int, batch: Int) throws(ModelError) -> Int {
        guard batch > 0, tokenCount > 0, tokenCount % batch == 0 else {
            throw .invalidInput("\(tokenCount) tokens do not split into \(batch) windows of equal, non-zero length")
        }
        let T = tokenCount / batch
        if T > config.maxPositions {
            throw .invalidInput("window of \(T) tokens exceeds the model's \(config.maxPositions) positions")
        }
        if let w = config.slidingWindow, T > w {
            throw .invalidInput("window of \(T) tokens exceeds the sliding window of \(w); sliding-window attention is not implemented")
        }
        return T
    }

    /// Runs embedding and every block; leaves the final-normalised hidden states in
    /// `activations.normed` (B·T, C).
    ///
    /// tokens (B, T) flat, B = `activations.batch`, T = `activations.length`.
    /// - Throws: `ModelError.kernel` for a token id outside the vocabulary; `.invalidInput` for
    ///   a window longer than the model's positions.
    public func forwardHidden(tokens: UnsafePointer<Int32>, activations a: ForwardActivations, pool: ThreadPool) throws(ModelError) {
        let c = config
        let B = a.batch, T = a.length, N = B * T
        _ = try windowLength(tokenCount: N, batch: B)
        let I = c.intermediateSize
        let H = c.headCount, KH = c.kvHeadCount, D = c.headDim
        let W = qkvWidth
        var rope = self.rope
        if c.family == .llama && T > ropeLength { rope = Self.rotary(c, positions: T) }
        do {
            try embeddingForward(out: a.residual, tokens: tokens, batch: B, length: T, tokenTable: weights.tokenTable,
                                 positionTable: weights.positionTable, pool: pool)
            for block in weights.blocks {
                normalize(block.attentionNorm, input: a.residual, output: a.normed, rows: N, pool: pool)
                project(block.qkv, input: a.normed, rows: N, output: a.qkv, ldc: W, pool: pool)
                if let rope {
                    try ropeForward(a.qkv, batch: B, length: T, heads: H, rowStride: W, rope: rope, pool: pool)
                    try ropeForward(a.qkv + H * D, batch: B, length: T, heads: KH, rowStride: W, rope: rope, pool: pool)
                }
                attentionForward(out: a.attention, query: a.qkv, queryStride: W,
                                 key: a.qkv + H * D, keyStride: W, value: a.qkv + (H + KH) * D, valueStride: W,
                                 batch: B, length: T, heads: H, kvHeads: KH, headDim: D,
                                 scale: 1 / Float(D).squareRoot(), pool: pool)
                addProjection(block.output, input: a.attention, rows: N, residual: a.residual, pool: pool)

                normalize(block.mlpNorm, input: a.residual, output: a.normed, rows: N, pool: pool)
                project(block.mlpIn, input: a.normed, rows: N, output: a.mlpHidden, ldc: I, pool: pool)
                if let up = block.mlpUp {
                    project(up, input: a.normed, rows: N, output: a.mlpUp, ldc: I, pool: pool)
                    swigluForward(out: a.mlpHidden, gate: a.mlpHidden, up: a.mlpUp, count: N * I, pool: pool)
                } else {
                    geluForward(out: a.mlpHidden, input: a.mlpHidden, count: N * I, pool: pool)
                }
                addProjection(block.mlpOut, input: a.mlpHidden, rows: N, residual: a.residual, pool: pool)
            }
            normalize(weights.finalNorm, input: a.residual, output: a.normed, rows: N, pool: pool)
        } catch {
            throw .kernel(error)
        }
    }

    /// Full logits for `batch` windows of equal length.
    ///
    /// tokens (B, T) flat -> logits (B·T, V) row-major.
    public func logits(tokens: [Int32], batch: Int = 1, pool: ThreadPool = ThreadPool()) throws(ModelError) -> [Float] {
        let T = try windowLength(tokenCount: tokens.count, batch: batch)
        let a = makeActivations(batch: batch, length: T)
        try tokens.withUnsafeBufferPointer { (buffer) throws(ModelError) in
            // Safe because tokens is non-empty (checked by windowLength).
            try forwardHidden(tokens: buffer.baseAddress!, activations: a, pool: pool)
        }
        let N = tokens.count, V = config.vocabSize
        var logits = [Float](repeating: 0, count: N * V)
        try logits.withUnsafeMutableBufferPointer { (out) throws(ModelError) in
            try headLogits(activations: a, out: out, pool: pool)
        }
        return logits
    }

    /// The LM head over hidden states already in `activations.normed`: out (B·T, V).
    public func headLogits(activations a: ForwardActivations, out: UnsafeMutableBufferPointer<Float>,
                           pool: ThreadPool) throws(ModelError) {
        let N = a.batch * a.length
        guard out.count == N * config.vocabSize, let base = out.baseAddress else {
            throw .invalidInput("headLogits: output holds \(out.count) floats, not \(N) positions × \(config.vocabSize)")
        }
        matmulForward(out: base, input: a.normed, weight: weights.head, rows: N, pool: pool)
    }

    /// The fused LM head: per position the top `k` logits and the full-vocabulary logsumexp,
    /// without materialising the (B·T, V) logits.
    ///
    /// tokens (B, T) flat -> ids, logits (B·T, k), logsumexp (B·T).
    public func topK(tokens: [Int32], batch: Int = 1, k: Int, pool: ThreadPool = ThreadPool()) throws(ModelError) -> TopKLogits {
        let T = try windowLength(tokenCount: tokens.count, batch: batch)
        guard k >= 1, k <= config.vocabSize else {
            throw .invalidInput("k = \(k) is outside 1...\(config.vocabSize) (the vocabulary)")
        }
        let a = makeActivations(batch: batch, length: T)
        try tokens.withUnsafeBufferPointer { (buffer) throws(ModelError) in
            // Safe because tokens is non-empty (checked by windowLength).
            try forwardHidden(tokens: buffer.baseAddress!, activations: a, pool: pool)
        }
        let N = tokens.count
        var result = TopKLogits(k: k, ids: .init(repeating: 0, count: N * k), logits: .init(repeating: 0, count: N * k),
                                logsumexp: .init(repeating: 0, count: N))
        try topK(activations: a, k: k, ids: &result.ids, logits: &result.logits, logsumexp: &result.logsumexp, pool: pool)
        return result
    }

    /// Runs the fused head over hidden states already in `activations.normed`.
    /// ids, logits (B·T, k), logsumexp (B·T); sizes are checked.
    public func topK(activations a: ForwardActivations, k: Int, ids: inout [Int32], logits: inout [Float],
                     logsumexp: inout [Float], pool: ThreadPool) throws(ModelError) {
        let N = a.batch * a.length
        guard k >= 1, k <= config.vocabSize, ids.count == N * k, logits.count == N * k, logsumexp.count == N else {
            throw .invalidInput("topK: output sizes do not match \(N) positions × k = \(k)")
        }
        let head = weights.head
        var failure: KernelError?
        ids.withUnsafeMutableBufferPointer { idBuffer in
            logits.withUnsafeMutableBufferPointer { logitBuffer in
                logsumexp.withUnsafeMutableBufferPointer { lseBuffer in
                    do throws(KernelError) {
                        // Safe because the three buffers were size-checked above and are non-empty.
                        try lmHeadTopK(hidden: a.normed, rows: N, weight: head, k: k, topIds: idBuffer.baseAddress!,
                                       topLogits: logitBuffer.baseAddress!, logsumexp: lseBuffer.baseAddress!, pool: pool)
                    } catch {
                        failure = error
                    }
                }
            }
        }
        if let failure { throw .kernel(failure) }
    }

    /// RMSNorm (Llama family) or LayerNorm (GPT-2). input, output (rows, C).
    func normalize(_ norm: Norm, input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, rows: Int, pool: ThreadPool) {
        let C = config.hiddenSize, eps = config.normEpsilon
        norm.weight.withUnsafeBufferPointer { w in
            // Safe because norm weights have exactly C elements (checked at load).
            if let bias = norm.bias {
                bias.withUnsafeBufferPointer { b in
                    layernormForward(out: output, input: input, weight: w.baseAddress!, bias: b.baseAddress!,
                                     rows: rows, channels: C, eps: eps, pool: pool)
                }
            } else {
                rmsnormForward(out: output, input: input, weight: w.baseAddress!, rows: rows, channels: C, eps: eps, pool: pool)
            }
        }
    }

    /// output (rows, ldc) columns [0, out) = input (rows, in) · Wᵀ + b.
    func project(_ linear: Linear, input: UnsafePointer<Float>, rows: Int, output: UnsafeMutablePointer<Float>,
                 ldc: Int, pool: ThreadPool) {
        let w = linear.weight
        if let bias = linear.bias {
            bias.withUnsafeBufferPointer { b in
                gemm(rows: rows, a: input, lda: w.columns, b: w, c: output, ldc: ldc, bias: b.baseAddress, pool: pool)
            }
        } else {
            gemm(rows: rows, a: input, lda: w.columns, b: w, c: output, ldc: ldc, pool: pool)
        }
    }

    /// residual (rows, C) += input (rows, in) · Wᵀ + b.
    func addProjection(_ linear: Linear, input: UnsafePointer<Float>, rows: Int, residual: UnsafeMutablePointer<Float>,
                       pool: ThreadPool) {
        let w = linear.weight, C = w.rows
        gemm(rows: rows, a: input, lda: w.columns, b: w, c: residual, ldc: C, accumulate: true, pool: pool)
        guard let bias = linear.bias else { return }
        bias.withUnsafeBufferPointer { b in
            pool.parallelFor(rows) { rs in
                for r in rs {
                    // Safe because r < rows and i < C stay inside the residual and the bias.
                    let x = residual + r * C
                    for i in 0..<C { x[i] += b[i] }
                }
            }
        }
    }
}
