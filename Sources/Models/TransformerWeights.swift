import Checkpoints
import Kernels

/// A linear layer y = x · Wᵀ + b with W packed for the GEMM.
struct Linear: @unchecked Sendable {
    // Sendable because PackedMatrix and the bias are immutable after load.
    /// weight (out, in) packed
    let weight: PackedMatrix
    /// bias (out) or nil
    let bias: [Float]?
}

/// RMSNorm (bias nil) or LayerNorm weights.
struct Norm: Sendable {
    /// weight (C)
    let weight: [Float]
    /// bias (C), LayerNorm only
    let bias: [Float]?
}

/// One decoder block's parameters.
struct Block: @unchecked Sendable {
    let attentionNorm: Norm
    /// q, k, v projections fused: ((H + 2·KH)·D, C), rows q | k | v (Llama's three
    /// projections stacked at load; GPT-2's `c_attn` as stored).
    let qkv: Linear
    /// o_proj / c_proj: (C, H·D)
    let output: Linear
    let mlpNorm: Norm
    /// gate_proj (I, C) for Llama, c_fc (I, C) for GPT-2
    let mlpIn: Linear
    /// up_proj (I, C), Llama only
    let mlpUp: Linear?
    /// down_proj / c_proj: (C, I)
    let mlpOut: Linear
}

/// All parameters of a model, packed once at load. Half-precision tensors are widened while
/// packing; embedding tables are read in place from the memory-mapped checkpoint, so no
/// second full float32 copy of the model exists.
struct TransformerWeights: @unchecked Sendable {
    // Sendable because everything is immutable after load and the mapping outlives it.
    /// wte (V, C), read in place from the checkpoint
    let tokenTable: EmbeddingTable
    /// wpe (maxT, C), GPT-2 only, read in place
    let positionTable: EmbeddingTable?
    let blocks: [Block]
    let finalNorm: Norm
    /// lm_head (V, C) packed (the embedding matrix when tied)
    let head: PackedMatrix

    /// Loads and checks every tensor `config` implies from `checkpoint`.
    init(checkpoint: ModelCheckpoint, pool: ThreadPool) throws(CheckpointError) {
        let c = checkpoint.config
        let loader = TensorLoader(checkpoint: checkpoint, pool: pool)
        let C = c.hiddenSize, V = c.vocabSize, I = c.intermediateSize
        let H = c.headCount, KH = c.kvHeadCount, D = c.headDim
        var blocks: [Block] = []
        switch c.family {
        case .llama:
            tokenTable = try loader.table("model.embed_tokens.weight", rows: V, columns: C)
            positionTable = nil
            for l in 0..<c.layerCount {
                let p = "model.layers.\(l)."
                func linear(_ name: String, _ rows: Int, _ columns: Int, bias: Bool) throws(CheckpointError) -> Linear {
                    Linear(weight: try loader.packed(p + name + ".weight", rows: rows, columns: columns),
                           bias: bias ? try loader.vector(p + name + ".bias", count: rows) : nil)
                }
                // q, k and v packed as one (H + 2·KH)·D-row matrix: one GEMM instead of three.
                let qkvNames = ["q_proj", "k_proj", "v_proj"].map { p + "self_attn." + $0 }
                let qkvRows = [H * D, KH * D, KH * D]
                var qkvBias: [Float]?
                if c.qkvBias {
                    var b: [Float] = []
                    for (name, rows) in zip(qkvNames, qkvRows) { b += try loader.vector(name + ".bias", count: rows) }
                    qkvBias = b
                }
                let qkv = Linear(weight: try loader.packedRows(qkvNames.map { $0 + ".weight" }, rows: qkvRows, columns: C),
                                 bias: qkvBias)
                blocks.append(Block(
                    attentionNorm: Norm(weight: try loader.vector(p + "input_layernorm.weight", count: C), bias: nil),
                    qkv: qkv,
                    output: try linear("self_attn.o_proj", C, H * D, bias: c.outputBias),
                    mlpNorm: Norm(weight: try loader.vector(p + "post_attention_layernorm.weight", count: C), bias: nil),
                    mlpIn: try linear("mlp.gate_proj", I, C, bias: c.mlpBias),
                    mlpUp: try linear("mlp.up_proj", I, C, bias: c.mlpBias),
                    mlpOut: try linear("mlp.down_proj", C, I, bias: c.mlpBias)))
            }
            finalNorm = Norm(weight: try loader.vector("model.norm.weight", count: C), bias: nil)
            head = c.tieWordEmbeddings
                ? try loader.packed("model.embed_tokens.weight", rows: V, columns: C)
                : try loader.packed("lm_head.weight", rows: V, columns: C)

        case .gpt2:
            // save_pretrained writes "transformer.h.0…"; the original OpenAI export has no prefix.
            let t = checkpoint.contains("transformer.wte.weight") ? "transformer." : ""
            tokenTable = try loader.table(t + "wte.weight", rows: V, columns: C)
            positionTable = try loader.table(t + "wpe.weight", rows: c.maxPositions, columns: C)
            func norm(_ name: String) throws(CheckpointError) -> Norm {
                Norm(weight: try loader.vector(name + ".weight", count: C), bias: try loader.vector(name + ".bias", count: C))
            }
            // Conv1D stores W transposed, (in, out): pack it as such.
            func conv1D(_ name: String, inputs: Int, outputs: Int) throws(CheckpointError) -> Linear {
                Linear(weight: try loader.packed(name + ".weight", rows: outputs, columns: inputs, transposed: true),
                       bias: try loader.vector(name + ".bias", count: outputs))
            }
            for l in 0..<c.layerCount {
                let p = t + "h.\(l)."
                blocks.append(Block(
                    attentionNorm: try norm(p + "ln_1"),
                    qkv: try conv1D(p + "attn.c_attn", inputs: C, outputs: 3 * C),
                    output: try conv1D(p + "attn.c_proj", inputs: C, outputs: C),
                    mlpNorm: try norm(p + "ln_2"),
                    mlpIn: try conv1D(p + "mlp.c_fc", inputs: C, outputs: I),
                    mlpUp: nil,
                    mlpOut: try conv1D(p + "mlp.c_proj", inputs: I, outputs: C)))
            }
            finalNorm = try norm(t + "ln_f")
            head = c.tieWordEmbeddings
                ? try loader.packed(t + "wte.weight", rows: V, columns: C)
                : try loader.packed("lm_head.weight", rows: V, columns: C)
        }
        self.blocks = blocks
    }
}

/// Reads tensors from a checkpoint, checking each one's shape against what the config implies.
struct TensorLoader {
    let checkpoint: ModelCheckpoint
    let pool: ThreadPool

    func view(_ name: String, shape: [Int]) throws(CheckpointError) -> TensorView {
        let t = try checkpoint.tensor(name)
        guard t.shape == shape else {
            throw .tensor(file: t.file.path, tensor: name,
                          reason: "shape \(t.shape) does not match \(shape) implied by config.json")
        }
        return t
    }

    /// A small tensor (norm weight, bias) widened to float32.
    func vector(_ name: String, count: Int) throws(CheckpointError) -> [Float] {
        try view(name, shape: [count]).floats()
    }

    /// W (rows, columns) packed; `transposed` when the file stores it (columns, rows).
    func packed(_ name: String, rows: Int, columns: Int, transposed: Bool = false) throws(CheckpointError) -> PackedMatrix {
        let t = try view(name, shape: transposed ? [columns, rows] : [rows, columns])
        guard let base = t.bytes.baseAddress, rows > 0, columns > 0 else {
            throw .tensor(file: t.file.path, tensor: name, reason: "is empty")
        }
        return PackedMatrix(rows: rows, columns: columns, source: base, type: t.dtype.weightType,
                            layout: transposed ? .transposed : .rowMajor, pool: pool)
    }

    /// Several matrices with the same column count stacked by rows and packed as one:
    /// W = [W₀; W₁; …] (Σ rows, columns). Widens into a temporary the size of W (one layer's
    /// projection, not the model), since the packer reads a single source.
    func packedRows(_ names: [String], rows: [Int], columns: Int) throws(CheckpointError) -> PackedMatrix {
        let total = rows.reduce(0, +)
        var stacked = [Float](repeating: 0, count: total * columns)
        var offset = 0
        for (name, n) in zip(names, rows) {
            let t = try view(name, shape: [n, columns])
            stacked.withUnsafeMutableBufferPointer { buffer in
                // Safe because rows offset..<offset+n of the (total, columns) buffer hold exactly this tensor.
                t.widen(into: UnsafeMutableBufferPointer(rebasing: buffer[(offset * columns)..<((offset + n) * columns)]))
            }
            offset += n
        }
        return stacked.withUnsafeBufferPointer { buffer in
            // Safe because total·columns > 0 floats exist (the config's widths are positive).
            PackedMatrix(rows: total, columns: columns, float32: buffer.baseAddress!, pool: pool)
        }
    }

    /// A lookup table (rows, columns) read in place from the mapping.
    func table(_ name: String, rows: Int, columns: Int) throws(CheckpointError) -> EmbeddingTable {
        let t = try view(name, shape: [rows, columns])
        guard let base = t.bytes.baseAddress, rows > 0, columns > 0 else {
            throw .tensor(file: t.file.path, tensor: name, reason: "is empty")
        }
        return EmbeddingTable(base: base, type: t.dtype.weightType, rows: rows, columns: columns)
    }
}

extension FloatDType {
    /// The kernels' name for the same element type.
    var weightType: WeightType {
        switch self {
        case .float32: return .float32
        case .float16: return .float16
        case .bfloat16: return .bfloat16
        }
    }
}
