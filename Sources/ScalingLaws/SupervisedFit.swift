import Foundation
import Random

/// One training run: a model of `N` non-embedding parameters trained on `D` tokens reached
/// cross-entropy `loss` (nats/token) on held-out data.
public struct SupervisedRun: Codable, Equatable, Sendable {
    public var N: Double
    public var D: Double
    public var loss: Double
    public init(N: Double, D: Double, loss: Double) { self.N = N; self.D = D; self.loss = loss }
}

/// Options of ``fitSupervised(runs:options:)``.
public struct SupervisedFitOptions: Sendable {
    /// Huber threshold on the residual of log-loss. The paper follows the Chinchilla recipe
    /// (Huber on log cross-entropy); 1e-4 is the default here — Hoffmann et al. (2022) used
    /// 1e-3, and the paper's exact value could not be checked when this was written.
    public var huberDelta: Double = 1e-4
    /// Grid of starting points, one list per parameter, in the fitter's parameterisation:
    /// log E, log A, log B, alpha, beta, gamma.
    public var grid: [[Double]] = [
        [-1, 0, 0.5, 1],          // log E
        [0, 4, 8, 12, 16],        // log A
        [0, 4, 8, 12, 16],        // log B
        [0.2, 0.5, 1],            // alpha
        [0.2, 0.5, 1],            // beta
        [0.3, 0.6, 1],            // gamma
    ]
    /// Box for each parameter in the same order (lower, upper).
    public var lower: [Double] = [-5, -5, -5, 0.01, 0.01, 0.05]
    public var upper: [Double] = [3, 40, 40, 2.5, 2.5, 2]
    /// Every grid point is scored; only the best `refine` are refined by the optimiser
    /// (the rest start too far away to win, and refining all of them only costs time).
    public var refine: Int = 64
    /// Optimiser settings for each refinement.
    public var optimizer = BoundedQuasiNewtonOptions()
    /// Bootstrap resamples of the runs for the 95% intervals (0: none), and their seed.
    public var bootstrap: Int = 100
    public var seed: UInt64 = 0
    public init() {}
}

/// The result of fitting Eq. 1 to runs.
public struct SupervisedFit: Codable, Equatable, Sendable {
    /// Fitted coefficients.
    public var coefficients: SupervisedCoefficients
    /// Summed Huber loss of the log-residuals at the optimum.
    public var objective: Double
    /// Mean over runs of |predicted - observed| / observed.
    public var meanRelativeError: Double
    /// Largest such relative error.
    public var maxRelativeError: Double
    /// Number of runs fitted.
    public var runs: Int
    /// Starting points refined (and how many met a convergence tolerance).
    public var starts: Int
    public var converged: Int
    /// How many refinements stopped for each reason (``BoundedStop`` raw values).
    public var stops: [String: Int]
    /// 95% bootstrap intervals by coefficient name (E, A, B, alpha, beta, gamma); empty without
    /// bootstrap.
    public var intervals: [String: CoefficientInterval] = [:]
    /// A fit on every model size but the largest, scored on the largest (nil with one size).
    public var heldOut: HeldOutCheck?

    /// Coefficient names in the fitter's θ order.
    public static let names = ["E", "A", "B", "alpha", "beta", "gamma"]
}

/// Errors of fitting and of reading runs.
public enum ScalingLawError: Error, Equatable, CustomStringConvertible {
    /// A line of a runs file is not a JSON object with positive finite numbers N, D and loss.
    case badRun(source: String, line: Int, reason: String)
    /// Too few runs to determine six coefficients.
    case tooFewRuns(count: Int, needed: Int)
    /// A coefficients file is not valid.
    case badCoefficients(source: String, reason: String)

    public var description: String {
        switch self {
        case .badRun(let source, let line, let reason): return "\(source) line \(line): \(reason)"
        case .tooFewRuns(let count, let needed): return "need at least \(needed) runs to fit this law, got \(count)"
        case .badCoefficients(let source, let reason): return "\(source): \(reason)"
        }
    }
}

extension SupervisedRun {
    /// Parses JSON Lines: one object per line with numbers `N` (non-embedding parameters),
    /// `D` (training tokens) and `loss` (nats/token); other keys are ignored, blank lines are
    /// skipped. `source` names the input in errors.
    public static func parseJSONLines(_ text: String, source: String) throws -> [SupervisedRun] {
        try parseRunLines(text, source: source, keys: ["N", "D", "loss"]).map { SupervisedRun(N: $0[0], D: $0[1], loss: $0[2]) }
    }
}

/// The values of `keys` on every non-blank line of JSON Lines `text`, each a positive finite
/// number; other keys are ignored.
/// - Throws: ``ScalingLawError/badRun(source:line:reason:)`` naming the line and the key.
func parseRunLines(_ text: String, source: String, keys: [String]) throws -> [[Double]] {
    var rows: [[Double]] = []
    for (index, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
        let line = raw.trimmingCharacters(in: .whitespacesAndNewlines)
        if line.isEmpty { continue }
        func bad(_ reason: String) -> ScalingLawError { .badRun(source: source, line: index + 1, reason: reason) }
        guard let object = try? JSONDecoder().decode([String: RunField].self, from: Data(line.utf8)) else {
            throw bad("not a JSON object")
        }
        rows.append(try keys.map { key in
            guard let value = object[key] else { throw bad("missing \"\(key)\"") }
            guard case .number(let d) = value else { throw bad("\"\(key)\" is not a number") }
            guard d.isFinite, d > 0 else { throw bad("\"\(key)\" must be a positive finite number, got \(d)") }
            return d
        })
    }
    return rows
}

/// One value of a runs-file line: a number, or anything else (string, bool, null, array, object).
private enum RunField: Decodable {
    case number(Double)
    case other

    init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let x = try? c.decode(Double.self) { self = .number(x) } else { self = .other }
    }
}

/// Fits the supervised law (Eq. 1) to `runs` the way the paper does (after Hoffmann et al.
/// 2022, Approach 3): minimise the summed Huber loss of `log L̂(N, D) - log L` over
/// θ = (log E, log A, log B, alpha, beta, gamma), with
///
///     log L̂ = LSE(log E, gamma * LSE(log A - alpha log N, log B - beta log D))
///
/// using a bounded quasi-Newton method from the best points of a grid of starts.
/// - Throws: ``ScalingLawError/tooFewRuns(count:needed:)`` with fewer than 7 runs.
/// Adds 95% bootstrap intervals (refits on resampled runs, started at the fit) and a held-out
/// check (a fit on every model size but the largest, scored on the largest).
public func fitSupervised(runs: [SupervisedRun], options: SupervisedFitOptions = .init()) throws -> SupervisedFit {
    guard runs.count >= 7 else { throw ScalingLawError.tooFewRuns(count: runs.count, needed: 7) }
    var fit = searchSupervised(runs, options: options)
    var rng = SplitMix64(seed: options.seed)
    let theta = SupervisedFit.theta(fit.coefficients)
    fit.intervals = bootstrapIntervals(runs, count: options.bootstrap, names: SupervisedFit.names, rng: &rng) { resample in
        let objective = SupervisedObjective(runs: resample, delta: options.huberDelta)
        let m = minimizeBounded({ objective.valueAndGradient($0, &$1) }, start: theta, lower: options.lower, upper: options.upper,
                                options: options.optimizer)
        return m.value.isFinite ? [exp(m.x[0]), exp(m.x[1]), exp(m.x[2]), m.x[3], m.x[4], m.x[5]] : nil
    }
    fit.heldOut = heldOutCheck(runs, minimumRuns: 7) { fitted in
        let c = searchSupervised(fitted, options: options).coefficients
        return { c.loss(parameters: $0.N, tokens: $0.D) }
    }
    return fit
}

extension SupervisedFit {
    /// The fitter's θ = (log E, log A, log B, alpha, beta, gamma) of coefficients.
    static func theta(_ c: SupervisedCoefficients) -> [Double] { [log(c.E), log(c.A), log(c.B), c.alpha, c.beta, c.gamma] }
}

/// The grid search and refinement of ``fitSupervised(runs:options:)``, without its checks.
func searchSupervised(_ runs: [SupervisedRun], options: SupervisedFitOptions) -> SupervisedFit {
    let objective = SupervisedObjective(runs: runs, delta: options.huberDelta)

    // Score every grid point, keep the best few.
    var scored: [(value: Double, start: [Double])] = []
    var point = [Double](repeating: 0, count: 6)
    func walk(_ k: Int) {
        if k == 6 {
            let v = objective.value(point)
            if v.isFinite { scored.append((v, point)) }
            return
        }
        for v in options.grid[k] { point[k] = v; walk(k + 1) }
    }
    walk(0)
    scored.sort { $0.value < $1.value }

    var best: BoundedMinimum?
    var converged = 0
    var stops: [String: Int] = [:]
    let starts = scored.prefix(max(1, options.refine))
    for s in starts {
        let m = minimizeBounded({ objective.valueAndGradient($0, &$1) }, start: s.start,
                                lower: options.lower, upper: options.upper, options: options.optimizer)
        if m.converged { converged += 1 }
        stops[m.stop.rawValue, default: 0] += 1
        if m.value.isFinite, m.value < (best?.value ?? .infinity) { best = m }
    }
    let theta = best?.x ?? scored.first?.start ?? [0, 0, 0, 0.5, 0.5, 1]
    let c = SupervisedCoefficients(E: exp(theta[0]), A: exp(theta[1]), B: exp(theta[2]),
                                   alpha: theta[3], beta: theta[4], gamma: theta[5])
    let errors = relativeErrors(runs) { c.loss(parameters: $0.N, tokens: $0.D) }
    return SupervisedFit(coefficients: c, objective: best?.value ?? objective.value(theta),
                         meanRelativeError: errors.mean, maxRelativeError: errors.max,
                         runs: runs.count, starts: starts.count, converged: converged, stops: stops)
}

/// Summed Huber loss of log-residuals of Eq. 1 and its analytic gradient.
struct SupervisedObjective {
    let logN: [Double], logD: [Double], logL: [Double]
    let delta: Double

    init(runs: [SupervisedRun], delta: Double) {
        logN = runs.map { log($0.N) }; logD = runs.map { log($0.D) }; logL = runs.map { log($0.loss) }
        self.delta = delta
    }

    func value(_ t: [Double]) -> Double {
        var g = [Double](repeating: 0, count: 6)
        return valueAndGradient(t, &g)
    }

    /// θ = (e, a, b, alpha, beta, gamma). Per run:
    ///   u = a - alpha log N,  v = b - beta log D,  s = LSE(u, v),  w = gamma s,
    ///   p = LSE(e, w) = log L̂,  r = p - log L.
    func valueAndGradient(_ t: [Double], _ grad: inout [Double]) -> Double {
        let (e, a, b, alpha, beta, gamma) = (t[0], t[1], t[2], t[3], t[4], t[5])
        for k in 0..<6 { grad[k] = 0 }
        var total = 0.0
        for i in 0..<logN.count {
            let u = a - alpha * logN[i], v = b - beta * logD[i]
            let s = logSumExp(u, v)
            let w = gamma * s
            let p = logSumExp(e, w)
            let r = p - logL[i]
            let h: Double  // dHuber/dr
            if abs(r) <= delta { total += 0.5 * r * r; h = r } else { total += delta * (abs(r) - 0.5 * delta); h = delta * (r < 0 ? -1 : 1) }
            let pe = exp(e - p), pw = exp(w - p)          // dp/de, dp/dw
            let su = exp(u - s), sv = exp(v - s)          // ds/du, ds/dv
            grad[0] += h * pe
            grad[1] += h * pw * gamma * su
            grad[2] += h * pw * gamma * sv
            grad[3] -= h * pw * gamma * su * logN[i]
            grad[4] -= h * pw * gamma * sv * logD[i]
            grad[5] += h * pw * s
        }
        return total
    }
}

/// log(exp(x) + exp(y)) without overflow.
@inline(__always) func logSumExp(_ x: Double, _ y: Double) -> Double {
    let m = max(x, y)
    if m == -.infinity { return m }
    return m + log(exp(x - m) + exp(y - m))
}
