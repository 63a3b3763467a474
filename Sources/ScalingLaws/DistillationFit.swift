import Foundation
import Random

/// One distillation run: a student of `N` non-embedding parameters distilled on `D` tokens from
/// a teacher of cross-entropy `teacherLoss` reached cross-entropy `loss` (nats/token).
public struct DistillationRun: Codable, Equatable, Sendable {
    public var N: Double
    public var D: Double
    public var teacherLoss: Double
    public var loss: Double

    public init(N: Double, D: Double, teacherLoss: Double, loss: Double) {
        self.N = N; self.D = D; self.teacherLoss = teacherLoss; self.loss = loss
    }

    enum CodingKeys: String, CodingKey { case N, D, teacherLoss = "teacher_loss", loss }

    /// Parses JSON Lines: one object per line with positive numbers `N`, `D`, `teacher_loss`
    /// (L_T) and `loss` (L_S); other keys are ignored, blank lines skipped.
    /// - Throws: ``ScalingLawError/badRun(source:line:reason:)`` naming the line and key.
    public static func parseJSONLines(_ text: String, source: String) throws -> [DistillationRun] {
        try parseRunLines(text, source: source, keys: ["N", "D", "teacher_loss", "loss"]).map {
            DistillationRun(N: $0[0], D: $0[1], teacherLoss: $0[2], loss: $0[3])
        }
    }
}

/// Options of ``fitDistillation(runs:supervised:options:)``.
public struct DistillationFitOptions: Sendable {
    /// Huber threshold on the residual of log-loss (as the supervised fit).
    public var huberDelta: Double = 1e-4
    /// Random starting points scored in the box (seeded), and how many of the best are refined.
    public var starts: Int = 16384
    public var refine: Int = 128
    /// Bootstrap resamples of the runs for the intervals (0: none).
    public var bootstrap: Int = 100
    /// Seed of the starts and the resamples.
    public var seed: UInt64 = 0
    /// Box of θ = (c0, log k, log d1, log f1, log A', log B', alpha', beta', gamma'), where
    /// k = c1 f1 d1^(-1/f1) (see ``fitDistillation(runs:supervised:options:)``).
    public var lower: [Double] = [-5, -15, log(0.1), log(1e-3), -5, -5, 0.01, 0.01, 0.05]
    public var upper: [Double] = [10, 15, log(10), log(2), 25, 30, 2.5, 2.5, 3]
    public var optimizer = BoundedQuasiNewtonOptions()
    public init() {}
}

/// A 95% bootstrap percentile interval of one coefficient.
public struct CoefficientInterval: Codable, Equatable, Sendable {
    public var lower: Double
    public var upper: Double
    public func contains(_ x: Double) -> Bool { x >= lower && x <= upper }
}

/// How a law fitted on the runs of smaller students predicts the largest students' runs.
public struct HeldOutCheck: Codable, Equatable, Sendable {
    /// The smallest N held out: runs with N at or above it were left out of the fit.
    public var heldOutFromN: Double
    public var fittedRuns: Int
    public var heldOutRuns: Int
    /// Mean and largest |predicted - observed| / observed over the held-out runs.
    public var meanRelativeError: Double
    public var maxRelativeError: Double
}

/// The result of fitting Eq. 8 to distillation runs.
public struct DistillationFit: Codable, Equatable, Sendable {
    public var coefficients: DistillationCoefficients
    /// The supervised law that gives each run's `L~_S` (Eq. 1; given, not fitted here).
    public var supervised: SupervisedCoefficients
    public var objective: Double
    public var meanRelativeError: Double
    public var maxRelativeError: Double
    public var runs: Int
    public var starts: Int
    public var converged: Int
    /// 95% bootstrap intervals by coefficient name (c0, c1, d1, f1, A, B, alpha, beta, gamma);
    /// empty without bootstrap.
    public var intervals: [String: CoefficientInterval]
    /// nil with fewer than two student sizes.
    public var heldOut: HeldOutCheck?
}

/// Fits the distillation law (Eq. 8) to `runs`, with `supervised` giving each student's
/// supervised loss `L~_S`, in the paper's log form: minimise the summed Huber loss of
/// `log L̂_S - log L_S` with a bounded quasi-Newton method (analytic gradient; least squares
/// first, then Huber) from the best of seeded random starts.
///
/// The fit works in θ = (c0, log k, log d1, log f1, log A', log B', alpha', beta', gamma') with
/// k = c1 f1 d1^(-1/f1): where the teacher is clearly stronger than the student
/// (q = (L_T / (L~_S d1))^(1/f1) small) the capacity-gap factor is exp(-k (L_T / L~_S)^(1/f1)),
/// so k is what most runs determine, and c1 and d1 apart only from runs near the transition;
/// with log c1 instead the two trade off along a narrow valley the optimiser rarely follows. Adds 95% bootstrap intervals (refits on resampled runs, started at the fit) and a
/// held-out check (a fit on every student size but the largest, scored on the largest).
/// - Throws: ``ScalingLawError/tooFewRuns(count:needed:)`` with fewer than 10 runs.
public func fitDistillation(runs: [DistillationRun], supervised: SupervisedCoefficients,
                            options o: DistillationFitOptions = .init()) throws -> DistillationFit {
    guard runs.count >= 10 else { throw ScalingLawError.tooFewRuns(count: runs.count, needed: 10) }
    var rng = SplitMix64(seed: o.seed)
    let best = bestDistillationFit(runs, supervised: supervised, options: o, rng: &rng)
    let c = DistillationFit.coefficients(best.x)
    let law = DistillationLaw(supervised: supervised, distillation: c)
    let errors = relativeErrors(runs) { law.studentLoss(studentParameters: $0.N, studentTokens: $0.D, teacherLoss: $0.teacherLoss)! }

    let intervals = bootstrapIntervals(runs, count: o.bootstrap, names: DistillationFit.names, rng: &rng) { resample in
        let objective = DistillationObjective(runs: resample, supervised: supervised, delta: o.huberDelta)
        let m = minimizeBounded({ objective.valueAndGradient($0, &$1) }, start: best.x, lower: o.lower, upper: o.upper,
                                options: o.optimizer)
        return m.value.isFinite ? DistillationFit.natural(m.x) : nil
    }
    let heldOut = heldOutCheck(runs, minimumRuns: 10) { fitted in
        let m = bestDistillationFit(fitted, supervised: supervised, options: o, rng: &rng)
        let small = DistillationLaw(supervised: supervised, distillation: DistillationFit.coefficients(m.x))
        return { small.studentLoss(studentParameters: $0.N, studentTokens: $0.D, teacherLoss: $0.teacherLoss)! }
    }
    return DistillationFit(coefficients: c, supervised: supervised, objective: best.value, meanRelativeError: errors.mean,
                           maxRelativeError: errors.max, runs: runs.count, starts: best.starts, converged: best.converged,
                           intervals: intervals, heldOut: heldOut)
}

extension DistillationFit {
    /// Coefficient names in θ order.
    public static let names = ["c0", "c1", "d1", "f1", "A", "B", "alpha", "beta", "gamma"]

    /// θ to the coefficients' natural values, in `names` order: c1 = k d1^(1/f1) / f1.
    static func natural(_ t: [Double]) -> [Double] {
        let f1 = exp(t[3])
        return [t[0], exp(t[1] + t[2] / f1) / f1, exp(t[2]), f1, exp(t[4]), exp(t[5]), t[6], t[7], t[8]]
    }

    static func coefficients(_ t: [Double]) -> DistillationCoefficients {
        let v = natural(t)
        return DistillationCoefficients(c0: v[0], c1: v[1], d1: v[2], f1: v[3], A: v[4], B: v[5], alpha: v[6], beta: v[7], gamma: v[8])
    }
}

/// The best refinement from seeded random starts, and how many starts converged.
func bestDistillationFit(_ runs: [DistillationRun], supervised: SupervisedCoefficients, options o: DistillationFitOptions,
                         rng: inout SplitMix64) -> (x: [Double], value: Double, starts: Int, converged: Int) {
    let objective = DistillationObjective(runs: runs, supervised: supervised, delta: o.huberDelta)
    var scored: [(value: Double, start: [Double])] = []
    for _ in 0..<max(1, o.starts) {
        let p = (0..<9).map { o.lower[$0] + (o.upper[$0] - o.lower[$0]) * rng.unit() }
        let v = objective.value(p)
        if v.isFinite { scored.append((v, p)) }
    }
    scored.sort { $0.value < $1.value }
    // Least squares first (smooth, so the quasi-Newton steps converge), then the Huber loss.
    let squares = DistillationObjective(runs: runs, supervised: supervised, delta: .infinity)
    var best: BoundedMinimum?
    var converged = 0
    let starts = scored.prefix(max(1, o.refine))
    for s in starts {
        let near = minimizeBounded({ squares.valueAndGradient($0, &$1) }, start: s.start, lower: o.lower, upper: o.upper,
                                   options: o.optimizer)
        let m = minimizeBounded({ objective.valueAndGradient($0, &$1) }, start: near.x, lower: o.lower, upper: o.upper,
                                options: o.optimizer)
        if m.converged { converged += 1 }
        if m.value.isFinite, m.value < (best?.value ?? .infinity) { best = m }
    }
    // Polish the best with a longer budget: near the optimum the valley is long and flat.
    var polish = o.optimizer
    polish.maxIterations = 20 * o.optimizer.maxIterations
    if let b = best {
        let m = minimizeBounded({ objective.valueAndGradient($0, &$1) }, start: b.x, lower: o.lower, upper: o.upper, options: polish)
        if m.value.isFinite, m.value <= b.value { best = m }
    }
    let x = best?.x ?? scored.first?.start ?? o.lower
    return (x, best?.value ?? objective.value(x), starts.count, converged)
}

/// Summed Huber loss of the log-residuals of Eq. 8 and its analytic gradient.
struct DistillationObjective {
    let logN: [Double], logD: [Double], logLT: [Double], logS: [Double], LT: [Double], logL: [Double]
    let delta: Double

    init(runs: [DistillationRun], supervised: SupervisedCoefficients, delta: Double) {
        logN = runs.map { log($0.N) }; logD = runs.map { log($0.D) }
        LT = runs.map(\.teacherLoss); logLT = LT.map { log($0) }
        logS = runs.map { log(supervised.loss(parameters: $0.N, tokens: $0.D)) }
        logL = runs.map { log($0.loss) }
        self.delta = delta
    }

    func value(_ t: [Double]) -> Double {
        var g = [Double](repeating: 0, count: 9)
        return valueAndGradient(t, &g)
    }

    /// θ = (c0, K = log k, u2 = log d1, u3 = log f1, a = log A', b = log B', alpha', beta',
    /// gamma'). Per run, with q = (L_T / (L~_S d1))^(1/f1) and m = c1 f1 = exp(K + u2 / f1):
    ///   log T = -c0 log L_T - m log(1 + q) + gamma' log(A'/N^alpha' + B'/D^beta'),
    ///   L̂ = L_T + T,  r = log L̂ - log L_S.
    func valueAndGradient(_ t: [Double], _ grad: inout [Double]) -> Double {
        let (c0, K, u2, u3, a, b, alpha, beta, gamma) = (t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8])
        let f1 = exp(u3), m = exp(K + u2 / f1)
        for k in 0..<9 { grad[k] = 0 }
        var total = 0.0
        for i in 0..<logN.count {
            let lq = (logLT[i] - logS[i] - u2) / f1             // log q
            let softplus = lq > 30 ? lq : log1p(exp(lq))         // log(1 + q)
            let sigmoid = 1 / (1 + exp(-lq))                     // q / (1 + q)
            let la = a - alpha * logN[i], lb = b - beta * logD[i]
            let lab = logSumExp(la, lb)                          // log(A'/N^alpha' + B'/D^beta')
            let wa = exp(la - lab), wb = exp(lb - lab)
            let logT = -c0 * logLT[i] - m * softplus + gamma * lab
            let T = exp(logT), Lhat = LT[i] + T
            let r = log(Lhat) - logL[i]
            let h: Double  // dHuber/dr
            if abs(r) <= delta { total += 0.5 * r * r; h = r } else { total += delta * (abs(r) - 0.5 * delta); h = delta * (r < 0 ? -1 : 1) }
            let k = h * T / Lhat                                 // dHuber/dlogT
            grad[0] -= k * logLT[i]
            grad[1] -= k * m * softplus
            grad[2] -= k * m / f1 * (softplus - sigmoid)
            grad[3] += k * m * (u2 * softplus / f1 + sigmoid * lq)
            grad[4] += k * gamma * wa
            grad[5] += k * gamma * wb
            grad[6] -= k * gamma * wa * logN[i]
            grad[7] -= k * gamma * wb * logD[i]
            grad[8] += k * lab
        }
        return total
    }
}

/// Mean and largest |predicted - observed| / observed.
func relativeErrors<R: RunLoss>(_ runs: [R], predict: (R) -> Double) -> (mean: Double, max: Double) {
    var sum = 0.0, worst = 0.0
    for r in runs {
        let e = abs(predict(r) - r.loss) / r.loss
        sum += e; worst = max(worst, e)
    }
    return (sum / Double(max(runs.count, 1)), worst)
}

/// A run of a model of N non-embedding parameters with an observed loss.
protocol RunLoss { var N: Double { get }; var loss: Double { get } }
extension DistillationRun: RunLoss {}
extension SupervisedRun: RunLoss {}

/// 95% percentile intervals, by coefficient name, of `refit` (the coefficients' values in
/// `names` order, nil where it failed) on `count` resamples of `runs` with replacement; empty
/// when no refit succeeds.
func bootstrapIntervals<R>(_ runs: [R], count: Int, names: [String], rng: inout SplitMix64,
                           refit: ([R]) -> [Double]?) -> [String: CoefficientInterval] {
    var samples: [[Double]] = []
    for _ in 0..<count {
        let resample = (0..<runs.count).map { _ in runs[Int(rng.next() % UInt64(runs.count))] }
        if let v = refit(resample) { samples.append(v) }
    }
    guard !samples.isEmpty else { return [:] }
    var out: [String: CoefficientInterval] = [:]
    for (i, name) in names.enumerated() { out[name] = percentileInterval(samples.map { $0[i] }) }
    return out
}

/// `fit` on the runs of every model size but the largest, scored on the largest (nil with one
/// size, or fewer than `minimumRuns` left to fit). `fit` returns the fitted law's prediction.
func heldOutCheck<R: RunLoss>(_ runs: [R], minimumRuns: Int, fit: ([R]) -> (R) -> Double) -> HeldOutCheck? {
    guard let top = runs.map(\.N).max(), runs.contains(where: { $0.N < top }) else { return nil }
    let fitted = runs.filter { $0.N < top }, held = runs.filter { $0.N >= top }
    guard fitted.count >= minimumRuns else { return nil }
    let e = relativeErrors(held, predict: fit(fitted))
    return HeldOutCheck(heldOutFromN: top, fittedRuns: fitted.count, heldOutRuns: held.count,
                        meanRelativeError: e.mean, maxRelativeError: e.max)
}

/// The 2.5% and 97.5% percentiles of `xs` (linear interpolation between order statistics).
func percentileInterval(_ xs: [Double]) -> CoefficientInterval {
    let s = xs.sorted()
    func q(_ p: Double) -> Double {
        let h = p * Double(s.count - 1), lo = Int(h.rounded(.down)), hi = min(lo + 1, s.count - 1)
        return s[lo] + (h - Double(lo)) * (s[hi] - s[lo])
    }
    return CoefficientInterval(lower: q(0.025), upper: q(0.975))
}
