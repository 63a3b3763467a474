import ArgumentParser
import CommandLineSupport
import Corpus
import Capture
import Foundation
import Truncation
import Kernels
import ShardFormat
import TeacherPass

/// `logitcache teacher`: the one teacher pass — corpus in, cached teacher targets out.
struct TeacherCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "teacher",
        abstract: "Run the teacher once over a corpus and cache its next-token distributions.",
        discussion: """
            Resumable: rerun the same command after an interruption and it continues after the
            last published shard. Scale-out: --partition i/N (or Slurm job-array / Kubernetes
            Indexed Job variables) runs one of N parts; `logitcache merge CACHE` joins them.
            Policies: top-k (default, K=64), top-p (--top-p P, at most --top-k ids), sampled
            (--samples N draws), head-tail (--top-k K and --samples N with --policy head-tail: draws from
            the mass outside the head), top-k+sampled (--policy top-k+sampled: a top-K head and, beside
            it, draws from the whole distribution, so one pass serves top-k and sampled students).
            """)

    @Option(help: "Hugging Face model directory (config.json + safetensors).") var model: String
    @Option(help: "tokenizer.json of the model.") var tokenizer: String
    @Option(parsing: .upToNextOption, help: "Corpus files, directories or globs (.txt, .jsonl, .bin, .u16, .u32).")
    var corpus: [String]
    @Option(help: "Cache directory to write.") var out: String
    @Option(help: "Window length in tokens.") var context = 512
    @Option(help: "Most entries per token (K).") var topK: Int?
    @Option(help: "Keep the shortest prefix reaching this probability mass (at most --top-k ids).") var topP: Double?
    @Option(help: "Draws per token for sampled targets.") var samples: Int?
    @Option(help: "top-k | top-p | sampled | head-tail | top-k+sampled (inferred from the other options when absent).") var policy: String?
    @Option(help: "Capture temperature.") var temperature: Float = 1
    @Option(help: "Seed of sampled draws.") var seed: UInt64 = 0
    @Option(help: "Threads (default: all cores).") var threads = ThreadPool.defaultThreadCount
    @Option(help: "This process's part, i/N.") var partition: String?
    @Option(help: "Number of parts when the index comes from JOB_COMPLETION_INDEX (Kubernetes Indexed Job).")
    var partitionCount: Int?
    @Option(help: "Windows per forward call.") var batch = 4
    @Option(help: "Chunk codec: zstd, lz4 or none.") var codec = "zstd"
    @Option(help: "zstd level.") var level = 3
    @Flag(help: "Store log-probs exactly (float32) instead of quantised.") var lossless = false
    @Option(help: "Quantisation step M·2^-N nats: N (default: 5·2^-8, worst-case error 0.0098 nats).") var stepLog2: Int?
    @Option(help: "Quantisation step M·2^-N nats: M, 1...255 (default 1 when --step-log2 is given).") var stepMultiplier: Int?
    @Option(help: "Target shard size in bytes; K, M or G suffixes (binary).") var shardSize = "256M"
    @Option(help: "Tokens per block, the unit of lazy decoding and of shard rolling.") var blockTokens = 8192
    @Flag(help: "Plain text: documents are separated by blank lines (default: one per file).") var blankLineDocs = false
    @Option(help: "JSON Lines: the field holding the text.") var textField = "text"
    @Option(help: "Token that separates documents (default: found in the tokenizer).") var eotToken: String?

    func capturePolicy() throws -> CapturePolicy {
        let name = policy ?? (topP != nil ? "top-p" : samples != nil ? (topK != nil ? "head-tail" : "sampled") : "top-k")
        switch name {
        case "top-k": return .topK(k: topK ?? 64)
        case "top-p":
            guard let p = topP else { throw ValidationError("--policy top-p needs --top-p P") }
            return .topP(p: p, maxK: topK ?? 64)
        case "sampled": return .sampled(draws: samples ?? 50)
        case "head-tail": return .headTail(k: topK ?? 16, draws: samples ?? 50)
        case "top-k+sampled": return .topKAndSampled(k: topK ?? 64, draws: samples ?? 50)
        default: throw ValidationError("--policy \(name): expected top-k, top-p, sampled, head-tail or top-k+sampled")
        }
    }

    func validate() throws {
        guard !corpus.isEmpty else { throw ValidationError("give at least one --corpus path") }
        guard batch >= 1 else { throw ValidationError("--batch must be at least 1") }
        guard threads >= 1 else { throw ValidationError("--threads must be at least 1") }
        guard let bytes = parseByteSize(shardSize), bytes >= 4096 else {
            throw ValidationError("--shard-size \(shardSize): expected a size of at least 4K, like 64M")
        }
        _ = bytes
        guard ["zstd", "lz4", "none"].contains(codec) else { throw ValidationError("--codec \(codec): expected zstd, lz4 or none") }
        guard (1...22).contains(level) else { throw ValidationError("--level \(level): zstd levels are 1...22") }
        _ = try capturePolicy()
    }

    func run() throws {
        var o = TeacherPassOptions(modelDirectory: model, tokenizerPath: tokenizer, corpus: corpus, output: out)
        o.context = context
        o.policy = try capturePolicy()
        o.temperature = temperature
        o.seed = seed
        o.threads = threads
        if let partition { o.partition = try Partition(parsing: partition) }
        else if let p = try Partition.fromEnvironment(ProcessInfo.processInfo.environment, kubernetesCount: partitionCount) {
            o.partition = p
        }
        o.corpusOptions = CorpusOptions(blankLineDocuments: blankLineDocs, textField: textField)
        o.windowsPerBatch = batch
        o.endOfTextToken = eotToken
        o.writer.codec = codec == "zstd" ? .zstd(level: Int32(level)) : codec == "lz4" ? .lz4 : .none
        if let e = try logProbEncoding(lossless: lossless, stepLog2: stepLog2, stepMultiplier: stepMultiplier) { o.writer.logProbs = e }
        o.writer.blockTokens = blockTokens
        o.writer.targetShardBytes = parseByteSize(shardSize)!  // Safe because validate() checked it.

        let job = try TeacherPassJob(options: o)
        let line = ProgressLine()
        FileHandle.standardError.write(Data("""
            teacher pass: \(job.model.config.architecture) vocab \(job.model.config.vocabSize), \
            \(o.policy), T=\(o.temperature), partition \(o.partition), \(job.windows.count) windows of ≤\(o.context) tokens, \
            \(o.threads) threads -> \(out)\n
            """.utf8))
        let manifest = try job.run { p in
            let fresh = Double(p.tokensDone - p.tokensResumed)
            let rate = fresh / max(p.seconds, 1e-9)
            let eta = Double(p.tokensTotal - p.tokensDone) / max(rate, 1e-9)
            line.update(String(format: "%@/%@ tokens (%.1f%%)  %@ tok/s  ETA %@  captured mass %.3f",
                               humanCount(Double(p.tokensDone)), humanCount(Double(p.tokensTotal)),
                               100 * Double(p.tokensDone) / Double(max(p.tokensTotal, 1)), humanCount(rate),
                               humanDuration(eta), p.meanCapturedMass),
                        force: p.tokensDone == p.tokensTotal)
        }
        line.finish()
        print("wrote \(manifest.totals.tokens) tokens in \(manifest.shards.count) shard(s), \(manifest.totals.bytes) bytes "
              + "(\(String(format: "%.1f", Double(manifest.totals.bytes) / Double(max(manifest.totals.tokens, 1)))) B/token) to \(out)")
        if o.partition.count > 1 {
            print("partition \(o.partition) done; when all \(o.partition.count) are: logitcache merge \(out)")
        }
    }
}

/// `4096`, `64K`, `256M`, `2G` (binary multiples) as bytes; nil when malformed.
func parseByteSize(_ text: String) -> Int? {
    let multipliers: [Character: Int] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30]
    var digits = Substring(text), scale = 1
    if let last = text.last?.uppercased().first, let m = multipliers[last] { digits = text.dropLast(); scale = m }
    guard let n = Int(digits), n >= 0, n <= Int.max / scale else { return nil }
    return n * scale
}
