import Checkpoints
import Kernels
import Testing
@testable import Models

/// Every fixture variant: name and what it exercises.
let parityFixtures = [
    "llama_gqa",            // grouped-query attention, untied head
    "llama_tied_mha",       // tied embeddings, H = KH, rope_theta 500000
    "llama_head_dim_bias",  // head_dim ≠ C/H, attention_bias and mlp_bias
    "llama3_rope_scaling",  // rope_type llama3
    "llama_sharded",        // model.safetensors.index.json over three shards
    "llama_bf16",           // bfloat16 weights (reference computed from the same rounded weights)
    "llama_f16",            // float16 weights
    "qwen2_bias",           // Qwen2: q/k/v biases, tied
    "mistral",              // Mistral without sliding window
    "gpt2",                 // LayerNorm, learned positions, Conv1D weights, GELU-tanh
]

@Suite struct ParityTests {
    /// max |logit − reference| <= 1e-4 × reference logit range, at 2 threads.
    @Test(arguments: parityFixtures)
    func logitsMatchTransformers(name: String) throws {
        let reference = try Reference(name)
        let model = try Transformer(directory: fixtureRoot + "/" + name, pool: ThreadPool(threadCount: 2))
        let logits = try model.logits(tokens: reference.tokens.flatMap { $0 }, batch: reference.tokens.count,
                                      pool: ThreadPool(threadCount: 2))
        #expect(logits.count == reference.logits.count)
        let lo = reference.logits.min() ?? 0, hi = reference.logits.max() ?? 0
        let worst = zip(logits, reference.logits).map { abs(Double($0) - Double($1)) }.max() ?? .infinity
        #expect(hi - lo > 1, "reference logits too flat to test anything")
        #expect(worst <= 1e-4 * Double(hi - lo), "\(name): max |diff| \(worst), range \(hi - lo)")
    }

    /// The fused head's top-16 ids equal the reference's wherever the 16th/17th gap exceeds the
    /// tolerance; its logits equal the full logits; its logsumexp matches a double-precision one.
    @Test(arguments: parityFixtures)
    func fusedTopKMatchesReference(name: String) throws {
        let reference = try Reference(name)
        let V = reference.vocab, k = 16
        let model = try Transformer(directory: fixtureRoot + "/" + name)
        let pool = ThreadPool(threadCount: 2)
        let tokens = reference.tokens.flatMap { $0 }
        let fused = try model.topK(tokens: tokens, batch: reference.tokens.count, k: k, pool: pool)
        let full = try model.logits(tokens: tokens, batch: reference.tokens.count, pool: pool)
        let range = Double((reference.logits.max() ?? 0) - (reference.logits.min() ?? 0))
        let tolerance = 1e-4 * range
        var compared = 0
        for r in 0..<tokens.count {
            let row = Array(reference.logits[(r * V)..<((r + 1) * V)])
            let order = row.indices.sorted { row[$0] > row[$1] }
            let ids = Array(fused.ids[(r * k)..<((r + 1) * k)])
            for (j, id) in ids.enumerated() {
                #expect(fused.logits[r * k + j] == full[r * V + Int(id)], "row \(r): fused logit differs from full logits")
            }
            if Double(row[order[k - 1]] - row[order[k]]) > 2 * tolerance {
                #expect(Set(ids.map(Int.init)) == Set(order.prefix(k)), "\(name) row \(r): top-\(k) sets differ")
                compared += 1
            }
            let m = Double(row[order[0]])
            let lse = m + log(row.reduce(0.0) { $0 + exp(Double($1) - m) })
            #expect(abs(Double(fused.logsumexp[r]) - lse) <= tolerance, "\(name) row \(r): logsumexp \(fused.logsumexp[r]) vs \(lse)")
        }
        #expect(compared >= tokens.count / 2, "\(name): only \(compared) rows had a clear top-\(k) gap")
    }

    @Test func resultsDoNotDependOnThreadCount() throws {
        let reference = try Reference("llama_gqa")
        let model = try Transformer(directory: fixtureRoot + "/llama_gqa")
        let tokens = reference.tokens.flatMap { $0 }
        let one = try model.logits(tokens: tokens, batch: 2, pool: ThreadPool(threadCount: 1))
        let two = try model.logits(tokens: tokens, batch: 2, pool: ThreadPool(threadCount: 2))
        #expect(one == two)
    }

    @Test func batchingDoesNotChangeAWindowsLogits() throws {
        let reference = try Reference("qwen2_bias")
        let model = try Transformer(directory: fixtureRoot + "/qwen2_bias")
        let both = try model.logits(tokens: reference.tokens.flatMap { $0 }, batch: 2)
        let second = try model.logits(tokens: reference.tokens[1], batch: 1)
        #expect(Array(both[(both.count / 2)...]) == second)
    }
}

import Foundation
