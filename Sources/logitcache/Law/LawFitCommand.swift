import ArgumentParser
import CommandLineSupport
import Foundation
import ScalingLaws

/// `logitcache law fit`: fits the supervised law (Eq. 1) to the project's own runs.
struct LawFitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fit",
        abstract: "Fit the supervised law L(N, D) = E + (A/N^alpha + B/D^beta)^gamma to runs.",
        discussion: """
            RUNS.jsonl holds one JSON object per line with positive numbers "N" (non-embedding \
            parameters), "D" (training tokens) and "loss" (held-out cross-entropy, nats/token); \
            other keys are ignored and blank lines skipped. At least 7 runs are needed.
            The fit minimises a Huber loss on log-loss residuals with a bounded quasi-Newton \
            method from the best points of a grid of starts (as Busbridge et al. 2025 and \
            Hoffmann et al. 2022 do). Example line: {"N": 1.2e8, "D": 2.4e9, "loss": 3.05}
            """)

    @Argument(help: "JSON Lines file of runs.")
    var runs: String
    @Option(help: "Huber threshold on log-loss residuals.")
    var huberDelta: Double = SupervisedFitOptions().huberDelta
    @Flag(help: "Print JSON (its \"supervised\" object can be fed to `law predict --coefficients`).")
    var json = false

    func validate() throws {
        guard huberDelta.isFinite, huberDelta > 0 else { throw ValidationError("--huber-delta must be positive, got \(huberDelta)") }
    }

    struct Output: Encodable {
        struct Run: Encodable { var N: Double; var D: Double; var loss: Double; var predicted: Double; var relativeError: Double }
        var supervised: SupervisedCoefficients
        var objective: Double
        var huberDelta: Double
        var meanRelativeError: Double
        var maxRelativeError: Double
        var starts: Int
        var converged: Int
        var stops: [String: Int]
        var runs: [Run]
    }

    static func describe(_ stop: BoundedStop) -> String {
        switch stop {
        case .gradientTolerance: "met the gradient tolerance"
        case .relativeTolerance: "met the relative tolerance"
        case .lineSearch: "stopped where no step lowered the loss (floating-point limit)"
        case .iterationLimit: "hit the iteration limit"
        case .nonFinite: "ran into non-finite values"
        }
    }

    func run() throws {
        let text = try readText(runs, option: "RUNS")
        let parsed: [SupervisedRun]
        do { parsed = try SupervisedRun.parseJSONLines(text, source: runs) } catch let e as ScalingLawError {
            throw LawInputError(e.description)
        }
        var options = SupervisedFitOptions()
        options.huberDelta = huberDelta
        let fit: SupervisedFit
        do { fit = try fitSupervised(runs: parsed, options: options) } catch let e as ScalingLawError {
            throw LawInputError("\(runs): \(e.description)")
        }
        let c = fit.coefficients
        let rows = parsed.map { r -> Output.Run in
            let p = c.loss(parameters: r.N, tokens: r.D)
            return .init(N: r.N, D: r.D, loss: r.loss, predicted: p, relativeError: (p - r.loss) / r.loss)
        }
        let out = Output(supervised: c, objective: fit.objective, huberDelta: huberDelta,
                         meanRelativeError: fit.meanRelativeError, maxRelativeError: fit.maxRelativeError,
                         starts: fit.starts, converged: fit.converged, stops: fit.stops, runs: rows)
        if json { try printJSON(out); return }
        let why = BoundedStop.allCases.compactMap { r in fit.stops[r.rawValue].map { "\($0) \(Self.describe(r))" } }
        print("fitted \(fit.runs) runs (Huber delta \(huberDelta), \(fit.starts) starts: \(why.joined(separator: ", ")))")
        print(String(format: "E = %.4f  A = %.5g  B = %.5g  alpha = %.4f  beta = %.4f  gamma = %.4f",
                     c.E, c.A, c.B, c.alpha, c.beta, c.gamma))
        print(String(format: "relative error: mean %.3f%%, max %.3f%%", 100 * fit.meanRelativeError, 100 * fit.maxRelativeError))
        print("         N          D     loss  predicted   rel.err")
        for r in rows {
            print(String(format: "%10.4g %10.4g %8.4f %10.4f %+8.3f%%", r.N, r.D, r.loss, r.predicted, 100 * r.relativeError))
        }
    }
}
