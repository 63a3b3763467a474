import Checkpoints
import Kernels

/// A causal language model loaded from a Hugging Face model directory: the Llama family
/// (`LlamaForCausalLM`, `Qwen2ForCausalLM`, `MistralForCausalLM`) or `GPT2LMHeadModel`.
///
/// Weights are packed once at load (float16/bfloat16 widened then); embedding tables are read
/// in place from the memory-mapped checkpoint. The forward pass is prefill-only: B whole
/// windows of T tokens each, causal attention within each window, no KV cache.
///
/// Thread safety: immutable after load; concurrent forwards are safe (each allocates its own
/// activations), though each forward already uses every thread of its pool.
public final class Transformer: @unchecked Sendable {
    // Sendable because all state is immutable after init.
    public let config: ModelConfig
    /// Keeps the mapped files alive: embedding tables point into them.
    public let checkpoint: ModelCheckpoint
    let weights: TransformerWeights
    /// RoPE tables for windows up to `ropeLength` (Llama family only).
    let rope: RotaryEmbedding?
    let ropeLength: Int

    /// Windows longer than this are refused (`max_position_embeddings` / `n_positions`, and
    /// the sliding window when the model has one).
    public var maxWindow: Int {
        min(config.maxPositions, config.slidingWindow ?? Int.max)
    }

    /// Opens `directory` (config.json + safetensors) and packs every weight.
    /// - Throws: `ModelError.checkpoint` naming the file and tensor at fault: unsupported
    ///   architecture or dtype, missing tensor, shape not matching config.json.
    public convenience init(directory: String, pool: ThreadPool = ThreadPool()) throws(ModelError) {
        let checkpoint: ModelCheckpoint
        do { checkpoint = try ModelCheckpoint(directory: directory) } catch { throw .checkpoint(error) }
        try self.init(checkpoint: checkpoint, pool: pool)
    }

    /// Packs the weights of an opened checkpoint.
    public init(checkpoint: ModelCheckpoint, pool: ThreadPool = ThreadPool()) throws(ModelError) {
        self.checkpoint = checkpoint
        config = checkpoint.config
        do { weights = try TransformerWeights(checkpoint: checkpoint, pool: pool) } catch { throw .checkpoint(error) }
        if config.family == .llama {
            // Tables beyond 4096 positions are built per call, so huge context limits cost nothing at load.
            ropeLength = min(config.maxPositions, 4096)
            rope = Self.rotary(config, positions: ropeLength)
        } else {
            ropeLength = 0
            rope = nil
        }
    }

    static func rotary(_ c: ModelConfig, positions: Int) -> RotaryEmbedding {
        let scaling = c.ropeScaling.map {
            Llama3RopeScaling(factor: $0.factor, lowFrequencyFactor: $0.lowFreqFactor,
                              highFrequencyFactor: $0.highFreqFactor, originalMaxPositions: $0.originalMaxPositions)
        }
        return RotaryEmbedding(headDim: c.headDim, theta: c.ropeTheta, scaling: scaling, maxPositions: positions)
    }

    /// Width of the fused q|k|v rows: (H + 2·KH)·D.
    public var qkvWidth: Int { (config.headCount + 2 * config.kvHeadCount) * config.headDim }

    /// Allocates activations for `batch` windows of `length` tokens.
    public func makeActivations(batch: Int, length: Int) -> ForwardActivations {
        ForwardActivations(batch: batch, length: length, hidden: config.hiddenSize, qkvWidth: qkvWidth,
                           attentionWidth: config.headCount * config.headDim,
                           intermediate: config.intermediateSize, gated: config.family == .llama)
    }

    /// Floating-point operations of one forward over `batch` windows of `length` tokens,
    /// counting a multiply-add as 2 (matrix products, attention and the LM head).
    public func forwardFLOPs(batch: Int, length T: Int, includeHead: Bool = true) -> Double {
        let c = config
        let C = Double(c.hiddenSize), I = Double(c.intermediateSize), D = Double(c.headDim)
        let H = Double(c.headCount), KH = Double(c.kvHeadCount)
        let mlp = (c.family == .llama ? 3 : 2) * C * I
        let perToken = 2 * Double(c.layerCount) * (C * (H + 2 * KH) * D + H * D * C + mlp)
            + (includeHead ? 2 * C * Double(c.vocabSize) : 0)
        // Causal attention: Σ_t (t+1) dot products of length D for q·k and again for p·v.
        let attention = Double(c.layerCount) * 2 * 2 * H * D * Double(T) * Double(T + 1) / 2
        return Double(batch) * (perToken * Double(T) + attention)
    }
}
