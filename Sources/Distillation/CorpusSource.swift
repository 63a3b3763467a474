#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Capture
import Kernels
import Models
import Truncation

/// Batches of windows cut from a token stream: window w holds tokens [w·T, w·T + T) as inputs
/// and the tokens one position later as labels, so every window has T labels. Windows are
/// shuffled per epoch by (seed, epoch); the last incomplete batch of an epoch is dropped.
/// With an ``OnlineTeacher`` the teacher runs on each batch inside the loop and supplies the
/// targets (the baseline a cache is compared with).
public final class CorpusSource: TrainingSource {
    public let tokens: [Int32]
    public let batchSize: Int
    public let length: Int
    public let seed: UInt64
    public let teacher: OnlineTeacher?
    /// Number of windows in the stream.
    public let windowCount: Int
    private(set) var epoch = 0, batchIndex = 0
    private var order: [Int] = []
    let vocab: Int

    /// - Throws: ``TrainingError/tooFewTokens(_:)`` when the stream does not fill one batch.
    public init(tokens: [Int32], batchSize B: Int, length T: Int, seed: UInt64, vocabularySize: Int,
                teacher: OnlineTeacher? = nil) throws {
        guard B >= 1, T >= 1 else { throw TrainingError.badSetting("batch and context must be >= 1") }
        self.tokens = tokens; batchSize = B; length = T; self.seed = seed; self.teacher = teacher
        vocab = vocabularySize
        windowCount = tokens.count > T ? (tokens.count - 1) / T : 0
        guard windowCount >= B else {
            throw TrainingError.tooFewTokens("\(tokens.count) tokens give \(windowCount) windows of \(T), fewer than one batch of \(B)")
        }
        if let bad = tokens.first(where: { $0 < 0 || Int($0) >= vocabularySize }) {
            throw TrainingError.badSetting("token id \(bad) outside the model's vocabulary of \(vocabularySize)")
        }
        order = Self.permutation(windowCount, seed: seed, epoch: 0)
    }

    public var batchesInEpoch: Int { windowCount / batchSize }
    public var summary: String {
        "corpus \(tokens.count) tokens, \(windowCount) windows" + (teacher.map { ", online teacher \($0.targetsDescription)" } ?? "")
    }
    public var teacherFLOPsPerBatch: Double {
        teacher.map { $0.model.forwardFLOPs(batch: batchSize, length: length) } ?? 0
    }

    /// Fisher–Yates with SplitMix64 keyed by (seed, epoch): a pure function of both.
    static func permutation(_ n: Int, seed: UInt64, epoch: Int) -> [Int] {
        var p = Array(0..<n)
        var rng = CounterRandom(seed: seed, position: UInt64(epoch))
        if n > 1 {
            for i in stride(from: n - 1, to: 0, by: -1) {
                let j = Int(rng.next() % UInt64(i + 1))
                p.swapAt(i, j)
            }
        }
        return p
    }

    public func next(into out: TrainingBatch) throws {
        if batchIndex >= batchesInEpoch {
            epoch += 1; batchIndex = 0
            order = Self.permutation(windowCount, seed: seed, epoch: epoch)
        }
        let B = batchSize, T = length
        out.reshape(B: B, T: T, k: teacher?.slots ?? 0, kind: teacher?.kind ?? .none, vocab: vocab)
        for b in 0..<B {
            let start = order[batchIndex * B + b] * T
            for t in 0..<T {
                out.inputs[b * T + t] = tokens[start + t]
                out.labels[b * T + t] = tokens[start + t + 1]
            }
        }
        if let teacher {
            // Each window's first stream position seeds its draws, so targets do not depend on order.
            let positions = (0..<B).map { UInt64(order[batchIndex * B + $0] * T) }
            try teacher.fill(out, positions: positions)
        }
        out.countLabels()
        batchIndex += 1
    }

    public var state: SourceState { SourceState(epoch: epoch, batch: batchIndex) }

    public func resume(from s: SourceState) throws {
        guard s.loader == nil, s.epoch >= 0, (0...batchesInEpoch).contains(s.batch) else {
            throw TrainingError.resume("state epoch \(s.epoch) batch \(s.batch) does not fit this corpus (\(batchesInEpoch) batches per epoch)")
        }
        epoch = s.epoch; batchIndex = s.batch
        order = Self.permutation(windowCount, seed: seed, epoch: epoch)
    }
}

/// A teacher model run inside the training loop, producing targets per batch.
public final class OnlineTeacher {
    public let model: Transformer
    /// What the student learns from: what a loader of this mode reads at `k` (entries; draws
    /// for sampled), or the full distribution at τ when nil (no truncation: the reference).
    public let mode: TargetMode?
    /// Entries (renormalized, tail) or draws (sampled); 0 for the full distribution.
    public let k: Int
    public let temperature: Float
    public let seed: UInt64
    let pool: ThreadPool

    public init(model: Transformer, mode: TargetMode?, k: Int = 0, temperature: Float = 1, seed: UInt64 = 0,
                pool: ThreadPool) {
        self.model = model; self.mode = mode; self.k = mode == nil ? 0 : k
        self.temperature = temperature; self.seed = seed; self.pool = pool
    }

    /// `full`, `top-k 16`, `top-k 16 + tail`, `sampled 50`.
    public var targetsDescription: String {
        switch mode {
        case nil: return "full"
        case .renormalized?: return "top-k \(k)"
        case .tail?: return "top-k \(k) + tail"
        case .sampled?: return "sampled \(k)"
        }
    }

    var kind: DistillationTargetKind { mode.map(CacheSource.kind(of:)) ?? .dense }

    var slots: Int { k }

    /// Runs the teacher on `batch.inputs` and writes the targets.
    func fill(_ batch: TrainingBatch, positions: [UInt64]) throws {
        let B = batch.batchSize, T = batch.length, N = B * T, V = model.config.vocabSize
        var logits = try model.logits(tokens: batch.inputs, batch: B, pool: pool)  // (N, V)
        let invT = 1 / temperature
        if temperature != 1 { for i in logits.indices { logits[i] *= invT } }
        switch mode {
        case nil:
            logits.withUnsafeBufferPointer { z in
                batch.weights.withUnsafeMutableBufferPointer { w in
                    // Safe because both buffers hold N·V floats.
                    softmaxForward(out: w.baseAddress!, input: z.baseAddress!, rows: N, columns: V, pool: pool)
                }
            }
        case .renormalized?, .tail?:
            var lse = [Float](repeating: 0, count: N), top = [Float](repeating: 0, count: N * k)
            logits.withUnsafeBufferPointer { z in
                topKLogsumexp(logits: z.baseAddress!, rows: N, vocab: V, k: k, topIds: &batch.ids, topLogits: &top,
                              logsumexp: &lse, pool: pool)
            }
            for r in 0..<N {
                var norm = lse[r]
                if mode == .renormalized { norm = top.withUnsafeBufferPointer { logsumexp($0.baseAddress! + r * k, count: k) } }  // Safe because row r holds k logits.
                var mass: Float = 0
                for j in 0..<k {
                    let p = expf(top[r * k + j] - norm)
                    batch.weights[r * k + j] = p
                    mass += p
                }
                if mode == .tail { batch.tail[r] = max(0, 1 - mass) }
            }
        case .sampled?:
            let draws = k
            var capturer = try Capturer(policy: .sampled(draws: draws), temperature: 1, seed: seed, vocabularySize: V)
            var captured = CapturedTargets()
            for r in 0..<N {
                captured.removeAll()
                let b = r / T, t = r % T
                let label = max(0, batch.labels[r])
                try logits.withUnsafeBufferPointer { z in
                    try capturer.capture(row: UnsafeBufferPointer(rebasing: z[(r * V)..<(r * V + V)]), nextToken: label,
                                         position: positions[b] + UInt64(t), into: &captured)
                }
                let (ids, counts, _) = captured.samples(0)
                for j in 0..<draws {
                    batch.ids[r * draws + j] = j < ids.count ? ids[ids.startIndex + j] : -1
                    batch.weights[r * draws + j] = j < ids.count ? Float(counts[counts.startIndex + j]) / Float(draws) : 0
                }
            }
        }
    }
}
