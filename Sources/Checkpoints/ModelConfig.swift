import Foundation

/// The transformer families `Models` implements.
public enum ModelFamily: String, Sendable {
    /// Pre-norm RMSNorm decoder with rotary positions, grouped-query attention and SwiGLU
    /// (`LlamaForCausalLM`, `Qwen2ForCausalLM`, `MistralForCausalLM`).
    case llama
    /// Pre-norm LayerNorm decoder with learned positions, fused QKV Conv1D weights and
    /// tanh-GELU (`GPT2LMHeadModel`).
    case gpt2
}

/// Llama 3's rotary frequency rule (`rope_type: "llama3"`): long wavelengths divided by
/// `factor`, short ones kept, the band between interpolated.
public struct Llama3RopeParameters: Sendable, Equatable {
    public var factor: Double
    public var lowFreqFactor: Double
    public var highFreqFactor: Double
    public var originalMaxPositions: Int

    public init(factor: Double, lowFreqFactor: Double, highFreqFactor: Double, originalMaxPositions: Int) {
        self.factor = factor
        self.lowFreqFactor = lowFreqFactor
        self.highFreqFactor = highFreqFactor
        self.originalMaxPositions = originalMaxPositions
    }
}

/// A Hugging Face `config.json`, reduced to what the forward pass needs and checked.
///
/// Reads both spellings transformers has written: 4.x (`rope_theta` and `rope_scaling` at the
/// top level) and 5.x (`rope_parameters`), and GPT-2's own names (`n_embd`, `n_layer`,
/// `n_head`, `n_positions`, `n_inner`, `layer_norm_epsilon`).
public struct ModelConfig: Sendable, Equatable {
    /// Supported `architectures[0]` values and their family.
    public static let supportedArchitectures: [String: ModelFamily] = [
        "LlamaForCausalLM": .llama, "Qwen2ForCausalLM": .llama, "MistralForCausalLM": .llama,
        "GPT2LMHeadModel": .gpt2,
    ]

    public var architecture: String
    public var family: ModelFamily
    public var vocabSize: Int
    /// Model width C.
    public var hiddenSize: Int
    public var layerCount: Int
    public var headCount: Int
    /// Key/value heads (grouped-query attention); equals `headCount` without GQA.
    public var kvHeadCount: Int
    /// Per-head width (`head_dim`, or `hiddenSize / headCount` when absent).
    public var headDim: Int
    /// MLP inner width.
    public var intermediateSize: Int
    /// Longest window the positions support (`max_position_embeddings` / `n_positions`).
    public var maxPositions: Int
    /// RMSNorm / LayerNorm epsilon.
    public var normEpsilon: Float
    /// Rotary base (llama family only).
    public var ropeTheta: Double
    /// Llama 3 frequency scaling, when the config asks for it.
    public var ropeScaling: Llama3RopeParameters?
    /// The LM head reuses the token embedding matrix.
    public var tieWordEmbeddings: Bool
    /// Biases on the q, k, v projections (Qwen2; Llama with `attention_bias`; GPT-2).
    public var qkvBias: Bool
    /// Bias on the attention output projection (Llama with `attention_bias`; GPT-2).
    public var outputBias: Bool
    /// Biases on the MLP projections (Llama with `mlp_bias`; GPT-2).
    public var mlpBias: Bool
    /// Sliding-window attention span when the model uses one; windows longer than it are refused.
    public var slidingWindow: Int?

    /// Reads and checks `config.json` at `path`.
    public init(path: String) throws(CheckpointError) {
        let file = try MappedFile(path: path)
        guard let json = JSONValue.parse(file.bytes), let members = json.object else {
            throw .config(file: path, reason: "not a valid JSON object")
        }
        try self.init(json: members, file: path)
    }

    /// Checks a parsed `config.json` object; `file` names it in errors.
    public init(json c: [String: JSONValue], file: String) throws(CheckpointError) {
        func fail(_ reason: String) -> CheckpointError { .config(file: file, reason: reason) }
        func present(_ key: String) -> JSONValue? {
            guard let v = c[key], v != .null else { return nil }
            return v
        }
        func int(_ key: String) throws(CheckpointError) -> Int? {
            guard let v = present(key) else { return nil }
            guard let i = v.int else { throw fail("'\(key)' is \(v.serialized), expected an integer") }
            return i
        }
        func required(_ key: String) throws(CheckpointError) -> Int {
            guard let i = try int(key) else { throw fail("missing '\(key)'") }
            guard i > 0 else { throw fail("'\(key)' is \(i), expected a positive integer") }
            return i
        }
        func double(_ key: String) throws(CheckpointError) -> Double? {
            guard let v = present(key) else { return nil }
            guard let d = v.double else { throw fail("'\(key)' is \(v.serialized), expected a number") }
            return d
        }
        /// A norm epsilon: finite and > 0 (a negative one gives NaN activations, far from the config).
        func epsilon(_ key: String, _ fallback: Double) throws(CheckpointError) -> Float {
            let e = try double(key) ?? fallback
            guard e.isFinite, e > 0, e < 1 else { throw fail("'\(key)' is \(e), expected a small positive number") }
            return Float(e)
        }
        func bool(_ key: String) throws(CheckpointError) -> Bool? {
            guard let v = present(key) else { return nil }
            guard let b = v.bool else { throw fail("'\(key)' is \(v.serialized), expected true or false") }
            return b
        }
        func string(_ key: String) -> String? { present(key)?.string }

        // Architecture: `architectures[0]`, or the model_type's causal-LM class when absent.
        let byModelType = ["llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
                           "mistral": "MistralForCausalLM", "gpt2": "GPT2LMHeadModel"]
        var architecture: String
        if case let .array(names)? = present("architectures"), let first = names.first?.string {
            architecture = first
        } else if let modelType = string("model_type"), let name = byModelType[modelType] {
            architecture = name
        } else {
            throw fail("no 'architectures' and no known 'model_type' (supported: \(Self.supportedArchitectures.keys.sorted().joined(separator: ", ")))")
        }
        guard let family = Self.supportedArchitectures[architecture] else {
            throw fail("architecture '\(architecture)' is not supported (supported: \(Self.supportedArchitectures.keys.sorted().joined(separator: ", ")))")
        }
        self.architecture = architecture
        self.family = family
        vocabSize = try required("vocab_size")
        slidingWindow = nil
        ropeScaling = nil

        switch family {
        case .gpt2:
            hiddenSize = try required("n_embd")
            layerCount = try required("n_layer")
            headCount = try required("n_head")
            kvHeadCount = headCount
            maxPositions = try required("n_positions")
            intermediateSize = try int("n_inner") ?? 4 * hiddenSize
            normEpsilon = try epsilon("layer_norm_epsilon", 1e-5)
            ropeTheta = 0
            tieWordEmbeddings = try bool("tie_word_embeddings") ?? true
            qkvBias = true
            outputBias = true
            mlpBias = true
            let act = string("activation_function") ?? "gelu_new"
            guard ["gelu_new", "gelu_pytorch_tanh", "gelu_fast"].contains(act) else {
                throw fail("activation_function '\(act)' is not supported (only the tanh GELU: gelu_new, gelu_pytorch_tanh)")
            }
            if try bool("scale_attn_by_inverse_layer_idx") == true {
                throw fail("scale_attn_by_inverse_layer_idx=true is not supported")
            }
            if try bool("scale_attn_weights") == false {
                throw fail("scale_attn_weights=false is not supported")
            }
            guard hiddenSize % headCount == 0 else {
                throw fail("n_embd \(hiddenSize) is not divisible by n_head \(headCount)")
            }
            headDim = hiddenSize / headCount

        case .llama:
            hiddenSize = try required("hidden_size")
            layerCount = try required("num_hidden_layers")
            headCount = try required("num_attention_heads")
            kvHeadCount = try int("num_key_value_heads") ?? headCount
            intermediateSize = try required("intermediate_size")
            maxPositions = try int("max_position_embeddings") ?? 2048
            normEpsilon = try epsilon("rms_norm_eps", 1e-6)
            tieWordEmbeddings = try bool("tie_word_embeddings") ?? false
            if let given = try int("head_dim") {
                headDim = given
            } else {
                guard hiddenSize % headCount == 0 else {
                    throw fail("hidden_size \(hiddenSize) is not divisible by num_attention_heads \(headCount) and no head_dim is given")
                }
                headDim = hiddenSize / headCount
            }
            guard kvHeadCount > 0, headCount % kvHeadCount == 0 else {
                throw fail("num_attention_heads \(headCount) is not a multiple of num_key_value_heads \(kvHeadCount)")
            }
            guard headDim > 0, headDim % 2 == 0 else { throw fail("head_dim \(headDim) must be positive and even for rotary positions") }
            let act = string("hidden_act") ?? "silu"
            guard act == "silu" || act == "swish" else {
                throw fail("hidden_act '\(act)' is not supported (only silu)")
            }
            if architecture == "Qwen2ForCausalLM" {
                qkvBias = true
                outputBias = false
                mlpBias = false
                if try bool("use_sliding_window") == true { slidingWindow = try int("sliding_window") }
            } else {
                let attentionBias = try bool("attention_bias") ?? false
                qkvBias = attentionBias
                outputBias = attentionBias
                mlpBias = try bool("mlp_bias") ?? false
                if architecture == "MistralForCausalLM" { slidingWindow = try int("sliding_window") }
            }
            (ropeTheta, ropeScaling) = try Self.rope(c, fail: fail)
        }
    }

    /// Rotary settings from 5.x `rope_parameters` or 4.x `rope_theta` + `rope_scaling`.
    private static func rope(_ c: [String: JSONValue], fail: (String) -> CheckpointError) throws(CheckpointError)
        -> (Double, Llama3RopeParameters?)
    {
        var parameters: [String: JSONValue] = [:]
        var source = "rope_scaling"
        if let p = c["rope_parameters"], p != .null {
            guard let o = p.object else { throw fail("'rope_parameters' is \(p.serialized), expected an object") }
            parameters = o
            source = "rope_parameters"
        } else if let s = c["rope_scaling"], s != .null {
            guard let o = s.object else { throw fail("'rope_scaling' is \(s.serialized), expected an object") }
            parameters = o
        }
        let thetaValue = parameters["rope_theta"] ?? c["rope_theta"]
        var theta = 10_000.0
        if let t = thetaValue, t != .null {
            guard let d = t.double, d > 0 else { throw fail("rope_theta is \(t.serialized), expected a positive number") }
            theta = d
        }
        if let partial = c["partial_rotary_factor"]?.double ?? parameters["partial_rotary_factor"]?.double, partial != 1 {
            throw fail("partial_rotary_factor \(partial) is not supported (only 1)")
        }
        let ropeType = parameters["rope_type"]?.string ?? parameters["type"]?.string ?? "default"
        switch ropeType {
        case "default":
            return (theta, nil)
        case "llama3":
            func number(_ key: String) throws(CheckpointError) -> Double {
                guard let d = parameters[key]?.double else { throw fail("\(source) of rope_type llama3 is missing '\(key)'") }
                return d
            }
            let scaling = Llama3RopeParameters(
                factor: try number("factor"), lowFreqFactor: try number("low_freq_factor"),
                highFreqFactor: try number("high_freq_factor"),
                originalMaxPositions: Int(try number("original_max_position_embeddings")))
            guard scaling.factor > 0, scaling.highFreqFactor > scaling.lowFreqFactor, scaling.lowFreqFactor > 0,
                  scaling.originalMaxPositions > 0
            else { throw fail("\(source) llama3 parameters are inconsistent: \(scaling)") }
            return (theta, scaling)
        default:
            throw fail("\(source) rope_type '\(ropeType)' is not supported (only default and llama3)")
        }
    }
}
