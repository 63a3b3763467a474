import ArgumentParser
import CommandLineSupport
import Foundation
import ScalingLaws

/// `logitcache law flops`: Eq. 9 totals for S students, cached teacher pass against an online
/// teacher, and the number of students from which the cache is cheaper.
///
/// Measured teacher costs enter as a ``MeasuredTeacherCost`` (tokens, seconds, FLOPs), the
/// shape a cache manifest records them in; the flags below fill it, and a manifest reader in
/// this command layer can fill the same value without the ScalingLaws module knowing the format.
struct LawFlopsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flops",
        abstract: "Compute for S students: cached teacher pass vs online teacher, per scenario of Eq. 9.",
        discussion: """
            FLOPs ≈ 3 F(N_S) D_S + F(N_T) (delta_Lgt D_S + delta_Pre 3 D_T)   (Busbridge et al. 2025, Eq. 9)
            A cached teacher runs once over the D_S tokens and serves all S students \
            (delta_Lgt = 1/S each); an online teacher runs inside every student's loop \
            (delta_Lgt = 1). Teacher pretraining (with --teacher-tokens) is paid once (delta_Pre = 1/S). \
            F(N) = 2N unless --context, --vocab and --aspect-ratio give the shape, which adds the \
            attention-context and output-logits terms. Counts accept suffixes K, M, B, T.
            Example: logitcache law flops --nt 1B --ns 125M --ds 2.5B --students 4 --teacher-tokens 20B
            """)

    @Option(name: .customLong("nt"), help: "Teacher non-embedding parameters N_T.")
    var teacherParameters: Quantity
    @Option(name: .customLong("ns"), help: "Student non-embedding parameters N_S.")
    var studentParameters: Quantity
    @Option(name: .customLong("ds"), help: "Distillation tokens per student D_S (the cached corpus).")
    var studentTokens: Quantity
    @Option(help: "Number of students S sharing the teacher targets.")
    var students: Int
    @Option(help: "Teacher pretraining tokens D_T (enables the pretraining scenarios).")
    var teacherTokens: Quantity?
    @Option(help: "Attention context length n_ctx (with --vocab and --aspect-ratio).")
    var context: Double?
    @Option(help: "Vocabulary size n_vocab.")
    var vocab: Double?
    @Option(help: "Aspect ratio d_model / n_layers.")
    var aspectRatio: Double?
    @Option(help: "One-off FLOPs of capturing and writing the cache, beyond the teacher forward.")
    var cacheWriteFlops: Double = 0
    @Option(help: "FLOPs of reading the cache, per student.")
    var cacheReadFlops: Double = 0
    @Option(help: "Measured wall-clock seconds of the teacher pass.")
    var measuredTeacherSeconds: Double?
    @Option(help: "Counted FLOPs of the teacher pass (instead of F(N_T) D_S for the break-even).")
    var measuredTeacherFlops: Double?
    @Option(help: "Tokens that measured pass covered (default: D_S).")
    var measuredTeacherTokens: Quantity?
    @Option(help: "Measured seconds of writing the cache, beyond the teacher forward.")
    var cacheWriteSeconds: Double = 0
    @Option(help: "Measured seconds of reading the cache, per student.")
    var cacheReadSeconds: Double = 0
    @Option(help: "Also print totals for 1…MAX students (the cached and online curves).")
    var curve: Int?
    @Flag(help: "Print JSON.")
    var json = false

    func validate() throws {
        guard students >= 1 else { throw ValidationError("--students must be at least 1, got \(students)") }
        if let curve, !(1...100_000).contains(curve) { throw ValidationError("--curve must be between 1 and 100000, got \(curve)") }
        let shape = [context, vocab, aspectRatio].compactMap { $0 }
        guard shape.isEmpty || shape.count == 3 else {
            throw ValidationError("--context, --vocab and --aspect-ratio go together")
        }
        guard shape.allSatisfy({ $0.isFinite && $0 > 0 }) else { throw ValidationError("shape values must be positive") }
        for (name, v) in [("--cache-write-flops", cacheWriteFlops), ("--cache-read-flops", cacheReadFlops),
                          ("--cache-write-seconds", cacheWriteSeconds), ("--cache-read-seconds", cacheReadSeconds)] {
            guard v.isFinite, v >= 0 else { throw ValidationError("\(name) must be a non-negative number, got \(v)") }
        }
        for (name, v) in [("--measured-teacher-seconds", measuredTeacherSeconds), ("--measured-teacher-flops", measuredTeacherFlops)] {
            if let v, !(v.isFinite && v > 0) { throw ValidationError("\(name) must be positive, got \(v)") }
        }
        if measuredTeacherTokens != nil && measuredTeacherSeconds == nil && measuredTeacherFlops == nil {
            throw ValidationError("--measured-teacher-tokens needs --measured-teacher-seconds or --measured-teacher-flops")
        }
    }

    /// Break-even from a measured teacher cost, scaled to the D_S tokens.
    struct MeasuredBreakEven: Encodable {
        var unit: String
        var teacherPass: Double
        var overhead: CacheOverhead
        var breakEven: BreakEven
    }

    struct Output: Encodable {
        var model: AmortisationModel
        var teacherForwardPerToken: Double
        var studentForwardPerToken: Double
        var scenarios: [ScenarioTotals]
        var breakEvenFLOPs: BreakEven
        var measuredTeacherCost: MeasuredTeacherCost?
        var measuredBreakEven: [MeasuredBreakEven]
        /// Totals for 1…MAX students per inference-counting scenario, when --curve is given.
        var curve: [ScenarioTotals]?
    }

    func run() throws {
        var forward = ForwardCost.leadingOrder
        if let context, let vocab, let aspectRatio {
            forward = .shaped(TransformerShape(contextLength: context, vocabularySize: vocab, aspectRatio: aspectRatio))
        }
        let model = AmortisationModel(
            teacherParameters: teacherParameters.value, studentParameters: studentParameters.value,
            studentTokens: studentTokens.value, teacherTokens: teacherTokens?.value, students: students,
            forward: forward, overhead: CacheOverhead(write: cacheWriteFlops, readPerStudent: cacheReadFlops))
        // Without D_T the pretraining scenarios would silently equal the others: leave them out.
        let scenarios = DistillationScenario.allCases
            .filter { !$0.countsTeacherPretraining || teacherTokens != nil }
            .map(model.totals)
        var measured: MeasuredTeacherCost?
        var measuredBreakEven: [MeasuredBreakEven] = []
        if measuredTeacherSeconds != nil || measuredTeacherFlops != nil {
            let m = MeasuredTeacherCost(tokens: measuredTeacherTokens?.value ?? studentTokens.value,
                                        seconds: measuredTeacherSeconds, flops: measuredTeacherFlops)
            let DS = studentTokens.value
            if let pass = m.seconds(forTokens: DS) {
                let overhead = CacheOverhead(write: cacheWriteSeconds, readPerStudent: cacheReadSeconds)
                measuredBreakEven.append(.init(unit: "seconds", teacherPass: pass, overhead: overhead,
                                               breakEven: BreakEven(teacherPass: pass, overhead: overhead)))
            }
            if let pass = m.flops(forTokens: DS) {
                measuredBreakEven.append(.init(unit: "FLOPs", teacherPass: pass, overhead: model.overhead,
                                               breakEven: BreakEven(teacherPass: pass, overhead: model.overhead)))
            }
            measured = m
        }
        let out = Output(model: model, teacherForwardPerToken: model.teacherForward,
                         studentForwardPerToken: model.studentForward, scenarios: scenarios,
                         breakEvenFLOPs: model.breakEven, measuredTeacherCost: measured,
                         measuredBreakEven: measuredBreakEven,
                         curve: curve.map { max in curveScenarios.flatMap { model.curve($0, students: 1...max) } })
        if json { try printJSON(out); return }

        switch forward {
        case .leadingOrder: print("F(N) = 2N (no shape given: attention-context and vocabulary terms left out)")
        case .shaped(let s):
            print("F(N) = 2N (1 + \(sci(s.cContext)) N^-1/3 + \(sci(s.cVocabulary)) N^-2/3)  [n_ctx \(sci(s.contextLength)), n_vocab \(sci(s.vocabularySize)), d_model/n_layers \(sci(s.aspectRatio))]")
        }
        print("F(N_T) = \(sci(model.teacherForward)) FLOPs/token, F(N_S) = \(sci(model.studentForward)) FLOPs/token")
        print("S = \(students) students, D_S = \(sci(studentTokens.value)) tokens each; teacher pass over D_S = \(sci(model.teacherPass)) FLOPs")
        print("")
        print("scenario (Eq. 9)                 cached FLOPs    online FLOPs   online/cached")
        for t in scenarios {
            let name = t.scenario.rawValue.padding(toLength: 30, withPad: " ", startingAt: 0)
            print("\(name) \(String(format: "%14.4e  %14.4e  %12.3f", t.cached, t.online, t.online / t.cached))")
        }
        if teacherTokens == nil { print("(teacher-pretraining scenarios need --teacher-tokens)") }
        if let curve {
            for scenario in curveScenarios {
                print("")
                print("\(scenario.rawValue) against S:")
                print("   S    cached FLOPs    online FLOPs")
                for t in model.curve(scenario, students: 1...curve) {
                    print(String(format: "%4d  %14.4e  %14.4e", t.students, t.cached, t.online))
                }
            }
        }
        print("")
        print("break-even (modelled FLOPs): " + describe(model.breakEven))
        for m in measuredBreakEven {
            print("break-even (measured \(m.unit)): teacher pass \(sci(m.teacherPass)) \(m.unit) over D_S; " + describe(m.breakEven))
        }
    }

    /// The scenarios in which the cache makes a difference (teacher logits are paid for).
    private var curveScenarios: [DistillationScenario] {
        teacherTokens == nil ? [.teacherInference] : [.teacherInference, .teacherPretrainingAndInference]
    }

    private func describe(_ b: BreakEven) -> String {
        guard let s = b.students, let x = b.crossing else {
            return "never — reading the cache costs as much as running the teacher"
        }
        return "the cache is cheaper from S = \(s) students (arms equal at S = \(String(format: "%.3f", x)))"
    }
}
