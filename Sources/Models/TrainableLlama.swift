import Random
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Checkpoints
import Kernels

/// Where each tensor of a Llama-style model lives inside the one flat parameter buffer, in
/// the order a Hugging Face `LlamaForCausalLM` checkpoint lists them. Gradients and both
/// AdamW moments use the same layout, so one offset serves all four buffers.
public struct ParameterLayout: Sendable {
    /// One tensor's slice: Hugging Face name, row-major shape, first float.
    public struct Tensor: Sendable {
        public let name: String
        public let shape: [Int]
        public let offset: Int
        public var count: Int { shape.reduce(1, *) }
        public var range: Range<Int> { offset..<(offset + count) }
    }

    /// Offsets of one block's tensors.
    public struct BlockOffsets: Sendable {
        /// input_layernorm (C)
        public let attentionNorm: Int
        /// q_proj | k_proj | v_proj stacked: ((H + 2·KH)·D, C)
        public let qkv: Int
        /// o_proj (C, H·D)
        public let output: Int
        /// post_attention_layernorm (C)
        public let mlpNorm: Int
        /// gate_proj (I, C)
        public let gate: Int
        /// up_proj (I, C)
        public let up: Int
        /// down_proj (C, I)
        public let down: Int
    }

    public let tensors: [Tensor]
    /// embed_tokens (V, C)
    public let embedding: Int
    public let blocks: [BlockOffsets]
    /// model.norm (C)
    public let finalNorm: Int
    /// lm_head (V, C); equal to `embedding` when tied
    public let head: Int
    /// Total floats.
    public let count: Int

    /// The layout of `config`, which must be a Llama-family model without biases.
    public init(config c: ModelConfig) {
        let C = c.hiddenSize, V = c.vocabSize, I = c.intermediateSize
        let H = c.headCount, KH = c.kvHeadCount, D = c.headDim
        var list: [Tensor] = []
        var o = 0
        func add(_ name: String, _ shape: [Int]) -> Int {
            let t = Tensor(name: name, shape: shape, offset: o)
            list.append(t)
            o += t.count
            return t.offset
        }
        embedding = add("model.embed_tokens.weight", [V, C])
        var blocks: [BlockOffsets] = []
        for l in 0..<c.layerCount {
            let p = "model.layers.\(l)."
            let an = add(p + "input_layernorm.weight", [C])
            // q, k, v adjacent: one ((H+2KH)·D, C) matrix for one GEMM; exported as three.
            let q = add(p + "self_attn.q_proj.weight", [H * D, C])
            _ = add(p + "self_attn.k_proj.weight", [KH * D, C])
            _ = add(p + "self_attn.v_proj.weight", [KH * D, C])
            let out = add(p + "self_attn.o_proj.weight", [C, H * D])
            let mn = add(p + "post_attention_layernorm.weight", [C])
            let g = add(p + "mlp.gate_proj.weight", [I, C])
            let u = add(p + "mlp.up_proj.weight", [I, C])
            let d = add(p + "mlp.down_proj.weight", [C, I])
            blocks.append(BlockOffsets(attentionNorm: an, qkv: q, output: out, mlpNorm: mn, gate: g, up: u, down: d))
        }
        self.blocks = blocks
        finalNorm = add("model.norm.weight", [C])
        head = c.tieWordEmbeddings ? embedding : add("lm_head.weight", [V, C])
        tensors = list
        count = o
    }

    /// Ranges that take weight decay: every matrix (embeddings included, as nanoGPT), no norm.
    public var decayRanges: [Range<Int>] { tensors.filter { $0.shape.count == 2 }.map(\.range) }
}

/// A Llama-style causal LM that can be trained: parameters, gradients and the AdamW moments
/// each in one flat allocation (llm.c style), forward with saved activations and a backward
/// pass over the kernels' backward functions, in ``TrainableLlama/step``.
///
/// Supports `LlamaForCausalLM` without biases (tied or untied head, grouped-query heads).
/// Deterministic: results are identical for every thread count.
public final class TrainableLlama: @unchecked Sendable {
    // Not Sendable-checked because it owns raw buffers; one training loop uses it at a time.
    public let config: ModelConfig
    public let layout: ParameterLayout
    /// params (count) — the model's weights
    public let params: UnsafeMutablePointer<Float>
    /// grads (count) — accumulated by ``backward``; zeroed by ``zeroGradients()``
    public let grads: UnsafeMutablePointer<Float>
    let rope: RotaryEmbedding

    /// Number of parameters.
    public var parameterCount: Int { layout.count }

    /// N as scaling laws count it: every parameter but the token embedding and, when untied,
    /// the output head.
    public var nonEmbeddingParameterCount: Int {
        parameterCount - config.vocabSize * config.hiddenSize * (config.tieWordEmbeddings ? 1 : 2)
    }

    /// Refuses configurations the training graph does not implement.
    public static func check(_ c: ModelConfig) throws(ModelError) {
        guard c.family == .llama else {
            throw .invalidInput("training supports LlamaForCausalLM-style models only, not \(c.architecture)")
        }
        guard !c.qkvBias, !c.outputBias, !c.mlpBias else {
            throw .invalidInput("training does not support attention or MLP biases (\(c.architecture))")
        }
        guard c.headDim % 2 == 0, c.kvHeadCount > 0, c.headCount % c.kvHeadCount == 0 else {
            throw .invalidInput("head_dim must be even and heads a multiple of kv heads")
        }
    }

    /// A fresh model: llm.c/GPT-2 initialisation — matrices N(0, 0.02), the projections into
    /// the residual stream (o_proj, down_proj) N(0, 0.02/√(2L)), norms 1 — from `seed`.
    public init(config c: ModelConfig, seed: UInt64) throws(ModelError) {
        try Self.check(c)
        config = c
        layout = ParameterLayout(config: c)
        params = .allocate(capacity: layout.count)
        grads = .allocate(capacity: layout.count)
        grads.initialize(repeating: 0, count: layout.count)
        rope = Transformer.rotary(c, positions: min(c.maxPositions, 8192))
        var rng = SplitMix64(seed: seed)
        let residualStd = 0.02 / Float(2 * c.layerCount).squareRoot()
        for t in layout.tensors {
            let p = params + t.offset
            if t.shape.count == 1 {
                p.initialize(repeating: 1, count: t.count)
                continue
            }
            let isResidual = t.name.hasSuffix("o_proj.weight") || t.name.hasSuffix("down_proj.weight")
            let std: Float = isResidual ? residualStd : 0.02
            for i in 0..<t.count { (p + i).initialize(to: std * rng.nextGaussian()) }
        }
    }

    /// A model initialised from a Hugging Face checkpoint directory (any stored dtype).
    /// - Throws: `ModelError` naming the file and tensor for a missing or mis-shaped tensor or
    ///   an unsupported architecture.
    public convenience init(directory: String) throws(ModelError) {
        let checkpoint: ModelCheckpoint
        do { checkpoint = try ModelCheckpoint(directory: directory) } catch { throw .checkpoint(error) }
        try self.init(config: checkpoint.config, seed: 0)
        try load(from: checkpoint)
    }

    deinit { params.deallocate(); grads.deallocate() }

    /// Copies every tensor of `checkpoint` into ``params``.
    public func load(from checkpoint: ModelCheckpoint) throws(ModelError) {
        for t in layout.tensors {
            let view: TensorView
            do { view = try checkpoint.tensor(t.name) } catch { throw .checkpoint(error) }
            guard view.shape == t.shape else {
                throw .checkpoint(.tensor(file: view.file.path, tensor: t.name,
                                          reason: "shape \(view.shape), expected \(t.shape)"))
            }
            view.widen(into: UnsafeMutableBufferPointer(start: params + t.offset, count: t.count))
        }
    }

    /// The tensors as safetensors entries with Hugging Face names (float32).
    public func tensorEntries() -> [SafetensorsWriter.Entry] {
        layout.tensors.map { t in
            .init(name: t.name, shape: t.shape, values: Array(UnsafeBufferPointer(start: params + t.offset, count: t.count)))
        }
    }

    /// Writes `config.json` and `model.safetensors` into `directory` (which must exist), each
    /// atomically: a directory that `Transformer(directory:)` and transformers load.
    public func export(to directory: String, metadata: [String: String] = [:]) throws(CheckpointError) {
        try SafetensorsWriter.write(tensorEntries(), metadata: metadata.merging(["format": "pt"]) { a, _ in a },
                                    to: directory + "/model.safetensors")
        try config.write(to: directory + "/config.json")
    }

    /// Sets every gradient to zero.
    public func zeroGradients() { grads.update(repeating: 0, count: layout.count) }

    /// Floating-point operations of one training step (forward + backward ≈ 3 × forward)
    /// over `batch` windows of `length` tokens, counting a multiply-add as 2.
    public func trainingFLOPs(batch: Int, length: Int) -> Double {
        3 * forwardFLOPs(batch: batch, length: length)
    }

    /// Forward FLOPs, with the LM head and causal attention.
    public func forwardFLOPs(batch: Int, length T: Int) -> Double {
        let c = config
        let C = Double(c.hiddenSize), I = Double(c.intermediateSize), D = Double(c.headDim)
        let H = Double(c.headCount), KH = Double(c.kvHeadCount)
        let perToken = 2 * Double(c.layerCount) * (C * (H + 2 * KH) * D + H * D * C + 3 * C * I)
            + 2 * C * Double(c.vocabSize)
        let attention = 2 * Double(c.layerCount) * H * D * Double(T * (T + 1))  // q·k and p·v
        return Double(batch) * (Double(T) * perToken + attention)
    }
}

extension SplitMix64 {
    /// Standard normal (Box–Muller), deterministic for a seed.
    mutating func nextGaussian() -> Float {
        let u1 = max(Double(next() >> 11) * 0x1p-53, 0x1p-60), u2 = Double(next() >> 11) * 0x1p-53
        return Float((-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2))
    }
}
