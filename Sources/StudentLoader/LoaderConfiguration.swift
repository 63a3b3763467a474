import Foundation
import ShardFormat
import Truncation

/// What to do with the windows that do not fill equal parts for every rank and whole batches.
public enum RemainderPolicy: String, Sendable, Codable {
    /// Pad with empty windows (every label −1, so losses skip them): every window is seen
    /// exactly once per epoch and every rank gets the same number of batches.
    case pad
    /// Drop them: each rank keeps as many windows as the smallest rank has, in whole batches.
    /// The dropped windows differ from epoch to epoch because the order does.
    case drop
}

/// Settings of a ``StudentLoader``. Every field that changes the order or the contents of
/// batches is part of ``fingerprint``, which a ``LoaderState`` must match on resume.
public struct LoaderConfiguration: Sendable, Codable, Equatable {
    /// B: windows per batch.
    public var batchSize: Int
    /// T: tokens per window (the student's context). Longer cache sequences are cut into
    /// windows of T tokens; shorter windows are padded (label −1).
    public var contextLength: Int
    /// k: target slots per token (prefix read of the cache's K entries; for ``TargetMode/sampled``
    /// the most distinct sampled ids a row may have, at least the cache's `maxSamples`).
    public var k: Int
    public var mode: TargetMode
    /// τ of the targets. On a cache captured at τ_c = 1 the stored log-probs are re-tempered to
    /// τ (see ``TargetMode``); on a cache captured at τ_c ≠ 1, τ must equal τ_c (the logits are
    /// gone, so another τ cannot be reached exactly) and the stored values are used as they are.
    public var temperature: Double
    /// Seed of the order; with the epoch and the manifest it fixes the order completely.
    public var seed: UInt64
    /// This process's data-parallel rank, `0..<worldSize`.
    public var rank: Int
    public var worldSize: Int
    /// Windows held by the in-epoch shuffle buffer (bounds memory: each holds T·(8k+16) bytes).
    public var shuffleBuffer: Int
    public var remainder: RemainderPolicy
    /// Worker threads decoding and converting blocks (not part of the fingerprint).
    public var decodeThreads: Int
    /// Blocks decoded ahead of the consumer (bounds memory; not part of the fingerprint).
    public var prefetchBlocks: Int

    public init(batchSize: Int, contextLength: Int, k: Int, mode: TargetMode = .renormalized, temperature: Double = 1,
                seed: UInt64 = 0, rank: Int = 0, worldSize: Int = 1, shuffleBuffer: Int = 64,
                remainder: RemainderPolicy = .pad, decodeThreads: Int = 1, prefetchBlocks: Int = 4) {
        self.batchSize = batchSize; self.contextLength = contextLength; self.k = k; self.mode = mode
        self.temperature = temperature; self.seed = seed; self.rank = rank; self.worldSize = worldSize
        self.shuffleBuffer = shuffleBuffer; self.remainder = remainder
        self.decodeThreads = decodeThreads; self.prefetchBlocks = prefetchBlocks
    }

    /// Checks ranges; throws ``LoaderError/invalidConfiguration(_:)`` naming the field.
    func validate() throws {
        func need(_ ok: Bool, _ what: String) throws { if !ok { throw LoaderError.invalidConfiguration(what) } }
        try need((1...(1 << 20)).contains(batchSize), "batch size \(batchSize) must be in 1...1048576")
        try need((1...(1 << 24)).contains(contextLength), "context length \(contextLength) must be in 1...16777216")
        try need((0...65535).contains(k), "k \(k) must be in 0...65535")
        try need(temperature.isFinite && (Self.temperatureRange).contains(temperature),
                 "temperature \(temperature) must be in \(Self.temperatureRange.lowerBound)...\(Self.temperatureRange.upperBound) (outside it the targets leave float range)")
        try need((1...(1 << 20)).contains(worldSize) && (0..<worldSize).contains(rank), "rank \(rank) must lie in 0..<world size \(worldSize), world size in 1...1048576")
        try need((1...(1 << 24)).contains(shuffleBuffer), "shuffle buffer \(shuffleBuffer) must be in 1...16777216")
        try need((1...1024).contains(decodeThreads) && (1...4096).contains(prefetchBlocks), "decode threads must be in 1...1024 and prefetch blocks in 1...4096")
        // Windows held at once: the batch, the shuffle buffer, and a block ahead per thread.
        let (rows, o1) = (batchSize + shuffleBuffer).multipliedReportingOverflow(by: contextLength)
        let (bytes, o2) = rows.multipliedReportingOverflow(by: 8 * k + 16)
        let limit = physicalMemoryBytes() / 2
        try need(!o1 && !o2 && bytes <= limit,
                 "batch \(batchSize) and shuffle buffer \(shuffleBuffer) windows of \(contextLength) tokens with k = \(k) need \(o1 || o2 ? "more than 2^63" : "\(bytes >> 20) MiB of") rows, above half this machine's memory (\(limit >> 20) MiB)")
    }

    /// The τ a loader accepts: below 10^-3 or above 10^3, `p^(1/τ)` of float32 probabilities
    /// underflows or flattens every target (τ = 10^-39 once gave NaN weights).
    public static let temperatureRange: ClosedRange<Double> = 1e-3...1e3

    /// Hash of the fields an elastic resume must keep (T and the seed fix the windows and
    /// the permutation of every epoch); see ``EpochSegment``.
    public var orderFingerprint: String { hex16(fnv1a(Array("\(contextLength)|\(seed)".utf8))) }

    /// Hash of the fields that determine the batches (not threads or prefetch depth).
    public var fingerprint: String {
        let s = "\(batchSize)|\(contextLength)|\(k)|\(mode.rawValue)|\(temperature.bitPattern)|\(seed)|\(rank)|\(worldSize)|\(shuffleBuffer)|\(remainder.rawValue)"
        return hex16(fnv1a(Array(s.utf8)))
    }
}

/// The student a cache must match: the loader refuses a cache made with another tokenizer.
public struct StudentVocabulary: Sendable, Equatable {
    /// The tokenizer fingerprint recorded in the manifest (`fingerprints.tokenizer`).
    public var tokenizerFingerprint: String
    /// The student's vocabulary size V.
    public var vocabularySize: Int
    public init(tokenizerFingerprint: String, vocabularySize: Int) {
        self.tokenizerFingerprint = tokenizerFingerprint; self.vocabularySize = vocabularySize
    }
}

/// The exact position of a loader: enough to continue with the very next batch.
///
/// Small and `Codable` (about 150 bytes as JSON). A loader refuses a state whose configuration
/// or cache differ from its own.
public struct LoaderState: Sendable, Codable, Equatable {
    public var version = 1
    /// Epoch of the next batch.
    public var epoch: Int
    /// Index of the next batch inside `epoch` (this rank's batches).
    public var batch: Int
    /// ``LoaderConfiguration`` fingerprint (order-determining fields).
    public var configuration: String
    /// The cache's manifest checksum (its `checksum` member, 16 hex digits).
    public var cache: String
    /// Earlier layouts of `epoch` when it was resumed at another world size (elastic resume,
    /// see ``EpochOrder``); absent when the epoch ran under this layout only.
    public var segments: [EpochSegment]?

    public init(epoch: Int, batch: Int, configuration: String, cache: String, segments: [EpochSegment]? = nil) {
        self.epoch = epoch; self.batch = batch; self.configuration = configuration; self.cache = cache; self.segments = segments
    }
}

/// Errors of the student loader. Cache damage arrives as ``cache(_:)`` wrapping the format's
/// error, which names the shard file and chunk.
public enum LoaderError: Error, Equatable, CustomStringConvertible {
    case invalidConfiguration(String)
    /// The cache's tokenizer fingerprint differs from the student's.
    case tokenizerMismatch(cache: String, cacheFingerprint: String, student: String)
    /// The cache's vocabulary size differs from the student's.
    case vocabularyMismatch(cache: String, cacheSize: Int, student: Int)
    /// The cache lacks what the configuration needs (k > K, no samples, too many samples).
    case unsupported(cache: String, reason: String)
    /// A resume state made for another configuration or cache.
    case stateMismatch(String)
    /// The cache failed a check while reading (shard file and chunk named inside).
    case cache(ShardFormatError)

    public var description: String {
        switch self {
        case .invalidConfiguration(let m): return "loader configuration: \(m)"
        case .tokenizerMismatch(let c, let f, let s):
            return "\(c): cache tokenizer fingerprint \(f) differs from the student's \(s); refusing targets of another tokenizer"
        case .vocabularyMismatch(let c, let n, let s):
            return "\(c): cache vocabulary size \(n) differs from the student's \(s)"
        case .unsupported(let c, let r): return "\(c): \(r)"
        case .stateMismatch(let m): return "resume state: \(m)"
        case .cache(let e): return "cache failed verification: \(e)"
        }
    }
}

/// Physical memory of this machine in bytes (`sysconf`), 1 TiB if unknown.
func physicalMemoryBytes() -> Int {
    let pages = sysconf(Int32(_SC_PHYS_PAGES)), size = sysconf(Int32(_SC_PAGESIZE))
    guard pages > 0, size > 0 else { return 1 << 40 }
    let (b, o) = pages.multipliedReportingOverflow(by: size)
    return o ? .max : b
}

/// FNV-1a 64 of `bytes`: identity of a configuration or manifest (not a security hash).
func fnv1a(_ bytes: [UInt8]) -> UInt64 {
    var h: UInt64 = 0xCBF2_9CE4_8422_2325
    for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01B3 }
    return h
}
