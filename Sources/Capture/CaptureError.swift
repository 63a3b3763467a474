/// What a teacher pass keeps of each position's next-token distribution.
///
/// Every policy also keeps the exact full-vocabulary logsumexp and the exact teacher
/// log-probability of the real next token, so probabilities stay exact and the hard-label
/// term never depends on truncation.
public enum CapturePolicy: Sendable, Equatable, Codable, CustomStringConvertible {
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
    /// - Throws: ``CaptureError/badPolicy(_:)`` naming the bad value.
    public func validate(vocabularySize v: Int) throws {
        func check(_ ok: Bool, _ m: String) throws { if !ok { throw CaptureError.badPolicy(m) } }
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
}

/// Errors of capture settings.
public enum CaptureError: Error, Equatable, CustomStringConvertible {
    case badPolicy(String)
    case badTemperature(Float)
    case rowTooShort(expected: Int, got: Int)
    case nextTokenOutOfRange(Int32, vocabularySize: Int)

    public var description: String {
        switch self {
        case .badPolicy(let m): return "bad capture policy: \(m)"
        case .badTemperature(let t): return "temperature \(t) must be finite and > 0"
        case .rowTooShort(let e, let g): return "logits row has \(g) entries, expected \(e)"
        case .nextTokenOutOfRange(let id, let v): return "next token id \(id) is outside the vocabulary of \(v)"
        }
    }
}
