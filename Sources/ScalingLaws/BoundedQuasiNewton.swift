import Foundation

/// Options of ``minimizeBounded(_:start:lower:upper:options:)``.
public struct BoundedQuasiNewtonOptions: Sendable {
    /// Number of (s, y) pairs kept for the inverse-Hessian estimate.
    public var memory: Int = 10
    /// Iteration limit.
    public var maxIterations: Int = 500
    /// Stop when every component of the projected gradient is at most this.
    public var gradientTolerance: Double = 1e-10
    /// Stop when an iteration lowers f by at most this relative amount.
    public var relativeTolerance: Double = 1e-14
    public init() {}
}

/// Result of a bounded minimisation.
public struct BoundedMinimum: Sendable {
    /// The minimiser found, inside the box.
    public var x: [Double]
    /// f at `x`.
    public var value: Double
    /// Iterations taken.
    public var iterations: Int
    /// Whether a tolerance was met (false: iteration limit or line search failure).
    public var converged: Bool { stop == .gradientTolerance || stop == .relativeTolerance }
    /// Why the iteration stopped.
    public var stop: BoundedStop
}

/// Why ``minimizeBounded(_:start:lower:upper:options:)`` stopped.
public enum BoundedStop: String, Codable, Sendable, CaseIterable {
    /// The projected gradient fell below the tolerance.
    case gradientTolerance
    /// An iteration lowered f by less than the relative tolerance.
    case relativeTolerance
    /// No step along the search direction, down to 2^-60 of it, lowered f: at the limit of
    /// floating-point resolution this is a minimum too, but no tolerance was met.
    case lineSearch
    /// The iteration limit was reached.
    case iterationLimit
    /// f became NaN or infinite.
    case nonFinite
}

/// Minimises `f` over the box `lower <= x <= upper` with a projected limited-memory BFGS
/// (the idea of L-BFGS-B, simplified): variables held at a bound by the gradient are frozen
/// for the step, the L-BFGS two-loop recursion gives a direction in the free variables, and a
/// backtracking Armijo search runs along the projected path `P(x + t d)`.
///
/// - Parameters:
///   - f: returns the objective and writes its gradient into the second argument (same count
///     as `start`).
///   - start: initial point; projected into the box first.
/// - Complexity: O(iterations * (cost of f + memory * n)).
public func minimizeBounded(_ f: ([Double], inout [Double]) -> Double, start: [Double],
                            lower: [Double], upper: [Double],
                            options: BoundedQuasiNewtonOptions = .init()) -> BoundedMinimum {
    let n = start.count
    precondition(lower.count == n && upper.count == n, "bounds must match the start point")
    func project(_ v: [Double]) -> [Double] { (0..<n).map { min(max(v[$0], lower[$0]), upper[$0]) } }

    var x = project(start)
    var g = [Double](repeating: 0, count: n)
    var fx = f(x, &g)
    var S: [[Double]] = [], Y: [[Double]] = [], rho: [Double] = []
    var gNew = g

    // A variable is frozen when it sits on a bound and the gradient pushes it outward.
    func frozen(_ i: Int, _ x: [Double], _ g: [Double]) -> Bool {
        (x[i] <= lower[i] && g[i] > 0) || (x[i] >= upper[i] && g[i] < 0)
    }
    func projectedGradientNorm(_ x: [Double], _ g: [Double]) -> Double {
        var m = 0.0
        for i in 0..<n where !frozen(i, x, g) { m = max(m, abs(g[i])) }
        return m
    }

    for iteration in 0..<options.maxIterations {
        if !fx.isFinite { return BoundedMinimum(x: x, value: fx, iterations: iteration, stop: .nonFinite) }
        if projectedGradientNorm(x, g) <= options.gradientTolerance {
            return BoundedMinimum(x: x, value: fx, iterations: iteration, stop: .gradientTolerance)
        }
        let free = (0..<n).map { !frozen($0, x, g) }

        // Two-loop recursion on the free subspace: d = -H g.
        var q = (0..<n).map { free[$0] ? g[$0] : 0 }
        var a = [Double](repeating: 0, count: S.count)
        for k in stride(from: S.count - 1, through: 0, by: -1) {
            a[k] = rho[k] * dot(S[k], q, free)
            for i in 0..<n where free[i] { q[i] -= a[k] * Y[k][i] }
        }
        if let s = S.last, let y = Y.last {
            let scale = dot(s, y, free) / max(dot(y, y, free), .leastNormalMagnitude)
            if scale > 0 && scale.isFinite { for i in 0..<n { q[i] *= scale } }
        }
        for k in 0..<S.count {
            let b = rho[k] * dot(Y[k], q, free)
            for i in 0..<n where free[i] { q[i] += S[k][i] * (a[k] - b) }
        }
        var d = (0..<n).map { free[$0] ? -q[$0] : 0 }
        if dot(d, g, free) >= 0 || !d.allSatisfy(\.isFinite) {
            // Not a descent direction: forget the curvature pairs, fall back to steepest descent.
            S.removeAll(); Y.removeAll(); rho.removeAll()
            d = (0..<n).map { free[$0] ? -g[$0] : 0 }
        }
        if S.isEmpty {
            // First step of a (re)start: a unit-length step in the largest component.
            let m = d.reduce(0) { max($0, abs($1)) }
            if m > 1 { for i in 0..<n { d[i] /= m } }
        }

        // Backtracking Armijo search along the projected path.
        var t = 1.0, xNew = x, fNew = fx, accepted = false
        for _ in 0..<60 {
            xNew = project((0..<n).map { x[$0] + t * d[$0] })
            fNew = f(xNew, &gNew)
            var decrease = 0.0
            for i in 0..<n { decrease += g[i] * (xNew[i] - x[i]) }
            if fNew.isFinite && fNew <= fx + 1e-4 * decrease { accepted = true; break }
            t *= 0.5
        }
        if !accepted { return BoundedMinimum(x: x, value: fx, iterations: iteration, stop: .lineSearch) }

        let s = (0..<n).map { xNew[$0] - x[$0] }
        let y = (0..<n).map { gNew[$0] - g[$0] }
        let sy = dot(s, y, nil)
        if sy > 1e-12 * sqrt(dot(s, s, nil) * dot(y, y, nil)) {
            S.append(s); Y.append(y); rho.append(1 / sy)
            if S.count > options.memory { S.removeFirst(); Y.removeFirst(); rho.removeFirst() }
        }
        let previous = fx
        x = xNew; fx = fNew; g = gNew
        if abs(previous - fx) <= options.relativeTolerance * max(abs(previous), abs(fx), 1e-300) {
            return BoundedMinimum(x: x, value: fx, iterations: iteration + 1, stop: .relativeTolerance)
        }
    }
    return BoundedMinimum(x: x, value: fx, iterations: options.maxIterations, stop: .iterationLimit)
}

/// Dot product, restricted to `mask` when given.
private func dot(_ a: [Double], _ b: [Double], _ mask: [Bool]?) -> Double {
    var s = 0.0
    for i in 0..<a.count where mask?[i] ?? true { s += a[i] * b[i] }
    return s
}
