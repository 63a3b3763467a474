import Truncation
import Kernels
import StudentLoader

/// One batch of student inputs and what the loss needs: B windows of T tokens.
///
/// Layout as `DistillationTargets` reads it: `ids`/`weights` (B·T, k) for the sparse kinds,
/// `weights` (B·T, V) for `.dense`, `tail` (B·T) for `.sparseWithTail`.
public final class TrainingBatch {
    public internal(set) var batchSize = 0, length = 0, k = 0
    public internal(set) var kind: DistillationTargetKind = .none
    /// [B, T] input ids
    public internal(set) var inputs: [Int32] = []
    /// [B, T] next-token ids, −1 where no label exists (padding, a sequence's last token)
    public internal(set) var labels: [Int32] = []
    /// [B, T, k] teacher ids, −1 in unused slots
    public internal(set) var ids: [Int32] = []
    /// [B, T, k] (sparse) or [B, T, V] (dense) target weights
    public internal(set) var weights: [Float] = []
    /// [B, T] uncovered teacher mass (tail kind)
    public internal(set) var tail: [Float] = []
    /// Tokens with a label.
    public internal(set) var labelledTokens = 0

    public init() {}

    func reshape(B: Int, T: Int, k: Int, kind: DistillationTargetKind, vocab V: Int) {
        batchSize = B; length = T; self.k = k; self.kind = kind
        let N = B * T
        if inputs.count != N { inputs = .init(repeating: 0, count: N); labels = .init(repeating: -1, count: N) }
        let idCount = kind == .sparse || kind == .sparseWithTail ? N * k : 0
        let weightCount = kind == .dense ? N * V : idCount
        if ids.count != idCount { ids = .init(repeating: -1, count: idCount) }
        if weights.count != weightCount { weights = .init(repeating: 0, count: weightCount) }
        let tailCount = kind == .sparseWithTail ? N : 0
        if tail.count != tailCount { tail = .init(repeating: 0, count: tailCount) }
    }

    func countLabels() { labelledTokens = labels.reduce(0) { $0 + ($1 >= 0 ? 1 : 0) } }

    /// Calls `body` with `DistillationTargets` over this batch's buffers (valid inside only).
    public func withTargets<R>(_ body: (DistillationTargets) throws -> R) rethrows -> R {
        try ids.withUnsafeBufferPointer { i in
            try weights.withUnsafeBufferPointer { w in
                try tail.withUnsafeBufferPointer { t in
                    try body(DistillationTargets(kind: kind, k: k, ids: i.baseAddress, weights: w.baseAddress,
                                                 tail: t.baseAddress))
                }
            }
        }
    }
}

/// Where a source stands: enough to continue exactly (a few hundred bytes as JSON).
public struct SourceState: Codable, Sendable, Equatable {
    public var epoch: Int
    public var batch: Int
    /// The cache loader's own state, for cache sources.
    public var loader: LoaderState?
    public init(epoch: Int, batch: Int, loader: LoaderState? = nil) {
        self.epoch = epoch; self.batch = batch; self.loader = loader
    }
}

/// A stream of training batches: a cache, a tokenised corpus, or a corpus with a teacher run
/// inside the loop. Deterministic for its seed; ``state`` restores the exact position.
public protocol TrainingSource: AnyObject {
    var batchSize: Int { get }
    var length: Int { get }
    /// A short human description for logs.
    var summary: String { get }
    /// Teacher forward FLOPs spent per batch (online teachers; 0 otherwise).
    var teacherFLOPsPerBatch: Double { get }
    func next(into batch: TrainingBatch) throws
    var state: SourceState { get }
    func resume(from state: SourceState) throws
}

/// Batches from a teacher-target cache through the ``StudentLoader``.
public final class CacheSource: TrainingSource {
    public let loader: StudentLoader
    let vocab: Int
    private let loaderBatch = Batch()

    public init(loader: StudentLoader, vocabularySize: Int) {
        self.loader = loader
        vocab = vocabularySize
    }

    public var batchSize: Int { loader.configuration.batchSize }
    public var length: Int { loader.configuration.contextLength }
    public var summary: String {
        "cache \(loader.reader.directory) (k=\(loader.configuration.k), \(loader.configuration.mode.rawValue))"
    }
    public var teacherFLOPsPerBatch: Double { 0 }

    /// The loss kind a loader mode produces.
    public static func kind(of mode: TargetMode) -> DistillationTargetKind {
        mode == .tail ? .sparseWithTail : .sparse
    }

    public func next(into out: TrainingBatch) throws {
        try loader.next(into: loaderBatch)
        let c = loader.configuration
        out.reshape(B: c.batchSize, T: c.contextLength, k: c.k, kind: Self.kind(of: c.mode), vocab: vocab)
        out.inputs = loaderBatch.inputIDs
        out.labels = loaderBatch.labels
        out.ids = loaderBatch.targetIDs
        out.weights = loaderBatch.targetWeights
        if out.kind == .sparseWithTail { out.tail = loaderBatch.tailMass }
        out.countLabels()
    }

    public var state: SourceState {
        let s = loader.state
        return SourceState(epoch: s.epoch, batch: s.batch, loader: s)
    }

    public func resume(from s: SourceState) throws {
        guard let l = s.loader else { throw TrainingError.resume("the saved state is not a cache loader's") }
        try loader.resume(from: l)
    }
}
