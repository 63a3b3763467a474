import ArgumentParser
import CommandLineSupport
import Foundation
import ScalingLaws

/// `logitcache law fit`: fits the supervised law (Eq. 1), or the distillation law (Eq. 8), to
/// the project's own runs.
struct LawFitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fit",
        abstract: "Fit the supervised law (Eq. 1) or, with --distillation, the distillation law (Eq. 8) to runs.",
        discussion: """
            RUNS.jsonl holds one JSON object per line with positive numbers "N" (non-embedding \
            parameters), "D" (training tokens) and "loss" (held-out cross-entropy, nats/token); \
            other keys are ignored and blank lines skipped. At least 7 runs are needed.
            The fit minimises a Huber loss on log-loss residuals with a bounded quasi-Newton \
            method from the best points of a grid of starts (as Busbridge et al. 2025 and \
            Hoffmann et al. 2022 do), and reports 95% bootstrap intervals of every coefficient \
            and how a fit without the largest N predicts those runs. \
            Example line: {"N": 1.2e8, "D": 2.4e9, "loss": 3.05}
            With --distillation DRUNS.jsonl the lines also hold "teacher_loss" (L_T) and "loss" \
            is the student's (L_S), at least 10 runs; Eq. 8 needs each student's supervised \
            loss, from the supervised law fitted to RUNS if given, else --coefficients FILE \
            (a `law fit --json` output), else the paper's Table 6. Its JSON output holds both \
            laws and feeds `law predict --coefficients`.
            """)

    @Argument(help: "JSON Lines file of supervised runs.")
    var runs: String?
    @Option(help: "JSON Lines file of distillation runs: fit Eq. 8.")
    var distillation: String?
    @Option(help: "With --distillation and no RUNS: the supervised law's coefficients (JSON).")
    var coefficients: String?
    @Option(help: "Huber threshold on log-loss residuals.")
    var huberDelta: Double = SupervisedFitOptions().huberDelta
    @Option(help: "Bootstrap resamples for the 95% intervals (0: none).")
    var bootstrap: Int = 100
    @Option(help: "Seed of the bootstrap (and of the distillation fit's starts).")
    var seed: UInt64 = 0
    @Flag(help: "Print JSON (can be fed to `law predict --coefficients`).")
    var json = false

    func validate() throws {
        guard huberDelta.isFinite, huberDelta > 0 else { throw ValidationError("--huber-delta must be positive, got \(huberDelta)") }
        guard (0...10_000).contains(bootstrap) else { throw ValidationError("--bootstrap must be in 0...10000, got \(bootstrap)") }
        guard runs != nil || distillation != nil else { throw ValidationError("give RUNS, --distillation DRUNS, or both") }
        guard coefficients == nil || (distillation != nil && runs == nil) else {
            throw ValidationError("--coefficients gives the supervised law for --distillation when no RUNS are given")
        }
    }

    struct Output: Encodable {
        struct Run: Encodable { var N: Double; var D: Double; var loss: Double; var predicted: Double; var relativeError: Double }
        var supervised: SupervisedCoefficients
        var intervals: [String: CoefficientInterval]
        var heldOut: HeldOutCheck?
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
        var supervised = SupervisedCoefficients.busbridge2025
        if let path = coefficients { supervised = try loadLawCoefficients(path, option: "--coefficients").supervised }
        if let runs { supervised = try fitSupervisedRuns(runs) }
        if let distillation { try fitDistillationRuns(distillation, supervised: supervised) }
    }

    /// Fits and prints Eq. 1 (unless only its coefficients are wanted for --distillation).
    private func fitSupervisedRuns(_ runs: String) throws -> SupervisedCoefficients {
        let text = try readText(runs, option: "RUNS")
        let parsed: [SupervisedRun]
        do { parsed = try SupervisedRun.parseJSONLines(text, source: runs) } catch let e as ScalingLawError {
            throw LawInputError(e.description)
        }
        var options = SupervisedFitOptions()
        options.huberDelta = huberDelta
        options.bootstrap = bootstrap
        options.seed = seed
        let fit: SupervisedFit
        do { fit = try fitSupervised(runs: parsed, options: options) } catch let e as ScalingLawError {
            throw LawInputError("\(runs): \(e.description)")
        }
        if distillation == nil { try report(fit, parsed) }
        return fit.coefficients
    }

    private func report(_ fit: SupervisedFit, _ parsed: [SupervisedRun]) throws {
        let c = fit.coefficients
        let rows = parsed.map { r -> Output.Run in
            let p = c.loss(parameters: r.N, tokens: r.D)
            return .init(N: r.N, D: r.D, loss: r.loss, predicted: p, relativeError: (p - r.loss) / r.loss)
        }
        let out = Output(supervised: c, intervals: fit.intervals, heldOut: fit.heldOut, objective: fit.objective, huberDelta: huberDelta,
                         meanRelativeError: fit.meanRelativeError, maxRelativeError: fit.maxRelativeError,
                         starts: fit.starts, converged: fit.converged, stops: fit.stops, runs: rows)
        if json { try printJSON(out); return }
        let why = BoundedStop.allCases.compactMap { r in fit.stops[r.rawValue].map { "\($0) \(Self.describe(r))" } }
        print("fitted \(fit.runs) runs (Huber delta \(huberDelta), \(fit.starts) starts: \(why.joined(separator: ", ")))")
        print(String(format: "E = %.4f  A = %.5g  B = %.5g  alpha = %.4f  beta = %.4f  gamma = %.4f",
                     c.E, c.A, c.B, c.alpha, c.beta, c.gamma))
        print(String(format: "relative error: mean %.3f%%, max %.3f%%", 100 * fit.meanRelativeError, 100 * fit.maxRelativeError))
        printChecks(names: SupervisedFit.names, intervals: fit.intervals, heldOut: fit.heldOut)
        print("         N          D     loss  predicted   rel.err")
        for r in rows {
            print(String(format: "%10.4g %10.4g %8.4f %10.4f %+8.3f%%", r.N, r.D, r.loss, r.predicted, 100 * r.relativeError))
        }
    }
}

extension LawFitCommand {
    struct DistillationOutput: Encodable {
        struct Run: Encodable { var N: Double; var D: Double; var teacher_loss: Double; var loss: Double; var predicted: Double; var relativeError: Double }
        var supervised: SupervisedCoefficients
        var distillation: DistillationCoefficients
        var intervals: [String: CoefficientInterval]
        var heldOut: HeldOutCheck?
        var objective: Double
        var huberDelta: Double
        var meanRelativeError: Double
        var maxRelativeError: Double
        var starts: Int
        var converged: Int
        var runs: [Run]
    }

    /// Fits and prints Eq. 8 to the distillation runs in `path`.
    func fitDistillationRuns(_ path: String, supervised: SupervisedCoefficients) throws {
        let parsed: [DistillationRun]
        do { parsed = try DistillationRun.parseJSONLines(try readText(path, option: "--distillation"), source: path) } catch let e as ScalingLawError {
            throw LawInputError(e.description)
        }
        var options = DistillationFitOptions()
        options.huberDelta = huberDelta
        options.bootstrap = bootstrap
        options.seed = seed
        let fit: DistillationFit
        do { fit = try fitDistillation(runs: parsed, supervised: supervised, options: options) } catch let e as ScalingLawError {
            throw LawInputError("\(path): \(e.description)")
        }
        let law = DistillationLaw(supervised: supervised, distillation: fit.coefficients)
        let rows = parsed.map { r -> DistillationOutput.Run in
            let p = law.studentLoss(studentParameters: r.N, studentTokens: r.D, teacherLoss: r.teacherLoss)!
            return .init(N: r.N, D: r.D, teacher_loss: r.teacherLoss, loss: r.loss, predicted: p, relativeError: (p - r.loss) / r.loss)
        }
        if json {
            try printJSON(DistillationOutput(supervised: supervised, distillation: fit.coefficients, intervals: fit.intervals,
                                             heldOut: fit.heldOut, objective: fit.objective, huberDelta: huberDelta,
                                             meanRelativeError: fit.meanRelativeError, maxRelativeError: fit.maxRelativeError,
                                             starts: fit.starts, converged: fit.converged, runs: rows))
            return
        }
        let c = fit.coefficients
        print("fitted Eq. 8 to \(fit.runs) distillation runs (Huber delta \(huberDelta), \(fit.starts) starts refined, \(fit.converged) converged)")
        print(String(format: "c0 = %.4g  c1 = %.4g  d1 = %.4g  f1 = %.4g  A' = %.5g  B' = %.5g  alpha' = %.4f  beta' = %.4f  gamma' = %.4f",
                     c.c0, c.c1, c.d1, c.f1, c.A, c.B, c.alpha, c.beta, c.gamma))
        print(String(format: "relative error: mean %.3f%%, max %.3f%%", 100 * fit.meanRelativeError, 100 * fit.maxRelativeError))
        printChecks(names: DistillationFit.names, intervals: fit.intervals, heldOut: fit.heldOut)
        print("         N          D      L_T     loss  predicted   rel.err")
        for r in rows {
            print(String(format: "%10.4g %10.4g %8.4f %8.4f %10.4f %+8.3f%%", r.N, r.D, r.teacher_loss, r.loss, r.predicted, 100 * r.relativeError))
        }
    }

    /// The intervals and the held-out check, as lines.
    func printChecks(names: [String], intervals: [String: CoefficientInterval], heldOut: HeldOutCheck?) {
        if !intervals.isEmpty {
            print("95% bootstrap intervals (\(bootstrap) resamples): " + names.compactMap { n in
                intervals[n].map { String(format: "%@ [%.4g, %.4g]", n, $0.lower, $0.upper) } }.joined(separator: "  "))
        }
        if let h = heldOut {
            print(String(format: "held out: fitted on %d runs with N < %.4g, the %d runs with N = %.4g predicted to %.3f%% mean, %.3f%% max relative error",
                         h.fittedRuns, h.heldOutFromN, h.heldOutRuns, h.heldOutFromN, 100 * h.meanRelativeError, 100 * h.maxRelativeError))
        } else {
            print("held out: no check (the runs have one model size)")
        }
    }
}
