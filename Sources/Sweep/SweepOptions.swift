import Distillation
import Foundation
import ScalingLaws
import Truncation

/// What one student of a sweep learns from. Serialised as the names reports have always used.
public enum SweepArm: String, Codable, Sendable, CaseIterable, CustomStringConvertible {
    /// Supervised cross-entropy on the corpus alone (the baseline).
    case ce
    /// Top-k renormalised targets from the cache.
    case topk
    /// Exact top-k plus the tail bucket from the cache.
    case tail
    /// Sampled draws from the cache.
    case sampled
    /// The full teacher distribution computed inside the training loop.
    case online

    /// The arms that read the sweep's cache, and that `--policies` chooses from.
    public static let cached: [SweepArm] = [.topk, .tail, .sampled]

    /// The loss its students train with (online students learn the full distribution).
    public var loss: TrainingLoss {
        switch self {
        case .ce: return .ce
        case .topk: return .topk
        case .tail: return .tail
        case .sampled: return .sampled
        case .online: return .full
        }
    }

    /// What the student loader reads for a cache arm (nil for ce and online).
    public var targetMode: TargetMode? { loss.targetMode }

    public var description: String { rawValue }
}

/// Everything a truncation sweep depends on. One teacher pass at the largest k (with sampled
/// draws beside it when a sampled policy is asked for) feeds every student.
public struct SweepOptions: Sendable {
    public var teacherDirectory: String
    public var tokenizerPath: String
    /// Student-training corpus (the teacher pass runs over it).
    public var corpus: [String]
    /// Held-out corpus for evaluation.
    public var evalCorpus: [String]
    /// Student architecture (ModelSpec JSON or config.json).
    public var studentConfigPath: String
    public var output: String
    public var ks: [Int] = [1, 4, 16, 64]
    /// The cache arms to train (``SweepArm/cached``).
    public var policies: [SweepArm] = [.topk]
    public var lambdas: [Float] = [1]
    /// Distillation temperatures τ of the top-k and tail students (sampled students read at
    /// the capture temperature, 1).
    public var temperatures: [Float] = [1]
    public var samples = 50
    public var seeds = 1
    /// Training tokens per student.
    public var tokens = 200_000
    public var context = 256
    public var batch = 8
    public var learningRate: Float = 2e-3
    /// Also train a student with the full teacher distribution run inside the loop.
    public var online = false
    public var threads = 2
    /// Evaluation windows (of `context` tokens) from the held-out corpus.
    public var evalWindows = 64
    /// Teacher-pass windows at most (quick runs); nil = the whole corpus.
    public var teacherWindowLimit: Int? = nil
    /// Scaling-law coefficients the report's predictions use.
    public var law = DistillationLaw.busbridge2025
    /// Where ``law`` came from, for the report.
    public var lawSource = DistillationLaw.busbridge2025Source

    public init(teacherDirectory: String, tokenizerPath: String, corpus: [String], evalCorpus: [String],
                studentConfigPath: String, output: String) {
        self.teacherDirectory = teacherDirectory; self.tokenizerPath = tokenizerPath; self.corpus = corpus
        self.evalCorpus = evalCorpus; self.studentConfigPath = studentConfigPath; self.output = output
    }

    /// - Throws: ``SweepError/badOption(_:)`` naming the value.
    public func validate() throws {
        func check(_ ok: Bool, _ m: String) throws { if !ok { throw SweepError.badOption(m) } }
        try check(!ks.isEmpty && ks.allSatisfy { $0 >= 1 && $0 <= 65535 }, "--k values must be in 1...65535")
        try check(!policies.isEmpty && policies.allSatisfy { SweepArm.cached.contains($0) },
                  "--policies must be from topk, tail, sampled")
        try check(!lambdas.isEmpty && lambdas.allSatisfy { (0...1).contains($0) }, "--lambda values must be in 0...1")
        try check(!temperatures.isEmpty && temperatures.allSatisfy { $0 >= 0.001 && $0 <= 1000 },
                  "--temperatures values must be in 0.001...1000")
        try check(samples >= 1 && seeds >= 1 && tokens >= 1 && context >= 2 && batch >= 1 && threads >= 1 && evalWindows >= 1,
                  "--samples, --seeds, --tokens, --context, --batch, --threads and eval windows must be positive")
        try check(!corpus.isEmpty && !evalCorpus.isEmpty, "give a training corpus and an evaluation corpus")
    }

    var maxK: Int { ks.max() ?? 1 }
    var wantsSamples: Bool { policies.contains(.sampled) }
}

/// One student of the sweep.
public struct SweepSetting: Codable, Sendable, Equatable, Hashable {
    public var policy: SweepArm
    /// Teacher entries (topk/tail) or draws (sampled); 0 for ce/online.
    public var k: Int
    public var lambda: Float
    public var seed: Int
    /// Distillation temperature τ (1 in reports written before the temperature axis).
    public var temperature: Float

    public init(policy: SweepArm, k: Int, lambda: Float, seed: Int, temperature: Float = 1) {
        self.policy = policy; self.k = k; self.lambda = lambda; self.seed = seed; self.temperature = temperature
    }

    enum CodingKeys: String, CodingKey { case policy, k, lambda, seed, temperature }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(policy: try c.decode(SweepArm.self, forKey: .policy), k: try c.decode(Int.self, forKey: .k),
                  lambda: try c.decode(Float.self, forKey: .lambda), seed: try c.decode(Int.self, forKey: .seed),
                  temperature: try c.decodeIfPresent(Float.self, forKey: .temperature) ?? 1)
    }

    /// Directory-safe name, e.g. `topk-k16-l0.7-s1` (`topk-k16-l1-t2-s1` at τ = 2).
    public var name: String {
        var n = policy.rawValue
        if policy.targetMode != nil { n += "-k\(k)" }
        if policy != .ce { n += "-l" + String(format: "%g", lambda) }
        if temperature != 1 { n += "-t" + String(format: "%g", temperature) }
        return n + "-s\(seed)"
    }

    /// The setting without its seed, for grouping seeds.
    public var group: String {
        var n = policy.rawValue
        if policy.targetMode != nil { n += " k=\(k)" }
        if policy.targetMode != nil { n += " λ=" + String(format: "%g", lambda) }
        if temperature != 1 { n += " τ=" + String(format: "%g", temperature) }
        return n
    }
}

public enum SweepError: Error, Equatable, CustomStringConvertible {
    case badOption(String)
    case failed(String)
    public var description: String {
        switch self {
        case .badOption(let m): return "bad option: \(m)"
        case .failed(let m): return m
        }
    }
}
