import Checkpoints
import Foundation
import Kernels
import Testing
@testable import Models

/// The error loading `dir` gives, as text (nil when it loads).
func loadError(_ dir: String) -> String? {
    do {
        _ = try Transformer(directory: dir, pool: .serial)
        return nil
    } catch {
        return error.description
    }
}

@Suite struct LoadErrorTests {
    @Test func missingTensorIsNamed() throws {
        let dir = try copyFixture("llama_gqa")
        try rewriteWeights(dir) { $0.removeAll { $0.name == "model.layers.1.mlp.up_proj.weight" } }
        #expect(loadError(dir) == "\(dir)/model.safetensors: tensor 'model.layers.1.mlp.up_proj.weight': missing from the checkpoint")
    }

    @Test func misShapedTensorIsNamedWithBothShapes() throws {
        let dir = try copyFixture("llama_gqa")
        try rewriteWeights(dir) { entries in
            for i in entries.indices where entries[i].name == "model.layers.0.self_attn.k_proj.weight" {
                entries[i].shape = [64, 32]
            }
        }
        #expect(loadError(dir) == "\(dir)/model.safetensors: tensor 'model.layers.0.self_attn.k_proj.weight': shape [64, 32] does not match [32, 64] implied by config.json")
    }

    @Test func untiedModelWithoutHeadIsRefused() throws {
        let dir = try copyFixture("mistral")
        try rewriteWeights(dir) { $0.removeAll { $0.name == "lm_head.weight" } }
        #expect(loadError(dir)?.contains("tensor 'lm_head.weight': missing from the checkpoint") == true)
    }

    @Test func unsupportedDtypeIsNamed() throws {
        let dir = try copyFixture("gpt2")
        // Same byte count, so the file stays well-formed: only the dtype is wrong.
        let path = dir + "/model.safetensors"
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        let header = String(decoding: bytes[8..<min(bytes.count, 8 + 4096)], as: UTF8.self)
        let needle = #""transformer.ln_f.weight":{"dtype":"F32""#
        guard let range = header.range(of: needle) else { Issue.record("fixture header layout changed"); return }
        let offset = 8 + header.utf8.distance(from: header.startIndex, to: range.upperBound) - 4
        bytes.replaceSubrange(offset..<(offset + 3), with: Array("I32".utf8))
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        #expect(loadError(dir) == "\(path): tensor 'transformer.ln_f.weight': dtype I32 is not supported (only F32, F16, BF16)")
    }

    @Test func unsupportedArchitectureIsNamed() throws {
        let dir = try copyFixture("llama_gqa")
        let path = dir + "/config.json"
        let text = try String(contentsOfFile: path, encoding: .utf8).replacingOccurrences(of: "LlamaForCausalLM", with: "GemmaForCausalLM")
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        #expect(loadError(dir)?.hasPrefix("\(path): architecture 'GemmaForCausalLM' is not supported") == true)
    }

    @Test func truncatedWeightsAreRefused() throws {
        let dir = try copyFixture("qwen2_bias")
        let path = dir + "/model.safetensors"
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        try bytes.prefix(bytes.count - 1000).write(to: URL(fileURLWithPath: path))
        #expect(loadError(dir)?.contains("(truncated?)") == true)
        #expect(loadError(dir)?.hasPrefix(path) == true)
    }

    @Test func badInputsGiveErrorsNotCrashes() throws {
        let model = try Transformer(directory: fixtureRoot + "/gpt2", pool: .serial)
        #expect(throws: ModelError.kernel(.tokenOutOfRange(row: 2, id: 300, vocab: 300))) {
            try model.logits(tokens: [1, 2, 300, 4], pool: .serial)
        }
        #expect(throws: ModelError.invalidInput("window of 65 tokens exceeds the model's 64 positions")) {
            try model.logits(tokens: .init(repeating: 1, count: 65), pool: .serial)
        }
        #expect(throws: ModelError.invalidInput("5 tokens do not split into 2 windows of equal, non-zero length")) {
            try model.logits(tokens: [1, 2, 3, 4, 5], batch: 2, pool: .serial)
        }
        #expect(throws: ModelError.invalidInput("k = 301 is outside 1...300 (the vocabulary)")) {
            try model.topK(tokens: [1, 2], k: 301, pool: .serial)
        }
    }

    /// The llama3 fixture really exercises the scaling rule: dropping it moves the logits far
    /// past the parity tolerance.
    @Test func llama3ScalingChangesTheLogits() throws {
        let reference = try Reference("llama3_rope_scaling")
        let dir = try copyFixture("llama3_rope_scaling")
        let path = dir + "/config.json"
        let text = try String(contentsOfFile: path, encoding: .utf8).replacingOccurrences(of: "\"llama3\"", with: "\"default\"")
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        let model = try Transformer(directory: dir)
        let logits = try model.logits(tokens: reference.tokens.flatMap { $0 }, batch: 2)
        let worst = zip(logits, reference.logits).map { abs($0 - $1) }.max() ?? 0
        #expect(worst > 1e-2)
    }
}
