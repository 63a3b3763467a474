import ShardFormat
import Truncation

/// A cache of generated teacher-like targets (``TeacherLikeGenerator``): what `logitcache synth`
/// writes, for trying the loader, the readers and the benchmarks without a teacher.
///
/// Sequences of `sequenceLength` tokens (the last one shorter) are dealt round-robin to
/// `partitionCount` writers; a writer killed midway resumes after its last published shard.
public struct SyntheticCache: Sendable {
    public var vocabularySize: Int
    public var tokens: Int
    public var sequenceLength: Int
    /// Entries per position (K).
    public var k: Int
    public var seed: UInt64
    /// Sampled draws per position (0: none).
    public var draws: Int
    /// Top-p truncation of each position's entries (1: keep K).
    public var topP: Double
    public var writer: WriterOptions
    public var partition: Int
    public var partitionCount: Int

    public init(vocabularySize: Int, tokens: Int, sequenceLength: Int, k: Int, seed: UInt64, draws: Int = 0, topP: Double = 1,
                writer: WriterOptions = WriterOptions(), partition: Int = 0, partitionCount: Int = 1) {
        self.vocabularySize = vocabularySize; self.tokens = tokens; self.sequenceLength = sequenceLength; self.k = k
        self.seed = seed; self.draws = draws; self.topP = topP; self.writer = writer
        self.partition = partition; self.partitionCount = partitionCount
    }

    /// What the manifest records: synthetic fingerprints and the capture policy the rows follow.
    public var description: CacheDescription {
        let g = generator
        let policy: CapturePolicy = draws > 0 ? (g.k > 0 ? .topKAndSampled(k: g.k, draws: draws) : .sampled(draws: draws))
            : (topP < 1 ? .topP(p: topP, maxK: g.k) : .topK(k: g.k))
        return CacheDescription(
            vocabularySize: vocabularySize,
            fingerprints: Fingerprints(teacher: "synthetic-\(seed)", tokenizer: "synthetic-vocab-\(vocabularySize)",
                                       corpus: "synthetic-\(seed)-\(tokens)"),
            capture: CaptureSettings(policy: policy, temperature: 1, seed: seed))
    }

    var generator: TeacherLikeGenerator {
        TeacherLikeGenerator(vocabularySize: vocabularySize, k: k, seed: seed, draws: draws, topP: topP)
    }

    /// Writes (or resumes) this writer's partition into `directory`.
    /// - Returns: the partition's manifest and the sequences an earlier run had already published.
    /// - Throws: ``ShardFormatError/invalidInput(_:)`` for sizes out of range, and the writer's
    ///   errors (a second writer, a different cache in the directory, I/O), naming the file.
    public func write(to directory: String) throws -> (manifest: CacheManifest, resumedSequences: Int) {
        guard tokens >= 0, sequenceLength >= 1, k >= 0, vocabularySize >= 2 else {
            throw ShardFormatError.invalidInput("need tokens >= 0, sequence length >= 1, k >= 0, vocabulary >= 2")
        }
        let g = generator
        let w = try CacheWriter(directory: directory, description: description, options: writer, partition: partition,
                                partitionCount: partitionCount)
        let sequences = (tokens + sequenceLength - 1) / sequenceLength
        let mine = stride(from: partition, to: sequences, by: partitionCount)
        for i in mine.dropFirst(w.resumedSequences) {
            try w.append(g.sequence(i, length: min(sequenceLength, tokens - i * sequenceLength)))
        }
        return (try w.finish(), w.resumedSequences)
    }
}
