import Foundation
import Testing
@testable import ScalingLaws
import Random

@Suite struct OptimizerTests {
    /// f = (x - 3)^2 + 10 (y + 2)^2 + (z - 0.5)^2 on [0, 1]^3: the unconstrained minimum
    /// (3, -2, 0.5) lies outside the box in x and y, so the answer is (1, 0, 0.5).
    @Test func boundedQuadraticStopsOnTheBounds() {
        let m = minimizeBounded({ x, g in
            g[0] = 2 * (x[0] - 3); g[1] = 20 * (x[1] + 2); g[2] = 2 * (x[2] - 0.5)
            return (x[0] - 3) * (x[0] - 3) + 10 * (x[1] + 2) * (x[1] + 2) + (x[2] - 0.5) * (x[2] - 0.5)
        }, start: [0.2, 0.9, 0.9], lower: [0, 0, 0], upper: [1, 1, 1])
        #expect(m.converged)
        #expect(abs(m.x[0] - 1) < 1e-12 && abs(m.x[1]) < 1e-12 && abs(m.x[2] - 0.5) < 1e-7)
    }

    /// Each stop reason is reported as what happened: a gradient pointing the wrong way leaves
    /// no step that lowers f (line search), a tiny iteration budget runs out, NaN is named.
    @Test func stopReasonsNameWhatHappened() {
        // f = x claims gradient -1: every step to the right raises f (x = 0 + t is exact, so no
        // step rounds back onto the start).
        let wrongGradient = minimizeBounded({ x, g in g[0] = -1; return x[0] },
                                            start: [0], lower: [-10], upper: [10])
        #expect(wrongGradient.stop == .lineSearch && !wrongGradient.converged && wrongGradient.x == [0])
        var short = BoundedQuasiNewtonOptions()
        short.maxIterations = 2
        let limited = minimizeBounded(Self.rosenbrock, start: [-1.2, 1], lower: [-2, -2], upper: [2, 2], options: short)
        #expect(limited.stop == .iterationLimit && !limited.converged && limited.iterations == 2)
        let nan = minimizeBounded({ _, g in g[0] = 0; return .nan }, start: [0], lower: [-1], upper: [1])
        #expect(nan.stop == .nonFinite && !nan.converged)
        let fine = minimizeBounded(Self.rosenbrock, start: [-1.2, 1], lower: [-2, -2], upper: [2, 2])
        #expect([BoundedStop.gradientTolerance, .relativeTolerance].contains(fine.stop) && fine.converged)
    }

    static func rosenbrock(_ x: [Double], _ g: inout [Double]) -> Double {
        let a = 1 - x[0], b = x[1] - x[0] * x[0]
        g[0] = -2 * a - 400 * x[0] * b
        g[1] = 200 * b
        return a * a + 100 * b * b
    }

    @Test func rosenbrockInsideTheBox() {
        let m = minimizeBounded(Self.rosenbrock, start: [-1.2, 1], lower: [-2, -2], upper: [2, 2])
        #expect(m.converged)
        #expect(abs(m.x[0] - 1) < 1e-5 && abs(m.x[1] - 1) < 1e-5)
    }

    /// With x <= 0.5 the minimum is at x = 0.5, y = 0.25: along y = x^2 the function is
    /// (1 - x)^2, which still falls towards the bound.
    @Test func rosenbrockWithActiveBound() {
        let m = minimizeBounded(Self.rosenbrock, start: [-1.2, 1], lower: [-2, -2], upper: [0.5, 2])
        #expect(abs(m.x[0] - 0.5) < 1e-12 && abs(m.x[1] - 0.25) < 1e-6)
        #expect(abs(m.value - 0.25) < 1e-9)
    }
}

/// Deterministic normal draws (SplitMix64 + Box–Muller), so the synthetic runs are reproducible.
struct SeededNormal {
    var rng: SplitMix64
    init(state: UInt64) { rng = SplitMix64(seed: state) }
    /// Uniform in (0, 1): never 0, so the logarithm below stays finite.
    mutating func uniform() -> Double { (Double(rng.next() >> 11) + 0.5) * 0x1p-53 }
    mutating func next() -> Double {
        (-2 * log(uniform())).squareRoot() * cos(2 * .pi * uniform())
    }
}

@Suite struct SupervisedFitTests {
    /// Runs from a known law over 6 model sizes x 6 tokens-per-parameter ratios.
    static func syntheticRuns(_ truth: SupervisedCoefficients, noise: Double, seed: UInt64) -> [SupervisedRun] {
        var rng = SeededNormal(state: seed)
        var runs: [SupervisedRun] = []
        for N in [3e7, 1e8, 3e8, 1e9, 3e9, 1e10] {
            for ratio in [2.0, 8, 20, 60, 200, 800] {
                let D = N * ratio
                runs.append(SupervisedRun(N: N, D: D, loss: truth.loss(parameters: N, tokens: D) * exp(noise * rng.next())))
            }
        }
        return runs
    }

    @Test func recoversPublishedCoefficientsFromNoiselessRuns() throws {
        let truth = SupervisedCoefficients.busbridge2025
        let fit = try fitSupervised(runs: Self.syntheticRuns(truth, noise: 0, seed: 1))
        let c = fit.coefficients
        #expect(fit.maxRelativeError < 1e-4)
        #expect(fit.stops.values.reduce(0, +) == fit.starts)
        #expect(fit.converged == (fit.stops["gradientTolerance"] ?? 0) + (fit.stops["relativeTolerance"] ?? 0))
        #expect(abs(c.E - truth.E) / truth.E < 0.02)
        #expect(abs(c.alpha - truth.alpha) < 0.02 && abs(c.beta - truth.beta) < 0.02 && abs(c.gamma - truth.gamma) < 0.02)
        #expect(abs(log(c.A / truth.A)) < 0.2 && abs(log(c.B / truth.B)) < 0.2)
    }

    /// With 0.3% multiplicative noise the fit must still predict unseen (larger) runs to
    /// within 1% and land near the true exponents.
    @Test func recoversKnownLawFromNoisyRunsAndExtrapolates() throws {
        let truth = SupervisedCoefficients(E: 1.8, A: 400, B: 2000, alpha: 0.35, beta: 0.3, gamma: 0.8)
        let fit = try fitSupervised(runs: Self.syntheticRuns(truth, noise: 0.003, seed: 42))
        let c = fit.coefficients
        #expect(fit.meanRelativeError < 0.004)
        #expect(abs(c.E - truth.E) / truth.E < 0.05)
        #expect(abs(c.alpha - truth.alpha) < 0.06 && abs(c.beta - truth.beta) < 0.06)
        for (N, D) in [(3e10, 6e11), (1e11, 2e12)] {
            let p = c.loss(parameters: N, tokens: D), t = truth.loss(parameters: N, tokens: D)
            #expect(abs(p - t) / t < 0.01)
        }
    }

    /// At 1% noise the paper's Eq. 1 coefficients lie in the fit's 95% bootstrap intervals, and
    /// a fit without the largest models predicts them to within the noise.
    @Test func atOnePercentNoiseTheTruthLiesInTheIntervals() throws {
        let truth = SupervisedCoefficients.busbridge2025
        let fit = try fitSupervised(runs: Self.syntheticRuns(truth, noise: 0.01, seed: 5))
        let want = ["E": truth.E, "A": truth.A, "B": truth.B, "alpha": truth.alpha, "beta": truth.beta, "gamma": truth.gamma]
        #expect(fit.intervals.count == 6)
        for (name, value) in want {
            let i = try #require(fit.intervals[name])
            #expect(i.contains(value), "\(name) = \(value) outside [\(i.lower), \(i.upper)]")
        }
        let held = try #require(fit.heldOut)
        #expect(held.heldOutFromN == 1e10 && held.heldOutRuns == 6 && held.fittedRuns == 30)
        #expect(held.meanRelativeError < 0.03)
        // Without bootstrap there are no intervals; with one model size, no held-out check.
        var o = SupervisedFitOptions()
        o.bootstrap = 0
        let one = try fitSupervised(runs: Self.syntheticRuns(truth, noise: 0, seed: 1).filter { $0.N == 1e9 } + [
            SupervisedRun(N: 1e9, D: 3e9, loss: 3.0)], options: o)
        #expect(one.intervals.isEmpty && one.heldOut == nil)
    }

    @Test func tooFewRunsIsAnError() {
        let runs = (1...6).map { SupervisedRun(N: Double($0) * 1e8, D: 1e10, loss: 3) }
        #expect(throws: ScalingLawError.tooFewRuns(count: 6, needed: 7)) { try fitSupervised(runs: runs) }
    }

    @Test func runsFileParsesAndNamesBadLines() throws {
        let text = "{\"N\": 1e8, \"D\": 2e9, \"loss\": 3.1, \"note\": \"x\"}\n\n{\"N\": 2e8, \"D\": 4e9, \"loss\": 2.9}\n"
        #expect(try SupervisedRun.parseJSONLines(text, source: "runs.jsonl")
                == [SupervisedRun(N: 1e8, D: 2e9, loss: 3.1), SupervisedRun(N: 2e8, D: 4e9, loss: 2.9)])
        #expect(throws: ScalingLawError.badRun(source: "r", line: 2, reason: "missing \"loss\"")) {
            try SupervisedRun.parseJSONLines("{\"N\":1,\"D\":1,\"loss\":1}\n{\"N\":1,\"D\":1}", source: "r")
        }
        #expect(throws: ScalingLawError.badRun(source: "r", line: 1, reason: "\"D\" is not a number")) {
            try SupervisedRun.parseJSONLines("{\"N\":1,\"D\":\"big\",\"loss\":1}", source: "r")
        }
        #expect(throws: ScalingLawError.badRun(source: "r", line: 1, reason: "not a JSON object")) {
            try SupervisedRun.parseJSONLines("[1, 2]", source: "r")
        }
        #expect(throws: ScalingLawError.badRun(source: "r", line: 1, reason: "\"N\" must be a positive finite number, got -5.0")) {
            try SupervisedRun.parseJSONLines("{\"N\":-5,\"D\":1,\"loss\":1}", source: "r")
        }
    }
}
