import ArgumentParser
import Corpus
import Capture
import Checkpoints
import Foundation
import Kernels
import Models
import TeacherPass
import Tokenizers

/// `logitcache-bench teacher`: the whole teacher pass beside the forward pass alone, on the
/// same model, windows, batching and threads.
struct BenchTeacherCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "teacher",
        abstract: "Teacher pass tokens/s beside the forward pass alone (capture + writing overhead).",
        discussion: """
            Both sides run over the same windows (the first --windows of the corpus, tokenised
            once before either is timed), in the same batches of --batch windows, on a pool of
            the same --threads cutting every parallel loop into the same --chunks-per-thread
            chunks, with their buffers allocated once:
              forward  the model's forward pass: embedding, every block, the final norm and the
                       LM head as a plain GEMM writing the full (batch·T, V) logits — what any
                       pass must compute, and all that `logitcache logits` does.
              pass     `logitcache teacher` itself (TeacherPassJob.run): the same blocks, the
                       fused LM head (top-K + full-vocabulary logsumexp + next-token logit, no
                       full logits), capture (log-probs, captured mass), and the cache writer
                       (validation, quantisation, id dictionary, zstd, xxh3, atomic shard and
                       manifest publication with fsync) on its own writer thread.
            Columns: tok/s = tokens / best wall seconds of --repeats runs of each side,
            alternating; overhead = pass / forward - 1 on those best wall times; cpu s = the
            process's user + system CPU seconds of that best run (the pass's include its writer
            thread, which --threads does not count); cpu overhead compares them.
            Defaults: a random-weight Llama teacher (4 layers, width 256, 8 heads, 4 KV heads, FFN 768)
            with the built-in tokenizer's vocabulary, over the built-in student-train corpus.
            --shape smollm-135m instead writes a random-weight teacher with SmolLM-135M's shapes
            (30 layers, width 576, 9 heads, 3 KV heads, FFN 1536, vocabulary 49152, tied): the
            capture and writing cost per token is the same whatever the teacher, so a small
            teacher shows it at its largest and a realistic one shows what users pay.
            """)

    /// The random teacher written when --model is not given.
    enum Shape: String, ExpressibleByArgument, CaseIterable {
        case tiny, smollm135m = "smollm-135m"
    }

    @Option(help: "Teacher model directory (default: a random model written to a temporary directory).") var model: String?
    @Option(help: "Random teacher when --model is not given: tiny or smollm-135m.") var shape = Shape.tiny
    @Option(help: "tokenizer.json.") var tokenizer = "Data/tokenizer.json"
    @Option(parsing: .upToNextOption, help: "Corpus paths.") var corpus = ["Data/corpus/student-train.jsonl.zst"]
    @Option(help: "Window length.") var context = 256
    @Option(help: "K of the top-k policy.") var topK = 64
    @Option(help: "Windows to process.") var windows = 48
    @Option(help: "Windows per forward call.") var batch = 4
    @Option(parsing: .upToNextOption, help: "Thread counts to measure.") var threads = [1, 2]
    @Option(help: "Runs of each side per thread count (best kept).") var repeats = 3
    @Option(help: "Chunks per thread of every parallel loop, both sides (the pass's default: 4).")
    var chunksPerThread = TeacherPassOptions(modelDirectory: "", tokenizerPath: "", corpus: [], output: "").chunksPerThread
    @Flag(help: "Print JSON.") var json = false

    func validate() throws {
        guard repeats >= 1 else { throw ValidationError("--repeats must be at least 1") }
        guard chunksPerThread >= 1 else { throw ValidationError("--chunks-per-thread must be at least 1") }
        guard model == nil || shape == .tiny else { throw ValidationError("--shape chooses a random teacher; it cannot be combined with --model") }
        guard windows >= 1, batch >= 1 else { throw ValidationError("--windows and --batch must be at least 1") }
        guard threads.allSatisfy({ $0 >= 1 }) else { throw ValidationError("--threads must list positive counts") }
    }

    struct Row: Codable {
        var threads: Int
        var tokens: Int
        var forwardSeconds: Double
        var passSeconds: Double
        var forwardCPUSeconds: Double
        var passCPUSeconds: Double
        var forwardTokensPerSecond: Double
        var passTokensPerSecond: Double
        /// pass / forward − 1, best wall times.
        var overhead: Double
        /// pass / forward − 1, CPU seconds of the best runs.
        var cpuOverhead: Double
        var bytesPerToken: Double
        /// Every run's wall seconds, in order.
        var forwardRuns: [Double]
        var passRuns: [Double]
    }

    func run() throws {
        let tmp = NSTemporaryDirectory() + "logitcache-bench-teacher-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: tmp) }
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
        var modelDir = model ?? ""
        if model == nil {
            modelDir = tmp + "/teacher"
            try FileManager.default.createDirectory(atPath: modelDir, withIntermediateDirectories: true)
            let vocab = try TokenizerVocabulary.size(of: tokenizer)
            let c = switch shape {
            case .tiny:
                try ModelConfig.llama(vocabSize: vocab, hiddenSize: 256, layerCount: 4, headCount: 8, kvHeadCount: 4,
                                      intermediateSize: 768, maxPositions: max(context, 256), tieWordEmbeddings: true)
            case .smollm135m:
                // A padded vocabulary, as checkpoints have: the tokenizer's ids are a prefix of it.
                try ModelConfig.llama(vocabSize: max(vocab, 49152), hiddenSize: 576, layerCount: 30, headCount: 9,
                                      kvHeadCount: 3, intermediateSize: 1536, maxPositions: max(context, 2048),
                                      tieWordEmbeddings: true)
            }
            try RandomCheckpoint.write(config: c, to: modelDir, seed: 7)
        }
        var rows: [Row] = []
        let loadBefore = loadAverage()
        for n in threads {
            var o = TeacherPassOptions(modelDirectory: modelDir, tokenizerPath: tokenizer, corpus: corpus, output: tmp + "/cache-\(n)")
            o.context = context
            o.policy = .topK(k: topK)
            o.threads = n
            o.chunksPerThread = chunksPerThread
            o.windowsPerBatch = batch
            let job = try TeacherPassJob(options: o, windowLimit: windows)
            // One untimed forward: page the weights in and size every buffer.
            _ = try job.forwardOnlySeconds()
            var forward: [(wall: Double, cpu: Double)] = [], pass: [(wall: Double, cpu: Double)] = []
            var tokens = 0, bytes = 0
            for _ in 0..<repeats {
                forward.append(try measure { _ = try job.forwardOnlySeconds() })
                try? FileManager.default.removeItem(atPath: o.output)  // a fresh cache each time, not a resume
                pass.append(try measure {
                    let m = try job.run()
                    tokens = m.totals.tokens; bytes = m.totals.bytes
                })
            }
            let f = forward.min { $0.wall < $1.wall }!, p = pass.min { $0.wall < $1.wall }!  // Safe because repeats >= 1.
            let t = Double(tokens)
            rows.append(Row(threads: n, tokens: tokens, forwardSeconds: f.wall, passSeconds: p.wall,
                            forwardCPUSeconds: f.cpu, passCPUSeconds: p.cpu,
                            forwardTokensPerSecond: t / f.wall, passTokensPerSecond: t / p.wall,
                            overhead: p.wall / f.wall - 1, cpuOverhead: p.cpu / f.cpu - 1,
                            bytesPerToken: Double(bytes) / max(t, 1),
                            forwardRuns: forward.map(\.wall), passRuns: pass.map(\.wall)))
        }
        if json {
            struct Report: Codable { var benchmark = "teacher"; var teacher: String; var context: Int; var k: Int; var windows: Int; var batch: Int
                                     var repeats: Int; var chunksPerThread: Int; var loadAverage: [Double]; var results: [Row] }
            let e = JSONEncoder()
            e.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try e.encode(Report(teacher: model ?? "random \(shape.rawValue)", context: context, k: topK, windows: windows, batch: batch,
                                                       repeats: repeats, chunksPerThread: chunksPerThread, loadAverage: [loadBefore, loadAverage()],
                                                       results: rows)), as: UTF8.self))
            return
        }
        print("teacher pass vs forward alone (teacher \(model ?? "random " + shape.rawValue), context \(context), top-k \(topK), \(windows) windows, batch \(batch), "
              + "\(chunksPerThread) chunks per thread, best of \(repeats))")
        print("threads  tokens  forward tok/s  pass tok/s  overhead  forward cpu s  pass cpu s  cpu overhead  B/token")
        for r in rows {
            print(String(format: "%7d  %6d  %13.0f  %10.0f  %7.1f%%  %13.3f  %10.3f  %11.1f%%  %7.1f", r.threads, r.tokens,
                         r.forwardTokensPerSecond, r.passTokensPerSecond, 100 * r.overhead,
                         r.forwardCPUSeconds, r.passCPUSeconds, 100 * r.cpuOverhead, r.bytesPerToken))
        }
        print("forward = blocks + plain LM head (full logits); pass = blocks + fused top-K head + capture + cache writer thread.")
        print(String(format: "1-minute load average %.2f before, %.2f after (other work on the machine skews both sides)",
                     loadBefore, loadAverage()))
    }

    /// Wall and process CPU seconds of `body`.
    func measure(_ body: () throws -> Void) rethrows -> (wall: Double, cpu: Double) {
        let c0 = processCPUSeconds(), t0 = now()
        try body()
        return (now() - t0, processCPUSeconds() - c0)
    }
}

/// The id space of a tokenizer.json, for sizing a random teacher.
enum TokenizerVocabulary {
    static func size(of path: String) throws -> Int {
        try Tokenizers.Tokenizer(contentsOfFile: path).vocabularySize
    }
}
