/// A lookup table (rows, columns) of float32/float16/bfloat16 elements, row-major, read in
/// place (for example straight from a memory-mapped checkpoint).
///
/// API status: final.
public struct EmbeddingTable: @unchecked Sendable {
    /// First element; need not be aligned.
    public let base: UnsafeRawPointer
    public let type: WeightType
    /// Number of entries (vocabulary size, or maximum positions).
    public let rows: Int
    /// Width of each entry (channels).
    public let columns: Int

    /// - Precondition: `base` holds `rows · columns` elements of `type` and outlives every use.
    public init(base: UnsafeRawPointer, type: WeightType, rows: Int, columns: Int) {
        precondition(rows >= 0 && columns >= 0, "EmbeddingTable: negative shape")
        self.base = base; self.type = type; self.rows = rows; self.columns = columns
    }
}

/// Embedding lookup, llm.c `encoder_forward`: out[b,t] = wte[tokens[b,t]] (+ wpe[t]).
///
/// tokens (B, T) as a flat (B·T) buffer, wte (V, C), wpe (maxT, C) or nil -> out (B·T, C).
///
/// - Throws: ``KernelError/tokenOutOfRange(row:id:vocab:)`` for an id outside `0..<V`
///   (checked before anything is written), ``KernelError/sequenceTooLong(length:limit:)``
///   when T exceeds wpe's rows.
///
/// API status: final.
public func embeddingForward(out: UnsafeMutablePointer<Float>, tokens: UnsafePointer<Int32>,
                             batch B: Int, length T: Int, tokenTable wte: EmbeddingTable,
                             positionTable wpe: EmbeddingTable? = nil, pool: ThreadPool) throws(KernelError) {
    let C = wte.columns, V = wte.rows
    for r in 0..<(B * T) {
        // Safe because r < B·T tokens exist (caller contract).
        let id = tokens[r]
        if id < 0 || Int(id) >= V { throw .tokenOutOfRange(row: r, id: id, vocab: V) }
    }
    if let wpe {
        precondition(wpe.columns == C, "embeddingForward: position table width \(wpe.columns) != \(C)")
        if T > wpe.rows { throw .sequenceTooLong(length: T, limit: wpe.rows) }
    }
    pool.parallelFor(B * T) { rows in
        for r in rows {
            let y = out + r * C
            // Safe because the id was checked to be < V above, so its row lies inside wte.
            widenRun(wte.base, wte.type, start: Int(tokens[r]) * C, count: C, into: y)
            if let wpe {
                let t = r % T
                // Safe because t < T <= wpe.rows was checked above.
                for c in 0..<C { y[c] += loadWidened(wpe.base, wpe.type, t * C + c) }
            }
        }
    }
}
