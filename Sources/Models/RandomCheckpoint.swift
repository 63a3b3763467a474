import Random
import Checkpoints
import Kernels

/// Writes random-weight Hugging Face checkpoints: a `config.json` and a `model.safetensors`
/// with the tensor names and shapes transformers uses, loadable by ``Transformer`` and by
/// `from_pretrained`. Used by benchmarks (same model in Swift and PyTorch) and as a starting
/// point for students.
public enum RandomCheckpoint {
    /// Writes `config` with weights drawn uniformly with variance 1/fan_in (embeddings variance 1,
    /// norms 1, biases 0), deterministically from `seed`.
    public static func write(config c: ModelConfig, to directory: String, seed: UInt64 = 0,
                             dtype: FloatDType = .float32) throws(CheckpointError) {
        var rng = SplitMix64(seed: seed)
        var entries: [SafetensorsWriter.Entry] = []
        func matrix(_ name: String, _ rows: Int, _ columns: Int, fanIn: Int) {
            let a = Float((3.0 / Double(fanIn)).squareRoot())
            var values = [Float](repeating: 0, count: rows * columns)
            for i in values.indices { values[i] = a * rng.nextSymmetricUnit() }
            entries.append(.init(name: name, dtype: dtype, shape: [rows, columns], values: values))
        }
        func constant(_ name: String, _ count: Int, _ value: Float) {
            entries.append(.init(name: name, dtype: dtype, shape: [count], values: .init(repeating: value, count: count)))
        }
        let C = c.hiddenSize, V = c.vocabSize, I = c.intermediateSize
        let H = c.headCount, KH = c.kvHeadCount, D = c.headDim
        switch c.family {
        case .llama:
            matrix("model.embed_tokens.weight", V, C, fanIn: 1)
            for l in 0..<c.layerCount {
                let p = "model.layers.\(l)."
                constant(p + "input_layernorm.weight", C, 1)
                matrix(p + "self_attn.q_proj.weight", H * D, C, fanIn: C)
                matrix(p + "self_attn.k_proj.weight", KH * D, C, fanIn: C)
                matrix(p + "self_attn.v_proj.weight", KH * D, C, fanIn: C)
                if c.qkvBias {
                    constant(p + "self_attn.q_proj.bias", H * D, 0)
                    constant(p + "self_attn.k_proj.bias", KH * D, 0)
                    constant(p + "self_attn.v_proj.bias", KH * D, 0)
                }
                matrix(p + "self_attn.o_proj.weight", C, H * D, fanIn: H * D)
                if c.outputBias { constant(p + "self_attn.o_proj.bias", C, 0) }
                constant(p + "post_attention_layernorm.weight", C, 1)
                matrix(p + "mlp.gate_proj.weight", I, C, fanIn: C)
                matrix(p + "mlp.up_proj.weight", I, C, fanIn: C)
                matrix(p + "mlp.down_proj.weight", C, I, fanIn: I)
                if c.mlpBias {
                    constant(p + "mlp.gate_proj.bias", I, 0)
                    constant(p + "mlp.up_proj.bias", I, 0)
                    constant(p + "mlp.down_proj.bias", C, 0)
                }
            }
            constant("model.norm.weight", C, 1)
            if !c.tieWordEmbeddings { matrix("lm_head.weight", V, C, fanIn: C) }
        case .gpt2:
            matrix("transformer.wte.weight", V, C, fanIn: 1)
            matrix("transformer.wpe.weight", c.maxPositions, C, fanIn: 1)
            for l in 0..<c.layerCount {
                let p = "transformer.h.\(l)."
                // Conv1D weights are stored (in, out).
                for (name, inputs, outputs) in [("attn.c_attn", C, 3 * C), ("attn.c_proj", C, C),
                                                ("mlp.c_fc", C, I), ("mlp.c_proj", I, C)] {
                    matrix(p + name + ".weight", inputs, outputs, fanIn: inputs)
                    constant(p + name + ".bias", outputs, 0)
                }
                for norm in ["ln_1", "ln_2"] {
                    constant(p + norm + ".weight", C, 1)
                    constant(p + norm + ".bias", C, 0)
                }
            }
            constant("transformer.ln_f.weight", C, 1)
            constant("transformer.ln_f.bias", C, 0)
            if !c.tieWordEmbeddings { matrix("lm_head.weight", V, C, fanIn: C) }
        }
        try c.write(to: directory + "/config.json")
        try SafetensorsWriter.write(entries, metadata: ["format": "pt"], to: directory + "/model.safetensors")
    }
}

extension SplitMix64 {
    /// Uniform in [-1, 1) with 24 random bits (random checkpoints' weights).
    mutating func nextSymmetricUnit() -> Float {
        Float(next() >> 40) * 0x1p-23 - 1
    }
}
