import ArgumentParser
import Foundation
import CommandLineSupport
import Kernels
import Models

/// `logitcache logits`: one window through a model; full logits or the fused top-K head.
struct LogitsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "logits",
        abstract: "Run one token sequence through a Hugging Face model directory and print its logits.",
        discussion: """
        Without --top-k: every position's full logits ({"logits": [[...]]} with --json).
        With --top-k K: the K largest logits per position, descending, and the full-vocabulary
        logsumexp ({"topk_ids", "topk_logits", "logsumexp"}), from the fused LM head.
        """)

    @Option(help: "Model directory: config.json plus model.safetensors or model.safetensors.index.json.")
    var model: String

    @Option(help: "Comma-separated token ids, e.g. 1,2,3.")
    var tokens: String

    @Option(name: .customLong("top-k"), help: "Print only the K largest logits per position and the logsumexp.")
    var topK: Int?

    @Option(help: "Worker threads (default: every core).")
    var threads: Int = ThreadPool.defaultThreadCount

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    func validate() throws {
        if let topK, topK < 1 { throw ValidationError("--top-k must be at least 1, got \(topK)") }
        if threads < 1 { throw ValidationError("--threads must be at least 1, got \(threads)") }
        _ = try Self.parseTokens(tokens)
    }

    func run() throws {
        let ids = try Self.parseTokens(tokens)
        let pool = ThreadPool(threadCount: threads)
        let transformer = try Transformer(directory: model, pool: pool)
        let V = transformer.config.vocabSize
        if let k = topK {
            let top = try transformer.topK(tokens: ids, k: min(k, V), pool: pool)
            let k = top.k
            let rows = ids.indices.map { r in (Array(top.ids[(r * k)..<((r + 1) * k)]), Array(top.logits[(r * k)..<((r + 1) * k)])) }
            if json {
                print("{\"topk_ids\": [" + rows.map { "[" + $0.0.map(String.init).joined(separator: ", ") + "]" }.joined(separator: ", ")
                      + "], \"topk_logits\": [" + rows.map { "[" + $0.1.map(jsonNumber).joined(separator: ", ") + "]" }.joined(separator: ", ")
                      + "], \"logsumexp\": [" + top.logsumexp.map(jsonNumber).joined(separator: ", ") + "]}")
            } else {
                print("position  token  logsumexp  top-\(k) (id: log-prob)")
                for (r, row) in rows.enumerated() {
                    let entries = zip(row.0, row.1).map { "\($0): \(format($1 - top.logsumexp[r], 3))" }
                    print("\(pad(r, 8))  \(pad(Int(ids[r]), 5))  \(pad(format(top.logsumexp[r], 4), 9))  " + entries.joined(separator: "  "))
                }
            }
        } else {
            let logits = try transformer.logits(tokens: ids, pool: pool)
            if json {
                print("{\"logits\": [" + ids.indices.map { r in
                    "[" + logits[(r * V)..<((r + 1) * V)].map(jsonNumber).joined(separator: ", ") + "]"
                }.joined(separator: ", ") + "]}")
            } else {
                print("position  token  argmax  max logit  logsumexp   (\(V) logits per position; --json prints them all)")
                for r in ids.indices {
                    let row = logits[(r * V)..<((r + 1) * V)]
                    let best = row.indices.max { row[$0] < row[$1] } ?? r * V
                    let m = row[best]
                    let lse = m + log(row.reduce(Float(0)) { $0 + exp($1 - m) })
                    print("\(pad(r, 8))  \(pad(Int(ids[r]), 5))  \(pad(best - r * V, 6))  \(pad(format(m, 4), 9))  \(pad(format(lse, 4), 9))")
                }
            }
        }
    }

    /// "1, 2,3" → [1, 2, 3]; anything else is a usage error naming the bad item.
    static func parseTokens(_ text: String) throws -> [Int32] {
        let items = text.split(separator: ",", omittingEmptySubsequences: false)
        var ids: [Int32] = []
        for (i, item) in items.enumerated() {
            let trimmed = item.trimmingCharacters(in: .whitespaces)
            guard let id = Int32(trimmed), id >= 0 else {
                throw ValidationError("--tokens item \(i + 1) ('\(trimmed)') is not a non-negative integer token id")
            }
            ids.append(id)
        }
        guard !ids.isEmpty else { throw ValidationError("--tokens is empty") }
        return ids
    }
}

