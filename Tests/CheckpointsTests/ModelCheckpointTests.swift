import Foundation
import Testing
@testable import Checkpoints

/// The model fixtures written by tools/make_model_fixtures.py (shared with ModelsTests).
let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("ModelsTests/Fixtures").path

func config(_ json: String) throws -> ModelConfig {
    guard let object = JSONValue.parse(Array(json.utf8))?.object else { throw CheckpointError.config(file: "test", reason: "bad test JSON") }
    return try ModelConfig(json: object, file: "config.json")
}

func configError(_ json: String) -> String? {
    do {
        _ = try config(json)
        return nil
    } catch {
        return "\(error)"
    }
}

@Suite struct ModelConfigTests {
    @Test func transformers5LlamaConfigWithLlama3Scaling() throws {
        let c = try ModelConfig(path: fixtures + "/llama3_rope_scaling/config.json")
        #expect(c.family == .llama)
        #expect(c.architecture == "LlamaForCausalLM")
        #expect([c.vocabSize, c.hiddenSize, c.layerCount, c.headCount, c.kvHeadCount, c.headDim, c.intermediateSize]
                == [320, 64, 2, 4, 2, 16, 96] as [Int])
        #expect(c.normEpsilon == 1e-5)
        #expect(c.ropeTheta == 10000)
        #expect(c.ropeScaling == Llama3RopeParameters(factor: 4, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 16))
        #expect(!c.tieWordEmbeddings && !c.qkvBias && !c.outputBias && !c.mlpBias)
    }

    @Test func transformers4SpellingReadsTheSame() throws {
        let c = try config("""
        {"architectures": ["LlamaForCausalLM"], "vocab_size": 128256, "hidden_size": 2048,
         "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
         "intermediate_size": 8192, "max_position_embeddings": 131072, "rms_norm_eps": 1e-05,
         "rope_theta": 500000.0, "tie_word_embeddings": true, "head_dim": 64,
         "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                          "original_max_position_embeddings": 8192, "rope_type": "llama3"}}
        """)
        #expect(c.ropeTheta == 500000)
        #expect(c.ropeScaling == Llama3RopeParameters(factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8192))
        #expect(c.tieWordEmbeddings && c.kvHeadCount == 8 && c.headDim == 64)
        let plain = try config(#"{"model_type": "llama", "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16, "rope_scaling": null}"#)
        #expect(plain.ropeTheta == 10000 && plain.ropeScaling == nil && plain.kvHeadCount == 2 && plain.headDim == 4)
    }

    @Test func qwen2MistralAndGPT2Options() throws {
        let q = try ModelConfig(path: fixtures + "/qwen2_bias/config.json")
        #expect(q.qkvBias && !q.outputBias && q.tieWordEmbeddings && q.ropeTheta == 1_000_000 && q.normEpsilon == 1e-6)
        #expect(q.slidingWindow == nil)
        let m = try ModelConfig(path: fixtures + "/mistral/config.json")
        #expect(m.architecture == "MistralForCausalLM" && m.slidingWindow == nil && !m.qkvBias)
        let b = try ModelConfig(path: fixtures + "/llama_head_dim_bias/config.json")
        #expect(b.headDim == 24 && b.qkvBias && b.outputBias && b.mlpBias)
        let g = try ModelConfig(path: fixtures + "/gpt2/config.json")
        #expect(g.family == .gpt2)
        #expect([g.vocabSize, g.hiddenSize, g.layerCount, g.headCount, g.headDim, g.intermediateSize, g.maxPositions]
                == [300, 64, 2, 4, 16, 256, 64] as [Int])
        #expect(g.tieWordEmbeddings && g.normEpsilon == 1e-5)
        let slid = try config(#"{"architectures": ["MistralForCausalLM"], "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16, "sliding_window": 4096}"#)
        #expect(slid.slidingWindow == 4096)
    }

    @Test func unsupportedOrBrokenConfigsNameTheProblem() {
        let base = #""vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16"#
        #expect(configError(#"{"architectures": ["BertForMaskedLM"], \#(base)}"#)?
            .contains("architecture 'BertForMaskedLM' is not supported") == true)
        #expect(configError(#"{"architectures": ["LlamaForCausalLM"], "vocab_size": 10}"#)?.contains("missing 'hidden_size'") == true)
        #expect(configError(#"{"architectures": ["LlamaForCausalLM"], \#(base), "rope_parameters": {"rope_type": "yarn", "factor": 2.0}}"#)?
            .contains("rope_parameters rope_type 'yarn' is not supported") == true)
        #expect(configError(#"{"architectures": ["LlamaForCausalLM"], \#(base), "rope_scaling": {"rope_type": "llama3", "factor": 8.0}}"#)?
            .contains("rope_scaling of rope_type llama3 is missing 'low_freq_factor'") == true)
        #expect(configError(#"{"architectures": ["LlamaForCausalLM"], \#(base), "num_key_value_heads": 3}"#)?
            .contains("not a multiple of num_key_value_heads 3") == true)
        #expect(configError(#"{"architectures": ["LlamaForCausalLM"], \#(base), "hidden_act": "gelu"}"#)?
            .contains("hidden_act 'gelu' is not supported") == true)
        #expect(configError(#"{"architectures": ["LlamaForCausalLM"], \#(base), "head_dim": "big"}"#)?
            .contains("'head_dim' is \"big\", expected an integer") == true)
        #expect(configError(#"{"architectures": ["GPT2LMHeadModel"], "vocab_size": 10, "n_embd": 8, "n_layer": 1, "n_head": 2, "n_positions": 16, "activation_function": "relu"}"#)?
            .contains("activation_function 'relu' is not supported") == true)
    }
}

@Suite struct ModelCheckpointTests {
    @Test func shardedIndexLoadsEveryTensorFromItsShard() throws {
        let sharded = try ModelCheckpoint(directory: fixtures + "/llama_sharded")
        #expect(sharded.files.count == 3)
        #expect(sharded.tensorNames.count == 2 * 9 + 3)
        let embed = try sharded.tensor("model.embed_tokens.weight")
        #expect(embed.shape == [256, 64])
        #expect(try sharded.tensor("lm_head.weight").file.path.hasSuffix(".safetensors"))
        #expect(throws: CheckpointError.tensor(file: fixtures + "/llama_sharded", tensor: "model.nope", reason: "missing from the checkpoint")) {
            try sharded.tensor("model.nope")
        }
    }

    @Test func indexNamingFilesOutsideTheDirectoryOrMissingTensorsIsRefused() throws {
        let dir = temporaryDirectory()
        try FileManager.default.copyItem(atPath: fixtures + "/llama_gqa/config.json", toPath: dir + "/config.json")
        let index = dir + "/model.safetensors.index.json"
        write(Array(#"{"metadata": {}, "weight_map": {"a": "../elsewhere.safetensors"}}"#.utf8), to: index)
        #expect(throws: CheckpointError.tensor(file: index, tensor: "a", reason: "shard '../elsewhere.safetensors' is not a plain file name in the model directory")) {
            try ModelCheckpoint(directory: dir)
        }
        try SafetensorsWriter.write([.init(name: "b", shape: [1], values: [1])], to: dir + "/s1.safetensors")
        write(Array(#"{"weight_map": {"a": "s1.safetensors"}}"#.utf8), to: index)
        #expect(throws: CheckpointError.tensor(file: dir + "/s1.safetensors", tensor: "a", reason: "listed in \(index) but not in this shard")) {
            try ModelCheckpoint(directory: dir)
        }
        try FileManager.default.removeItem(atPath: index)
        #expect(throws: CheckpointError.malformed(file: dir, reason: "neither model.safetensors nor model.safetensors.index.json is in this directory")) {
            try ModelCheckpoint(directory: dir)
        }
    }
}
