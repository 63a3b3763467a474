// Embedding backward, beside `embeddingForward` in Embedding.swift.

/// Token-embedding backward, llm.c `encoder_backward`: dwte[tokens[b,t]] += dout[b,t].
///
/// dout (B·T, C), tokens (B·T) -> dwte (V, C), accumulated (scatter-add). Ids must already
/// have been validated by the forward pass (`embeddingForward` throws on a bad id).
///
/// Threads own disjoint column slices of dwte and walk the rows in order, so no two threads
/// write the same element and the sums are identical for every thread count.
///
/// API status: provisional (trainer).
public func embeddingBackward(dWeight dwte: UnsafeMutablePointer<Float>, dOut: UnsafePointer<Float>,
                              tokens: UnsafePointer<Int32>, rows: Int, vocab V: Int, channels C: Int,
                              pool: ThreadPool) {
    for r in 0..<rows {
        // Safe because r < rows tokens exist (caller contract); a bad id here is a caller bug.
        precondition(tokens[r] >= 0 && Int(tokens[r]) < V, "embeddingBackward: token id \(tokens[r]) out of 0..<\(V)")
    }
    pool.parallelFor(C, granule: 16) { cols in
        for r in 0..<rows {
            // Safe because the id is < V (checked above) and cols ⊂ 0..<C.
            let dw = dwte + Int(tokens[r]) * C, dy = dOut + r * C
            for c in cols { dw[c] += dy[c] }
        }
    }
}

/// Residual backward for out = a + b: dA += dout, dB += dout (either may be nil).
///
/// dout (n) -> dA (n), dB (n), accumulated.
///
/// API status: provisional (trainer).
public func residualBackward(dA: UnsafeMutablePointer<Float>?, dB: UnsafeMutablePointer<Float>?,
                             dOut: UnsafePointer<Float>, count n: Int, pool: ThreadPool) {
    pool.parallelFor(n, granule: 4096) { r in
        for i in r {
            // Safe because i < n elements exist in all three buffers.
            dA?[i] += dOut[i]
            dB?[i] += dOut[i]
        }
    }
}
