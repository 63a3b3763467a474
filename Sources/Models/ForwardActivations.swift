/// The buffers of one forward pass over B sequences of T tokens, llm.c style: one allocation,
/// one named slice per activation, each with its shape. Inference reuses the per-layer slices
/// for every layer; a training graph keeps one set per layer beside these.
public final class ForwardActivations {
    public let batch: Int
    public let length: Int
    /// residual (B·T, C): the residual stream, updated in place by each block
    public let residual: UnsafeMutablePointer<Float>
    /// normed (B·T, C): the current block's normalised input; after the forward, ln_f's output
    public let normed: UnsafeMutablePointer<Float>
    /// qkv (B·T, (H + 2·KH)·D): queries, keys, values side by side per row
    public let qkv: UnsafeMutablePointer<Float>
    /// attention (B·T, H·D): attention output before the output projection
    public let attention: UnsafeMutablePointer<Float>
    /// mlpHidden (B·T, I): gate (Llama) or c_fc (GPT-2) output, then the activation's output
    public let mlpHidden: UnsafeMutablePointer<Float>
    /// mlpUp (B·T, I): up_proj output (Llama only; zero-sized for GPT-2)
    public let mlpUp: UnsafeMutablePointer<Float>
    private let storage: UnsafeMutablePointer<Float>

    /// Allocates buffers for `batch` × `length` tokens of a model with these widths.
    public init(batch B: Int, length T: Int, hidden C: Int, qkvWidth: Int, attentionWidth: Int,
                intermediate I: Int, gated: Bool) {
        batch = B
        length = T
        let N = B * T
        let sizes = [N * C, N * C, N * qkvWidth, N * attentionWidth, N * I, gated ? N * I : 0]
        // Keep every slice 64-byte aligned (16 floats) for the SIMD kernels.
        let padded = sizes.map { ($0 + 15) / 16 * 16 }
        let total = max(16, padded.reduce(0, +))
        // Safe because the allocation is bound to Float here and freed in deinit.
        storage = UnsafeMutableRawPointer.allocate(byteCount: total * 4, alignment: 64)
            .bindMemory(to: Float.self, capacity: total)
        var offsets: [Int] = []
        var o = 0
        for p in padded { offsets.append(o); o += p }
        residual = storage + offsets[0]
        normed = storage + offsets[1]
        qkv = storage + offsets[2]
        attention = storage + offsets[3]
        mlpHidden = storage + offsets[4]
        mlpUp = storage + offsets[5]
    }

    deinit { storage.deallocate() }
}
