// The one vocabulary of truncation: what a teacher pass captured (`CapturePolicy`, recorded in
// every manifest) and what a student reads of it (`TargetMode`). Capture, the cache format, the
// loader, the losses, the sweep, the CLI, the C ABI and the Python package all use these names.

/// What a teacher pass keeps of each position's next-token distribution.
///
/// Every policy also keeps the exact full-vocabulary logsumexp and the exact teacher
/// log-probability of the real next token, so probabilities stay exact and the hard-label
/// term never depends on truncation.
public enum CapturePolicy: Sendable, Equatable, Hashable, CustomStringConvertible {
    /// The `k` most probable ids in descending probability (ties: lower id first).
    case topK(k: Int)
    /// The shortest descending prefix whose probability mass reaches `p`, at most `maxK` ids.
    case topP(p: Double, maxK: Int)
    /// `draws` ids drawn with replacement from the teacher distribution, kept as unique ids
    /// with draw counts (the random-sampling estimator of Anshumann et al., 2025).
    case sampled(draws: Int)
    /// An exact top-`k` head plus `draws` ids drawn from the remaining (tail) mass.
    case headTail(k: Int, draws: Int)
    /// An exact top-`k` head plus, beside it, `draws` ids drawn from the whole distribution:
    /// one teacher pass serves both top-k students (prefix reads) and unbiased sampled ones.
    case topKAndSampled(k: Int, draws: Int)

    /// The largest number of exact (head) entries a position can get.
    public var maxEntries: Int {
        switch self {
        case .topK(let k), .headTail(let k, _), .topKAndSampled(let k, _): return k
        case .topP(_, let k): return k
        case .sampled: return 0
        }
    }

    /// The largest number of sampled entries a position can get.
    public var maxSamples: Int {
        switch self {
        case .sampled(let n), .headTail(_, let n), .topKAndSampled(_, let n): return n
        default: return 0
        }
    }

    /// Whether the policy needs the full logits row (sampling does; top-k and top-p can run on
    /// a fused top-K head).
    public var needsFullRow: Bool { maxSamples > 0 }

    /// Checks ranges against a vocabulary size.
    /// - Throws: ``TruncationError/badPolicy(_:)`` naming the bad value.
    public func validate(vocabularySize v: Int) throws {
        func check(_ ok: Bool, _ m: String) throws { if !ok { throw TruncationError.badPolicy(m) } }
        switch self {
        case .topK(let k): try check(k >= 1 && k <= v, "top-k \(k) must be in 1...\(v)")
        case .topP(let p, let k):
            try check(p > 0 && p <= 1, "top-p \(p) must be in (0, 1]")
            try check(k >= 1 && k <= v, "top-p cap \(k) must be in 1...\(v)")
        case .sampled(let n): try check(n >= 1 && n <= 1 << 20, "samples \(n) must be in 1...1048576")
        case .topKAndSampled(let k, let n):
            try check(k >= 1 && k <= v, "top-k \(k) must be in 1...\(v)")
            try check(n >= 1 && n <= 1 << 20, "samples \(n) must be in 1...1048576")
        case .headTail(let k, let n):
            try check(k >= 1 && k < v, "head \(k) must be in 1...\(v - 1)")
            try check(n >= 1 && n <= 1 << 20, "samples \(n) must be in 1...1048576")
        }
    }

    public var description: String {
        switch self {
        case .topK(let k): return "top-k(k=\(k))"
        case .topP(let p, let k): return "top-p(p=\(p), max-k=\(k))"
        case .sampled(let n): return "sampled(draws=\(n))"
        case .headTail(let k, let n): return "head-tail(k=\(k), draws=\(n))"
        case .topKAndSampled(let k, let n): return "top-k+sampled(k=\(k), draws=\(n))"
        }
    }

    /// The manifest's name of the policy (`capture.policy`; also the C ABI's and Python's).
    public var name: String {
        switch self {
        case .topK: return "top-k"
        case .topP: return "top-p"
        case .sampled: return "sampled"
        case .headTail: return "head-tail"
        case .topKAndSampled: return "top-k+sampled"
        }
    }

    /// Every policy name, in the order of the cases.
    public static let names = ["top-k", "top-p", "sampled", "head-tail", "top-k+sampled"]

    /// The top-p threshold of ``topP(p:maxK:)``, nil for the others.
    public var threshold: Double? { if case .topP(let p, _) = self { return p }; return nil }

    /// The policy a manifest records as `name` with K = `k`, `topP` and `samples` draws.
    /// - Throws: ``TruncationError/badPolicy(_:)`` for an unknown name, or fields that do not
    ///   belong to it: a threshold without top-p or outside (0, 1], draws outside 1...2^20 on a
    ///   sampled policy or any on the others, K outside 1...65535 (0 exactly for `sampled`).
    public init(name: String, k: Int, topP: Double?, samples: Int) throws {
        guard Self.names.contains(name) else {
            throw TruncationError.badPolicy("unknown policy \"\(name)\" (\(Self.names.joined(separator: ", ")))")
        }
        let sampled = name == "sampled" || name == "head-tail" || name == "top-k+sampled"
        func need(_ ok: Bool, _ rule: String) throws {
            if !ok { throw TruncationError.badPolicy("\(name) with k = \(k), topP = \(topP.map { "\($0)" } ?? "none"), samples = \(samples): \(rule)") }
        }
        try need((name == "top-p") == (topP != nil), "topP is given exactly for top-p")
        try need(topP.map { $0 > 0 && $0 <= 1 } ?? true, "topP must be in (0, 1]")
        try need(sampled ? (1...(1 << 20)).contains(samples) : samples == 0,
                 sampled ? "samples must be in 1...1048576" : "samples must be 0 (the policy draws none)")
        try need(name == "sampled" ? k == 0 : (1...65535).contains(k), name == "sampled" ? "k must be 0 (no exact entries)" : "k must be in 1...65535")
        switch name {
        case "top-k": self = .topK(k: k)
        case "top-p": self = .topP(p: topP ?? 1, maxK: k)
        case "sampled": self = .sampled(draws: samples)
        case "head-tail": self = .headTail(k: k, draws: samples)
        default: self = .topKAndSampled(k: k, draws: samples)
        }
    }
}

/// How teacher entries become the weights a distillation loss reads (the student's side of
/// truncation: with a prefix k of the cache's K entries and a temperature τ).
///
/// The layouts match `DistillationTargets` in `Sources/Kernels/Losses.swift`: ``renormalized``
/// and ``sampled`` are the `.sparse` kind (weights sum to one over the row), ``tail`` is
/// `.sparseWithTail` (exact probabilities plus the uncovered mass as one extra class).
public enum TargetMode: String, Sendable, Codable, CaseIterable {
    /// Top-k probabilities renormalised to sum to one: `w_i = p_i^(1/τ) / Σ_{j<k} p_j^(1/τ)`.
    /// Exact for the truncated distribution at any τ.
    case renormalized
    /// Exact top-k probabilities and the uncovered mass `1 − Σ p_i` as one extra class.
    ///
    /// At τ = 1 this is exact. At τ ≠ 1 the full-vocabulary normaliser at τ is unknown, because
    /// the stored entries do not say how the uncovered mass m is spread. We treat it as
    /// `m / p_min` ids each holding the smallest stored probability `p_min` — the most
    /// concentrated spread consistent with the descending order — so its tempered total is
    /// `m · p_min^(1/τ − 1)`; head and tail are then normalised together. For τ > 1 this is a
    /// lower bound of the true tempered tail (p^(1/τ) is concave), for τ < 1 an upper bound.
    /// A row without entries gets tail 1.
    case tail
    /// Sampled ids with the unbiased estimator weights `count / N` (N = the row's draws).
    /// Needs a cache with samples drawn from the whole distribution; τ must be the capture
    /// temperature (the draws were taken at it).
    case sampled
}

/// A truncation setting that is not valid.
public enum TruncationError: Error, Equatable, CustomStringConvertible {
    case badPolicy(String)

    public var description: String {
        switch self {
        case .badPolicy(let m): return "bad capture policy: \(m)"
        }
    }
}
