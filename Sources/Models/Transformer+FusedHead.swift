import Kernels

extension Transformer {
    /// The fused LM head as a teacher pass needs it: per position the top `k` logits scaled by
    /// `scale` (1/temperature), the logsumexp of the scaled full row, and the scaled logit of
    /// each position's real next token (exact, whether or not it is in the top k).
    ///
    /// Hidden states must already be in `activations.normed` (``forwardHidden(tokens:activations:pool:)``).
    /// ids, logits (B·T, k); logsumexp, targets, targetLogits (B·T).
    /// - Throws: `.invalidInput` when a buffer size does not match; `.kernel` for a target id
    ///   outside the vocabulary.
    public func topK(activations a: ForwardActivations, k: Int, scale: Float, ids: inout [Int32], logits: inout [Float],
                     logsumexp: inout [Float], targets: [Int32], targetLogits: inout [Float], pool: ThreadPool) throws(ModelError) {
        let N = a.batch * a.length
        guard k >= 1, k <= config.vocabSize, ids.count == N * k, logits.count == N * k, logsumexp.count == N,
              targets.count == N, targetLogits.count == N else {
            throw .invalidInput("topK: buffer sizes do not match \(N) positions × k = \(k)")
        }
        var failure: KernelError?
        let head = weights.head
        // Safe because every buffer was size-checked above and N >= 1 (activations are non-empty).
        ids.withUnsafeMutableBufferPointer { i in
            logits.withUnsafeMutableBufferPointer { l in
                logsumexp.withUnsafeMutableBufferPointer { s in
                    targets.withUnsafeBufferPointer { t in
                        targetLogits.withUnsafeMutableBufferPointer { tl in
                            do throws(KernelError) {
                                try lmHeadTopK(hidden: a.normed, rows: N, weight: head, k: k, scale: scale,
                                               topIds: i.baseAddress!, topLogits: l.baseAddress!, logsumexp: s.baseAddress!,
                                               targets: t.baseAddress!, targetLogits: tl.baseAddress!, pool: pool)
                            } catch { failure = error }
                        }
                    }
                }
            }
        }
        if let failure { throw .kernel(failure) }
    }
}
