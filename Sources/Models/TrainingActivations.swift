import Checkpoints

/// The buffers of one training step over B windows of T tokens, llm.c style: one allocation,
/// one named slice per activation with its shape. Forward activations are kept per layer for
/// the backward pass; gradient scratch is shared by all layers.
public final class TrainingActivations {
    /// Saved forward activations of one block (N = B·T rows).
    public struct Layer {
        /// resIn (N, C): the block's input residual stream
        public let residualIn: UnsafeMutablePointer<Float>
        /// ln1 (N, C), rstd1 (N): input_layernorm output and 1/rms
        public let attentionNormed: UnsafeMutablePointer<Float>
        public let attentionRstd: UnsafeMutablePointer<Float>
        /// qkv (N, (H + 2·KH)·D): q | k | v per row, after RoPE
        public let qkv: UnsafeMutablePointer<Float>
        /// att (N, H·D): attention output; lse (B, H, T): its softmax normalisers
        public let attention: UnsafeMutablePointer<Float>
        public let logsumexp: UnsafeMutablePointer<Float>
        /// resMid (N, C): residual after the attention half
        public let residualMid: UnsafeMutablePointer<Float>
        /// ln2 (N, C), rstd2 (N): post_attention_layernorm output and 1/rms
        public let mlpNormed: UnsafeMutablePointer<Float>
        public let mlpRstd: UnsafeMutablePointer<Float>
        /// gate, up, act (N, I): gate_proj and up_proj outputs, silu(gate)·up
        public let gate: UnsafeMutablePointer<Float>
        public let up: UnsafeMutablePointer<Float>
        public let activated: UnsafeMutablePointer<Float>
    }

    public let batch: Int
    public let length: Int
    public let layers: [Layer]
    /// resOut (N, C): the last block's output; lnf (N, C), rstdf (N): model.norm
    public let residualOut: UnsafeMutablePointer<Float>
    public let finalNormed: UnsafeMutablePointer<Float>
    public let finalRstd: UnsafeMutablePointer<Float>
    /// logits (N, V); dlogits (N, V): the loss gradient, input to the backward pass
    public let logits: UnsafeMutablePointer<Float>
    public let dlogits: UnsafeMutablePointer<Float>
    /// Gradient scratch: dres, dln (N, C), dqkv (N, (H + 2·KH)·D), datt (N, H·D),
    /// dgate, dup, dact (N, I)
    public let dResidual: UnsafeMutablePointer<Float>
    public let dNormed: UnsafeMutablePointer<Float>
    public let dQKV: UnsafeMutablePointer<Float>
    public let dAttention: UnsafeMutablePointer<Float>
    public let dGate: UnsafeMutablePointer<Float>
    public let dUp: UnsafeMutablePointer<Float>
    public let dActivated: UnsafeMutablePointer<Float>
    private let storage: UnsafeMutablePointer<Float>
    /// Floats held.
    public let count: Int

    /// Allocates buffers for `batch` × `length` tokens of a model with `config`'s widths.
    public init(batch B: Int, length T: Int, config c: ModelConfig) {
        batch = B
        length = T
        let N = B * T, C = c.hiddenSize, I = c.intermediateSize, V = c.vocabSize
        let H = c.headCount, D = c.headDim
        let W = (H + 2 * c.kvHeadCount) * D
        let perLayer = [N * C, N * C, N, N * W, N * H * D, B * H * T, N * C, N * C, N, N * I, N * I, N * I]
        let shared = [N * C, N * C, N, N * V, N * V, N * C, N * C, N * W, N * H * D, N * I, N * I, N * I]
        // Keep every slice 64-byte aligned (16 floats) for the SIMD kernels.
        func pad(_ n: Int) -> Int { (n + 15) / 16 * 16 }
        let layerFloats: Int = perLayer.map(pad).reduce(0, +)
        let sharedFloats: Int = shared.map(pad).reduce(0, +)
        let total = c.layerCount * layerFloats + sharedFloats
        count = total
        // Safe because the allocation is bound to Float here and freed in deinit.
        let base = UnsafeMutableRawPointer.allocate(byteCount: max(16, total) * 4, alignment: 64)
            .bindMemory(to: Float.self, capacity: max(16, total))
        base.initialize(repeating: 0, count: max(16, total))
        storage = base
        var o = 0
        func take(_ n: Int) -> UnsafeMutablePointer<Float> {
            defer { o += pad(n) }
            return base + o
        }
        var layers: [Layer] = []
        for _ in 0..<c.layerCount {
            layers.append(Layer(residualIn: take(N * C), attentionNormed: take(N * C), attentionRstd: take(N),
                                qkv: take(N * W), attention: take(N * H * D), logsumexp: take(B * H * T),
                                residualMid: take(N * C), mlpNormed: take(N * C), mlpRstd: take(N),
                                gate: take(N * I), up: take(N * I), activated: take(N * I)))
        }
        self.layers = layers
        residualOut = take(N * C); finalNormed = take(N * C); finalRstd = take(N)
        logits = take(N * V); dlogits = take(N * V)
        dResidual = take(N * C); dNormed = take(N * C); dQKV = take(N * W); dAttention = take(N * H * D)
        dGate = take(N * I); dUp = take(N * I); dActivated = take(N * I)
    }

    deinit { storage.deallocate() }
}
