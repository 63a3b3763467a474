extension ModelConfig {
    /// A Llama-family config (`LlamaForCausalLM`, no biases, no sliding window) for building
    /// models from scratch (benchmarks, student initialisation).
    public static func llama(vocabSize: Int, hiddenSize: Int, layerCount: Int, headCount: Int, kvHeadCount: Int,
                             headDim: Int? = nil, intermediateSize: Int, maxPositions: Int,
                             tieWordEmbeddings: Bool, ropeTheta: Double = 10_000, normEpsilon: Float = 1e-5)
        throws(CheckpointError) -> ModelConfig
    {
        var json: [String: JSONValue] = [
            "architectures": .array([.string("LlamaForCausalLM")]), "model_type": .string("llama"),
            "vocab_size": .integer(Int64(vocabSize)), "hidden_size": .integer(Int64(hiddenSize)),
            "num_hidden_layers": .integer(Int64(layerCount)), "num_attention_heads": .integer(Int64(headCount)),
            "num_key_value_heads": .integer(Int64(kvHeadCount)), "intermediate_size": .integer(Int64(intermediateSize)),
            "max_position_embeddings": .integer(Int64(maxPositions)), "tie_word_embeddings": .bool(tieWordEmbeddings),
            "rope_theta": .number(ropeTheta), "rms_norm_eps": .number(Double(normEpsilon)),
        ]
        if let headDim { json["head_dim"] = .integer(Int64(headDim)) }
        return try ModelConfig(json: json, file: "(built config)")
    }

    /// Writes ``jsonObject`` to `path` atomically (as `config.json` for a model directory).
    public func write(to path: String) throws(CheckpointError) {
        let bytes = Array((JSONValue.object(jsonObject).serialized + "\n").utf8)
        try SafetensorsWriter.writeAtomically(to: path) { fd in
            bytes.withUnsafeBytes { SafetensorsWriter.writeAll(fd, $0) }
        }
    }

    /// The config as transformers 5.x writes `config.json` (`rope_parameters`, `head_dim`),
    /// readable by `from_pretrained` and by ``init(path:)``.
    public var jsonObject: [String: JSONValue] {
        func int(_ v: Int) -> JSONValue { .integer(Int64(v)) }
        var o: [String: JSONValue] = [
            "architectures": .array([.string(architecture)]), "vocab_size": int(vocabSize),
            "tie_word_embeddings": .bool(tieWordEmbeddings), "dtype": .string("float32"),
        ]
        switch family {
        case .gpt2:
            o["model_type"] = .string("gpt2")
            o["n_embd"] = int(hiddenSize)
            o["n_layer"] = int(layerCount)
            o["n_head"] = int(headCount)
            o["n_positions"] = int(maxPositions)
            o["n_inner"] = int(intermediateSize)
            o["layer_norm_epsilon"] = .number(Double(normEpsilon))
            o["activation_function"] = .string("gelu_new")
        case .llama:
            let types = ["LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2", "MistralForCausalLM": "mistral"]
            o["model_type"] = .string(types[architecture] ?? "llama")
            o["hidden_size"] = int(hiddenSize)
            o["num_hidden_layers"] = int(layerCount)
            o["num_attention_heads"] = int(headCount)
            o["num_key_value_heads"] = int(kvHeadCount)
            o["head_dim"] = int(headDim)
            o["intermediate_size"] = int(intermediateSize)
            o["max_position_embeddings"] = int(maxPositions)
            o["rms_norm_eps"] = .number(Double(normEpsilon))
            o["hidden_act"] = .string("silu")
            var rope: [String: JSONValue] = ["rope_type": .string("default"), "rope_theta": .number(ropeTheta)]
            if let s = ropeScaling {
                rope = ["rope_type": .string("llama3"), "rope_theta": .number(ropeTheta), "factor": .number(s.factor),
                        "low_freq_factor": .number(s.lowFreqFactor), "high_freq_factor": .number(s.highFreqFactor),
                        "original_max_position_embeddings": int(s.originalMaxPositions)]
            }
            o["rope_parameters"] = .object(rope)
            if architecture != "Qwen2ForCausalLM" {
                o["attention_bias"] = .bool(qkvBias)
                o["mlp_bias"] = .bool(mlpBias)
            }
            if let w = slidingWindow {
                o["sliding_window"] = int(w)
                if architecture == "Qwen2ForCausalLM" { o["use_sliding_window"] = .bool(true) }
            } else {
                o["sliding_window"] = .null
            }
        }
        return o
    }
}
