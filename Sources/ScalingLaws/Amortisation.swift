import Foundation

/// The compute scenarios of Busbridge et al. (2025), Eq. 9:
///
///     FLOPs ≈ 3 F(N_S) D_S + F(N_T) (delta_Lgt * D_S + delta_Pre * 3 D_T)
///
/// Training costs three forward passes' worth per token (forward + backward); teacher logits
/// cost one forward pass per distillation token; teacher pretraining costs `3 F(N_T) D_T`.
/// Each scenario switches the two teacher terms on (1) or off (0).
public enum DistillationScenario: String, CaseIterable, Codable, Sendable {
    /// Teacher cost ignored entirely (an existing teacher whose logits are free).
    case bestCase = "best-case"
    /// Teacher logits are paid for (an existing teacher run over D_S).
    case teacherInference = "teacher-inference"
    /// Teacher pretraining is paid for, logits are not.
    case teacherPretraining = "teacher-pretraining"
    /// Both teacher pretraining and teacher logits are paid for.
    case teacherPretrainingAndInference = "teacher-pretraining+inference"

    /// delta_Lgt of Eq. 9 for one student.
    public var countsTeacherInference: Bool { self == .teacherInference || self == .teacherPretrainingAndInference }
    /// delta_Pre of Eq. 9 for one student.
    public var countsTeacherPretraining: Bool { self == .teacherPretraining || self == .teacherPretrainingAndInference }
}

/// Eq. 9 for one student, with explicit deltas (0 or 1 in the paper; 1/S when S students share
/// a cost). Units: FLOPs.
public func distillationFLOPs(studentForward FS: Double, studentTokens DS: Double,
                              teacherForward FT: Double, teacherTokens DT: Double,
                              deltaLogits: Double, deltaPretraining: Double) -> Double {
    3 * FS * DS + FT * (deltaLogits * DS + deltaPretraining * 3 * DT)
}

/// Extra costs of going through a cache instead of running the teacher in the loop, in the
/// same unit as the teacher cost they are compared with (FLOPs or seconds).
public struct CacheOverhead: Codable, Equatable, Sendable {
    /// One-off cost of capturing and writing the cache (beyond the teacher forward itself).
    public var write: Double
    /// Cost of reading the cache once, paid by every student.
    public var readPerStudent: Double

    public init(write: Double = 0, readPerStudent: Double = 0) {
        self.write = write; self.readPerStudent = readPerStudent
    }
    public static let none = CacheOverhead()
}

/// Teacher cost measured on a real run, as a cache manifest or run log records it. Values are
/// for `tokens` tokens and scale linearly to any other token count.
///
/// This is the seam for reading measured costs from a cache: whoever reads the manifest (the
/// command-line layer, so that this module stays free of the file format) fills one of these.
public struct MeasuredTeacherCost: Codable, Equatable, Sendable {
    /// Tokens the teacher processed in the measured run.
    public var tokens: Double
    /// Wall-clock seconds of that run, if measured.
    public var seconds: Double?
    /// FLOPs of that run, if counted.
    public var flops: Double?

    public init(tokens: Double, seconds: Double? = nil, flops: Double? = nil) {
        self.tokens = tokens; self.seconds = seconds; self.flops = flops
    }

    /// Measured seconds scaled to `targetTokens` tokens; nil if seconds were not measured.
    public func seconds(forTokens targetTokens: Double) -> Double? {
        seconds.map { $0 * targetTokens / tokens }
    }

    /// Counted FLOPs scaled to `targetTokens` tokens; nil if FLOPs were not counted.
    public func flops(forTokens targetTokens: Double) -> Double? {
        flops.map { $0 * targetTokens / tokens }
    }
}

/// Totals for `S` students under one scenario, comparing a cached teacher pass with an online
/// teacher (a forward pass per student per token). Units: FLOPs.
public struct ScenarioTotals: Codable, Equatable, Sendable {
    public var scenario: DistillationScenario
    /// S, the number of students these totals are for.
    public var students: Int
    /// Teacher forward run once over D_S tokens, its targets shared by all S students
    /// (per student, delta_Lgt = 1/S), plus the cache write once and a read per student.
    public var cached: Double
    /// Teacher forward run inside every student's loop (delta_Lgt = 1 per student).
    public var online: Double
    /// Effective delta_Lgt per student in the cached arm (1/S, or 0 if not counted).
    public var cachedDeltaLogits: Double
    /// Effective delta_Pre per student (1/S: the teacher is pretrained once, or 0).
    public var deltaPretraining: Double
}

/// FLOP accounting for distilling `students` students of `studentParameters` non-embedding
/// parameters on `studentTokens` tokens each from one teacher.
public struct AmortisationModel: Codable, Equatable, Sendable {
    /// N_T, non-embedding parameters of the teacher.
    public var teacherParameters: Double
    /// N_S, non-embedding parameters of each student.
    public var studentParameters: Double
    /// D_S, distillation tokens per student (the cached corpus).
    public var studentTokens: Double
    /// D_T, teacher pretraining tokens; nil when the teacher already exists (no pretraining
    /// cost can be counted).
    public var teacherTokens: Double?
    /// S, number of students distilled from the same teacher targets; at least 1.
    public var students: Int
    /// How F(N) is computed.
    public var forward: ForwardCost
    /// Cache write/read overheads in FLOPs.
    public var overhead: CacheOverhead

    public init(teacherParameters: Double, studentParameters: Double, studentTokens: Double,
                teacherTokens: Double? = nil, students: Int, forward: ForwardCost = .leadingOrder,
                overhead: CacheOverhead = .none) {
        self.teacherParameters = teacherParameters
        self.studentParameters = studentParameters
        self.studentTokens = studentTokens
        self.teacherTokens = teacherTokens
        self.students = students
        self.forward = forward
        self.overhead = overhead
    }

    /// F(N_T), teacher forward FLOPs per token.
    public var teacherForward: Double { forward.flopsPerToken(parameters: teacherParameters) }
    /// F(N_S), student forward FLOPs per token.
    public var studentForward: Double { forward.flopsPerToken(parameters: studentParameters) }
    /// One teacher forward pass over the D_S distillation tokens: F(N_T) * D_S.
    public var teacherPass: Double { teacherForward * studentTokens }
    /// Teacher pretraining, 3 F(N_T) D_T (0 when D_T is unknown).
    public var teacherPretraining: Double { 3 * teacherForward * (teacherTokens ?? 0) }
    /// Training one student, 3 F(N_S) D_S.
    public var studentTraining: Double { 3 * studentForward * studentTokens }

    /// Totals for the S students under `scenario`. The teacher is pretrained once for all S
    /// students (delta_Pre = 1/S each) and, in the cached arm, run once over D_S.
    public func totals(_ scenario: DistillationScenario) -> ScenarioTotals {
        let S = Double(students)
        let pre = scenario.countsTeacherPretraining ? teacherPretraining : 0
        let training = S * studentTraining + pre
        guard scenario.countsTeacherInference else {
            return ScenarioTotals(scenario: scenario, students: students, cached: training, online: training,
                                  cachedDeltaLogits: 0, deltaPretraining: pre > 0 ? 1 / S : 0)
        }
        let cached = training + teacherPass + overhead.write + S * overhead.readPerStudent
        let online = training + S * teacherPass
        return ScenarioTotals(scenario: scenario, students: students, cached: cached, online: online,
                              cachedDeltaLogits: 1 / S, deltaPretraining: pre > 0 ? 1 / S : 0)
    }

    /// Totals for every scenario of Eq. 9, in ``DistillationScenario/allCases`` order.
    public var allTotals: [ScenarioTotals] { DistillationScenario.allCases.map(totals) }

    /// Totals under `scenario` for each student count in `counts` (each at least 1): the
    /// cached and online compute curves against the number of students.
    public func curve(_ scenario: DistillationScenario, students counts: ClosedRange<Int>) -> [ScenarioTotals] {
        counts.map { s in
            var m = self
            m.students = s
            return m.totals(scenario)
        }
    }

    /// Break-even for the teacher-logit cost in FLOPs (see ``BreakEven``).
    public var breakEven: BreakEven {
        BreakEven(teacherPass: teacherPass, overhead: overhead)
    }
}

/// When does one cached teacher pass beat running the teacher inside every student's loop?
///
/// With `P` the cost of one teacher pass over the distillation tokens, `W` the one-off cache
/// write and `R` the per-student read, S students cost `P + W + S R` cached against `S P`
/// online. The cache is cheaper exactly when `S (P - R) > P + W`. Student training and teacher
/// pretraining are the same in both arms and cancel. Units: whatever P, W and R share.
public struct BreakEven: Codable, Equatable, Sendable {
    /// The crossing point `(P + W) / (P - R)`; nil when reading the cache costs at least as much
    /// as recomputing the teacher (`R >= P`), so the cache never pays.
    public var crossing: Double?
    /// The smallest whole number of students for which the cache is strictly cheaper; nil when
    /// it never is.
    public var students: Int?

    /// Break-even for a teacher pass costing `teacherPass` with the given overheads.
    public init(teacherPass P: Double, overhead: CacheOverhead) {
        let W = overhead.write, R = overhead.readPerStudent
        guard P > R, P > 0 else { crossing = nil; students = nil; return }
        let x = (P + W) / (P - R)
        crossing = x
        // Strictly cheaper: the first integer above x (floor + 1 also handles integral x).
        let s = x.rounded(.down) + 1
        students = s < Double(Int.max) ? Int(s) : nil
    }
}
