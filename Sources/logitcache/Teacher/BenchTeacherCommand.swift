import ArgumentParser
import Capture
import Checkpoints
import Foundation
import Kernels
import Models
import TeacherPass
import Tokenizers

/// `logitcache bench teacher`: the whole teacher pass beside the forward pass alone, on the
/// same model, windows, batching and threads.
struct BenchTeacherCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "teacher",
        abstract: "Teacher pass tokens/s beside the forward pass alone (capture + writing overhead).",
        discussion: """
            Defaults: a random-weight Llama teacher (4 layers, width 256, 8 heads, 4 KV heads, FFN 768)
            with the built-in tokenizer's vocabulary, over the built-in student-train corpus
            (first --windows windows). The forward baseline runs the same batches through the
            blocks and the plain LM head (full logits); the pass adds the fused top-K head,
            capture, compression, checksums and atomic shard writes.
            """)

    @Option(help: "Teacher model directory (default: a random model written to a temporary directory).") var model: String?
    @Option(help: "tokenizer.json.") var tokenizer = "Data/tokenizer.json"
    @Option(parsing: .upToNextOption, help: "Corpus paths.") var corpus = ["Data/corpus/student-train.jsonl.zst"]
    @Option(help: "Window length.") var context = 256
    @Option(help: "K of the top-k policy.") var topK = 64
    @Option(help: "Windows to process.") var windows = 48
    @Option(help: "Windows per forward call.") var batch = 4
    @Option(parsing: .upToNextOption, help: "Thread counts to measure.") var threads = [1, 2]
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        let tmp = NSTemporaryDirectory() + "logitcache-bench-teacher-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: tmp) }
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
        var modelDir = model ?? ""
        if model == nil {
            modelDir = tmp + "/teacher"
            try FileManager.default.createDirectory(atPath: modelDir, withIntermediateDirectories: true)
            let vocab = try TokenizerVocabulary.size(of: tokenizer)
            let c = try ModelConfig.llama(vocabSize: vocab, hiddenSize: 256, layerCount: 4, headCount: 8, kvHeadCount: 4,
                                          intermediateSize: 768, maxPositions: max(context, 256), tieWordEmbeddings: true)
            try RandomCheckpoint.write(config: c, to: modelDir, seed: 7)
        }
        var rows: [[String: Any]] = []
        for n in threads {
            var o = TeacherPassOptions(modelDirectory: modelDir, tokenizerPath: tokenizer, corpus: corpus, output: tmp + "/cache-\(n)")
            o.context = context
            o.policy = .topK(k: topK)
            o.threads = n
            o.windowsPerBatch = batch
            let job = try TeacherPassJob(options: o, windowLimit: windows)
            let forward = try job.forwardOnlySeconds()
            let started = Date()
            let manifest = try job.run()
            let pass = Date().timeIntervalSince(started)
            let tokens = Double(manifest.totals.tokens)
            rows.append(["threads": n, "tokens": Int(tokens), "forward_seconds": forward, "pass_seconds": pass,
                         "forward_tokens_per_second": tokens / forward, "pass_tokens_per_second": tokens / pass,
                         "overhead": pass / forward - 1, "bytes_per_token": Double(manifest.totals.bytes) / tokens])
        }
        if json {
            let data = try JSONSerialization.data(withJSONObject: ["benchmark": "teacher", "context": context, "k": topK,
                                                                   "results": rows], options: [.prettyPrinted, .sortedKeys])
            print(String(decoding: data, as: UTF8.self))
            return
        }
        print("teacher pass vs forward alone (context \(context), top-k \(topK), \(windows) windows, batch \(batch))")
        print("threads  tokens   forward tok/s   pass tok/s   overhead   B/token")
        for r in rows {
            print(String(format: "%7d  %6d   %13.0f   %10.0f   %7.1f%%   %7.1f", r["threads"] as! Int, r["tokens"] as! Int,
                         r["forward_tokens_per_second"] as! Double, r["pass_tokens_per_second"] as! Double,
                         100 * (r["overhead"] as! Double), r["bytes_per_token"] as! Double))
        }
    }
}

/// The id space of a tokenizer.json, for sizing a random teacher.
enum TokenizerVocabulary {
    static func size(of path: String) throws -> Int {
        try Tokenizers.Tokenizer(contentsOfFile: path).vocabularySize
    }
}
