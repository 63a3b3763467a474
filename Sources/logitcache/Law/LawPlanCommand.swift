import ArgumentParser
import Foundation
import ScalingLaws

/// `logitcache law plan`: the compute-optimal distillation problem of Busbridge et al. (2025),
/// §5, beside the supervised alternative on the same budget.
struct LawPlanCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Compute-optimal distillation: the student (and teacher) that minimise Eq. 8 under a FLOP budget.",
        discussion: """
            Minimises the predicted student cross-entropy (Eq. 8) over N_S and D_S, and over the \\
            teacher unless one is given, with Eq. 9's FLOPs per student equal to --budget:
              3 F(N_S) D_S + (F(N_T) + cache write) D_S / n [logits] + 3 F(N_T) D_T / n [pretraining] + cache read D_S
            Scenarios (--scenario): best-case (the teacher costs nothing: its loss is chosen freely), \\
            teacher-inference (its logits are paid, pretraining is not: a chosen teacher is the \\
            smallest of its loss), teacher-pretraining, teacher-pretraining+inference. The \\
            teacher's costs are shared by --students n (delta = 1/n). Give an existing teacher \\
            with --lt and --nt. Measured cache costs per token (`logitcache-bench read`, the \\
            teacher pass's manifest) enter with --cache-write-flops / --cache-read-flops. \\
            F(N) = 2N unless --context, --vocab and --aspect-ratio give the shape. Printed beside \\
            the plan: Eq. 1's best model on the whole budget, so you see when distillation does \\
            not pay. Example: logitcache law plan --budget 1e21 --scenario teacher-pretraining+inference
            """)

    @Option(help: "FLOPs per student (its share of the teacher's costs included).") var budget: Double
    @Option(help: "Students sharing the teacher's costs (delta = 1/n).") var students: Int = 1
    @Option(help: "best-case | teacher-inference | teacher-pretraining | teacher-pretraining+inference")
    var scenario: String = DistillationScenario.teacherPretrainingAndInference.rawValue
    @Option(name: .customLong("lt"), help: "An existing teacher's cross-entropy (with --nt).") var teacherLoss: Double?
    @Option(name: .customLong("nt"), help: "An existing teacher's non-embedding parameters (with --lt).") var teacherParameters: Quantity?
    @Option(help: "Cache writing FLOPs per token beyond the teacher forward.") var cacheWriteFlops: Double = 0
    @Option(help: "Cache reading FLOPs per token, per student.") var cacheReadFlops: Double = 0
    @Option(help: "Attention context length n_ctx (with --vocab and --aspect-ratio).") var context: Double?
    @Option(help: "Vocabulary size n_vocab.") var vocab: Double?
    @Option(help: "Aspect ratio d_model / n_layers.") var aspectRatio: Double?
    @Option(help: "Least student tokens per parameter (Eq. 8 says little about students with almost no data).")
    var minTokensPerParameter: Double = 1
    @Option(help: "JSON file of coefficients (as `law predict`; needs \"distillation\").") var coefficients: String?
    @Flag(help: "Print JSON.") var json = false

    func validate() throws {
        guard budget.isFinite, budget > 0 else { throw ValidationError("--budget must be a positive number of FLOPs, got \(budget)") }
        guard minTokensPerParameter.isFinite, minTokensPerParameter >= 0 else {
            throw ValidationError("--min-tokens-per-parameter must be a non-negative number, got \(minTokensPerParameter)")
        }
        guard students >= 1 else { throw ValidationError("--students must be at least 1, got \(students)") }
        guard DistillationScenario(rawValue: scenario) != nil else {
            throw ValidationError("--scenario \(scenario) is not one of \(DistillationScenario.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard (teacherLoss == nil) == (teacherParameters == nil) else { throw ValidationError("--lt and --nt go together") }
        if let l = teacherLoss, !(l.isFinite && l > 0) { throw ValidationError("--lt must be a positive number of nats, got \(l)") }
        if teacherLoss != nil, DistillationScenario(rawValue: scenario)!.countsTeacherPretraining {
            throw ValidationError("an existing teacher (--lt, --nt) has no pretraining to pay: use best-case or teacher-inference")
        }
        let shape = [context, vocab, aspectRatio].compactMap { $0 }
        guard shape.isEmpty || shape.count == 3 else { throw ValidationError("--context, --vocab and --aspect-ratio go together") }
        guard shape.allSatisfy({ $0.isFinite && $0 > 0 }) else { throw ValidationError("shape values must be positive") }
        for (name, v) in [("--cache-write-flops", cacheWriteFlops), ("--cache-read-flops", cacheReadFlops)] {
            guard v.isFinite, v >= 0 else { throw ValidationError("\(name) must be a non-negative number, got \(v)") }
        }
    }

    struct Output: Encodable {
        var scenario: String
        var students: Int
        var budget: Double
        var forward: ForwardCost
        var plan: DistillationPlan
        var distillationWins: Bool
        var coefficientsSource: String
    }

    func run() throws {
        var law = DistillationLaw.busbridge2025, source = DistillationLaw.busbridge2025Source
        if let path = coefficients { law = try loadLawCoefficients(path, option: "--coefficients"); source = path }
        var forward = ForwardCost.leadingOrder
        if let context, let vocab, let aspectRatio {
            forward = .shaped(TransformerShape(contextLength: context, vocabularySize: vocab, aspectRatio: aspectRatio))
        }
        let s = DistillationScenario(rawValue: scenario)!  // Safe because validate() parsed it.
        let teacher: PlanTeacher = teacherLoss.map { .given(loss: $0, parameters: teacherParameters!.value) } ?? .chosen
        let request = PlanRequest(budget: budget, students: students, scenario: s, teacher: teacher, forward: forward,
                                  cacheWritePerToken: cacheWriteFlops, cacheReadPerToken: cacheReadFlops,
                                  minTokensPerParameter: minTokensPerParameter)
        let plan: DistillationPlan
        do { plan = try planDistillation(law: law, request: request) } catch let e as PlanError { throw LawInputError(e.description) }
        if json {
            try printJSON(Output(scenario: s.rawValue, students: students, budget: budget, forward: forward, plan: plan,
                                 distillationWins: plan.distillationWins, coefficientsSource: source))
            return
        }
        func f(_ x: Double) -> String { String(format: "%.4f", x) }
        print("coefficients: \(source); scenario \(s.rawValue), \(students) student(s) sharing the teacher; budget \(sci(budget)) FLOPs per student")
        print(forward == .leadingOrder ? "F(N) = 2N (no shape given)" : "F(N) with the attention-context and vocabulary terms of the given shape")
        print("student   N_S = \(sci(plan.NS)), D_S = \(sci(plan.DS)) (\(String(format: "%.1f", plan.DS / plan.NS)) tokens/parameter): predicted \(f(plan.predictedLoss)) nats/token")
        var t = "teacher   L_T = \(f(plan.teacherLoss))"
        if let NT = plan.NT { t += ", N_T = \(sci(NT))" }
        if let DT = plan.DT { t += ", D_T = \(sci(DT))" }
        print(t + (teacherLoss != nil ? " (given)" : " (chosen)"))
        print("FLOPs     student \(sci(plan.studentFLOPs)), teacher logits \(sci(plan.teacherLogitFLOPs)), teacher pretraining \(sci(plan.teacherPretrainingFLOPs)), cache \(sci(plan.cacheFLOPs))")
        print("supervised (Eq. 1) on the same budget: N = \(sci(plan.supervisedN)), D = \(sci(plan.supervisedD)): \(f(plan.supervisedLoss)) nats/token")
        print(plan.distillationWins
              ? "distillation is predicted \(f(plan.supervisedLoss - plan.predictedLoss)) nats/token better than supervised training"
              : "distillation does not pay here: supervised training is predicted \(f(plan.predictedLoss - plan.supervisedLoss)) nats/token better")
    }
}
