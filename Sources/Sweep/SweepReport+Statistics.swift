import Foundation

/// A difference between two settings, paired by seed: d_s = a_s - b_s over the seeds both
/// have, with a 95% Student-t interval of its mean (none with one seed).
struct PairedDifference: Equatable {
    let seeds: Int
    let mean: Double
    /// 95% interval of the mean difference; nil with fewer than two seeds.
    let interval: (lower: Double, upper: Double)?

    static func == (l: Self, r: Self) -> Bool {
        l.seeds == r.seeds && l.mean == r.mean && l.interval?.lower == r.interval?.lower && l.interval?.upper == r.interval?.upper
    }

    /// nil when the two settings share no seed.
    init?(_ a: [Int: Double], _ b: [Int: Double]) {
        let d = a.keys.filter { b[$0] != nil }.sorted().map { a[$0]! - b[$0]! }
        guard !d.isEmpty else { return nil }
        let m = d.reduce(0, +) / Double(d.count)
        seeds = d.count
        mean = m
        guard d.count >= 2 else { interval = nil; return }
        let variance = d.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Double(d.count - 1)
        let half = Self.t975(degreesOfFreedom: d.count - 1) * (variance / Double(d.count)).squareRoot()
        interval = (m - half, m + half)
    }

    /// Whether the interval excludes zero (never with one seed).
    var isMeasurable: Bool { interval.map { $0.lower > 0 || $0.upper < 0 } ?? false }

    /// `Δ -0.123 (95% CI [-0.200, -0.046], 3 seeds)`, or `Δ -0.123 (one seed)`.
    var text: String {
        let m = String(format: "Δ %+.3f", mean)
        guard let i = interval else { return m + " (one seed)" }
        return m + String(format: " (95%% CI [%+.3f, %+.3f], %d seeds)", i.lower, i.upper, seeds)
    }

    /// The 0.975 quantile of Student's t (two-sided 95%), tabulated to 30 degrees of freedom.
    static func t975(degreesOfFreedom n: Int) -> Double {
        let table = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
                     2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
                     2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]
        if n >= 1 && n <= table.count { return table[n - 1] }
        return n <= 60 ? 2.000 : n <= 120 ? 1.980 : 1.960
    }
}

extension SweepReport {
    /// One comparison as a finding: `what`, the paired difference (a - b), and `lower` or
    /// `higher` only when the interval excludes zero. With one seed no finding is stated; with
    /// an interval across zero, "no measurable difference".
    static func finding(_ what: String, _ d: PairedDifference?, lower: String, higher: String) -> String {
        guard let d else { return what + ": the two settings share no seed, so they are not compared." }
        let verdict: String
        if d.interval == nil {
            verdict = "one seed, so no finding is supported"
        } else if !d.isMeasurable {
            verdict = "no measurable difference"
        } else {
            verdict = d.mean < 0 ? lower : higher
        }
        return "\(what): \(d.text) — \(verdict)."
    }
}

/// What a sweep's break-even rests on: how many epochs of the cache a student reads, and the
/// measured wall time of the pass and of cached and online students.
public struct AmortisationEvidence: Codable, Sendable, Equatable {
    /// Tokens in the cache (one teacher pass) and tokens a cache student trains on.
    public var cacheTokens: Int
    public var studentTokens: Double
    /// studentTokens / cacheTokens: an online teacher runs over this many caches' worth per student.
    public var epochs: Double
    public var passSeconds: Double
    /// Mean measured seconds of a cache student and of an online student (nil without one).
    public var cachedStudentSeconds: Double
    public var onlineStudentSeconds: Double?
    /// Smallest n with pass + n cached students faster than n online students (measured).
    public var breakEvenSeconds: Int?

    init?(results: [SettingResult], teacherPass: TeacherPassSummary) {
        let cached = results.filter { $0.setting.policy.targetMode != nil }
        guard !cached.isEmpty, teacherPass.tokens > 0 else { return nil }
        let online = results.filter { $0.setting.policy == .online }
        cacheTokens = teacherPass.tokens
        studentTokens = cached.map { Double($0.tokens) }.reduce(0, +) / Double(cached.count)
        epochs = studentTokens / Double(cacheTokens)
        passSeconds = teacherPass.seconds
        cachedStudentSeconds = cached.map(\.seconds).reduce(0, +) / Double(cached.count)
        onlineStudentSeconds = online.isEmpty ? nil : online.map(\.seconds).reduce(0, +) / Double(online.count)
        breakEvenSeconds = onlineStudentSeconds.flatMap { o in
            o > cachedStudentSeconds ? Int((passSeconds / (o - cachedStudentSeconds)).rounded(.down)) + 1 : nil
        }
    }
}
