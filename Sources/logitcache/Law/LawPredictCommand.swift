import ArgumentParser
import CommandLineSupport
import Foundation
import ScalingLaws

/// `logitcache law predict`: student cross-entropy from the supervised law (Eq. 1) and the
/// distillation law (Eq. 8).
struct LawPredictCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "predict",
        abstract: "Predict student cross-entropy: supervised (Eq. 1) and distilled (Eq. 8).",
        discussion: """
            N are non-embedding parameters, D tokens; losses are nats per token. The teacher is \
            given by its loss (--lt) or by size and pretraining tokens (--nt, --dt; its loss then \
            comes from Eq. 1). Counts accept suffixes K, M, B, T.

            Built in are the coefficients of both laws from Busbridge et al. (2025), Table 6 \
            (students of 143M-12.6B parameters on English C4). Give your own with \
            --coefficients FILE, a JSON object
              {"supervised": {"E":…,"A":…,"B":…,"alpha":…,"beta":…,"gamma":…},
               "distillation": {"c0":…,"c1":…,"d1":…,"f1":…,"A":…,"B":…,"alpha":…,"beta":…,"gamma":…}}
            ("distillation" may be omitted, and Eq. 8 is then not predicted; the output of \
            `law fit --json` is such a file).
            Example: logitcache law predict --ns 125M --ds 2.5B --nt 1B --dt 20B
            """)

    @Option(name: .customLong("ns"), help: "Student non-embedding parameters N_S.")
    var studentParameters: Quantity
    @Option(name: .customLong("ds"), help: "Student (distillation) tokens D_S.")
    var studentTokens: Quantity
    @Option(name: .customLong("lt"), help: "Teacher cross-entropy L_T in nats/token.")
    var teacherLoss: Double?
    @Option(name: .customLong("nt"), help: "Teacher non-embedding parameters N_T (with --dt).")
    var teacherParameters: Quantity?
    @Option(name: .customLong("dt"), help: "Teacher pretraining tokens D_T (with --nt).")
    var teacherTokens: Quantity?
    @Option(help: "JSON file of coefficients (see above).")
    var coefficients: String?
    @Flag(help: "Print JSON.")
    var json = false

    func validate() throws {
        let byLoss = teacherLoss != nil, bySize = teacherParameters != nil || teacherTokens != nil
        if byLoss && bySize { throw ValidationError("give the teacher as --lt L or as --nt N --dt D, not both") }
        if !byLoss && !bySize { throw ValidationError("give the teacher: --lt L, or --nt N with --dt D") }
        if bySize, teacherParameters == nil || teacherTokens == nil { throw ValidationError("--nt and --dt go together") }
        if let l = teacherLoss, !(l.isFinite && l > 0) { throw ValidationError("--lt must be a positive number of nats, got \(l)") }
    }

    struct Output: Encodable {
        struct Teacher: Encodable { var loss: Double; var N: Double?; var D: Double?; var source: String }
        var NS: Double
        var DS: Double
        var teacher: Teacher
        var supervisedStudentLoss: Double
        var distilledStudentLoss: Double?
        var coefficients: DistillationLaw
        var coefficientsSource: String

        enum CodingKeys: String, CodingKey {
            case NS, DS, teacher, supervisedStudentLoss, distilledStudentLoss, coefficients, coefficientsSource
        }
        /// Like the synthesised encoder, but an unavailable prediction is written as null.
        func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(NS, forKey: .NS); try c.encode(DS, forKey: .DS)
            try c.encode(teacher, forKey: .teacher)
            try c.encode(supervisedStudentLoss, forKey: .supervisedStudentLoss)
            try c.encode(distilledStudentLoss, forKey: .distilledStudentLoss)
            try c.encode(coefficients, forKey: .coefficients)
            try c.encode(coefficientsSource, forKey: .coefficientsSource)
        }
    }

    func run() throws {
        var law = DistillationLaw.busbridge2025
        var source = DistillationLaw.busbridge2025Source
        if let path = coefficients {
            law = try loadLawCoefficients(path, option: "--coefficients")
            source = path
        }
        let NS = studentParameters.value, DS = studentTokens.value
        let teacher: Output.Teacher
        if let l = teacherLoss {
            teacher = .init(loss: l, N: nil, D: nil, source: "given")
        } else {
            let NT = teacherParameters!.value, DT = teacherTokens!.value  // validate() guarantees both
            teacher = .init(loss: law.teacherLoss(parameters: NT, tokens: DT), N: NT, D: DT, source: "supervised law (Eq. 1)")
        }
        let out = Output(NS: NS, DS: DS, teacher: teacher,
                         supervisedStudentLoss: law.supervised.loss(parameters: NS, tokens: DS),
                         distilledStudentLoss: law.studentLoss(studentParameters: NS, studentTokens: DS, teacherLoss: teacher.loss),
                         coefficients: law, coefficientsSource: source)
        if json { try printJSON(out); return }
        print("coefficients: \(source)")
        print("student N_S = \(sci(NS)), D_S = \(sci(DS)) (\(String(format: "%.1f", DS / NS)) tokens/parameter)")
        if let NT = teacher.N, let DT = teacher.D {
            print("teacher L_T = \(String(format: "%.4f", teacher.loss)) nats/token from Eq. 1 at N_T = \(sci(NT)), D_T = \(sci(DT))")
        } else {
            print("teacher L_T = \(String(format: "%.4f", teacher.loss)) nats/token (given)")
        }
        print("supervised student (Eq. 1): \(String(format: "%.4f", out.supervisedStudentLoss)) nats/token")
        if let d = out.distilledStudentLoss {
            print("distilled student  (Eq. 8): \(String(format: "%.4f", d)) nats/token (\(String(format: "%+.4f", d - out.supervisedStudentLoss)) vs supervised)")
        } else {
            print("distilled student  (Eq. 8): unavailable — \(source) has no \"distillation\" coefficients")
        }
    }
}
