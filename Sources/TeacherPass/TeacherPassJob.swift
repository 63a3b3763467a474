import Truncation
import Capture
import Corpus
import Foundation
import Kernels
import Models
import ShardFormat
import Tokenizers

/// Everything a teacher pass needs to know; the same options, model, corpus and seed give
/// byte-identical shards whatever the thread count.
public struct TeacherPassOptions: Sendable {
    public var modelDirectory: String
    public var tokenizerPath: String
    public var corpus: [String]
    public var output: String
    /// Window length in tokens.
    public var context = 512
    public var policy: CapturePolicy = .topK(k: 64)
    public var temperature: Float = 1
    public var seed: UInt64 = 0
    public var threads = ThreadPool.defaultThreadCount
    /// Chunks per thread of every parallel loop (``ThreadPool/chunksPerThread``): with more
    /// than one, a compute thread the writer thread preempts holds up one small chunk, not
    /// its whole share of the loop. The bytes written do not depend on it.
    public var chunksPerThread = 4
    public var partition = Partition.whole
    public var corpusOptions = CorpusOptions()
    /// Windows per forward call.
    public var windowsPerBatch = 4
    public var writer = WriterOptions()
    /// The token that joins documents; found in the tokenizer when nil.
    public var endOfTextToken: String? = nil

    public init(modelDirectory: String, tokenizerPath: String, corpus: [String], output: String) {
        self.modelDirectory = modelDirectory
        self.tokenizerPath = tokenizerPath
        self.corpus = corpus
        self.output = output
    }
}

/// Where a running pass is, for progress lines.
public struct TeacherPassProgress: Sendable {
    public var windowsDone: Int
    public var windowsTotal: Int
    public var tokensDone: Int
    public var tokensTotal: Int
    /// Tokens published by an earlier, interrupted run and skipped now.
    public var tokensResumed: Int
    public var seconds: Double
    /// Mean probability mass of the stored entries over the tokens captured in this run.
    public var meanCapturedMass: Double
}

/// One teacher pass over (a partition of) a corpus into a cache directory.
///
/// `init` loads and checks everything — tokenizer against model, context against the model,
/// the corpus, and any cache already in the output directory — before any work, so bad input
/// fails fast and nothing written is touched. ``run(progress:)`` then continues after the
/// last published shard of this partition.
public final class TeacherPassJob {
    public let options: TeacherPassOptions
    public let model: Transformer
    public let stream: TokenStream
    /// The windows of the whole corpus this partition owns.
    public let windows: Range<Int>
    public let description: CacheDescription
    let pool: ThreadPool
    /// Activations of the last batch shape, reused while batches keep it.
    var activationCache: ForwardActivations?
    /// The full logits (B·T, V) of ``forwardOnlySeconds()``, kept between calls.
    var forwardLogits: [Float] = []

    /// - Throws: ``TeacherPassError``, ``CorpusError``, and the model's, tokenizer's and
    ///   cache's own errors, each naming the file at fault.
    /// - Parameter windowLimit: process at most this many of the partition's windows (benchmarks).
    public init(options o: TeacherPassOptions, windowLimit: Int? = nil) throws {
        options = o
        guard o.context >= 1 else { throw TeacherPassError.badContext(o.context) }
        pool = ThreadPool(threadCount: max(1, o.threads), chunksPerThread: max(1, o.chunksPerThread))
        let tokenizer = try Tokenizer(contentsOfFile: o.tokenizerPath)
        model = try Transformer(directory: o.modelDirectory, pool: pool)
        let V = model.config.vocabSize
        // A model may pad its embedding beyond the tokenizer (ids it never sees); a tokenizer
        // with ids the model lacks belongs to another model.
        guard tokenizer.vocabularySize <= V else {
            throw TeacherPassError.vocabularyMismatch(tokenizer: tokenizer.vocabularySize, model: V,
                                                      tokenizerPath: o.tokenizerPath, modelDirectory: o.modelDirectory)
        }
        guard o.context <= model.maxWindow else {
            throw TeacherPassError.contextTooLong(context: o.context, modelMaximum: model.maxWindow)
        }
        try o.policy.validate(vocabularySize: V)
        guard o.temperature.isFinite, o.temperature > 0 else { throw CaptureError.badTemperature(o.temperature) }

        let eot = try endOfTextID(tokenizer, named: o.endOfTextToken, tokenizerPath: o.tokenizerPath)
        var options = o.corpusOptions
        if options.endOfTextID == nil { options.endOfTextID = eot }
        stream = try TokenStream(corpus: o.corpus, tokenizer: tokenizer, endOfText: eot, options: options, vocabulary: V)
        let total = stream.windowCount(context: o.context)
        guard total > 0 else { throw CorpusError.emptyCorpus(paths: o.corpus) }
        let owned = o.partition.windowRange(total: total)
        windows = owned.lowerBound ..< owned.lowerBound + min(owned.count, windowLimit ?? owned.count)

        let fingerprints = Fingerprints(
            teacher: try Fingerprint.teacher(directory: o.modelDirectory),
            tokenizer: try Fingerprint.tokenizer(path: o.tokenizerPath),
            corpus: Fingerprint.corpus(stream, context: o.context))
        description = CacheDescription(vocabularySize: V, fingerprints: fingerprints,
                                       capture: TeacherPassJob.captureSettings(o),
                                       origin: CacheOrigin(tool: "logitcache teacher", teacher: (o.modelDirectory as NSString).lastPathComponent,
                                                           device: "cpu"))
        try TeacherPassJob.refuseDifferentCache(in: o.output, description: description, partitionCount: o.partition.count)
    }

    static func captureSettings(_ o: TeacherPassOptions) -> CaptureSettings {
        CaptureSettings(policy: o.policy, temperature: Double(o.temperature), seed: o.seed)
    }

    /// A cache already in `directory` must have been made by the same teacher, tokenizer,
    /// corpus, capture settings and partitioning; anything else is refused, untouched.
    static func refuseDifferentCache(in directory: String, description d: CacheDescription, partitionCount: Int) throws {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return }
        for name in names.sorted() where name.hasPrefix("manifest") && name.hasSuffix(".json") {
            let m = try CacheManifest.load(directory: directory, name: name)
            let where_ = (directory as NSString).appendingPathComponent(name)
            func check(_ field: String, _ a: String, _ b: String) throws {
                if a != b { throw TeacherPassError.settingsDiffer(cache: where_, field: field, existing: a, requested: b) }
            }
            try check("vocabulary size", "\(m.vocabularySize)", "\(d.vocabularySize)")
            try check("teacher fingerprint", m.fingerprints.teacher, d.fingerprints.teacher)
            try check("tokenizer fingerprint", m.fingerprints.tokenizer, d.fingerprints.tokenizer)
            try check("corpus fingerprint (corpus and --context)", m.fingerprints.corpus, d.fingerprints.corpus)
            try check("capture settings", "\(m.capture)", "\(d.capture)")
            if let p = m.partition { try check("partition count", "\(p.count)", "\(partitionCount)") }
        }
    }
}
