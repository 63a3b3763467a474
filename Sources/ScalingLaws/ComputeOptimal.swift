import Foundation

/// The teacher of a compute-optimal plan.
public enum PlanTeacher: Equatable, Sendable {
    /// Chosen by the plan: its size and pretraining tokens (scenarios that pay for pretraining),
    /// or its loss (the others; the cheapest teacher of that loss is then the one trained on
    /// unlimited tokens, N_T from Eq. 1 with D_T → ∞).
    case chosen
    /// An existing teacher of cross-entropy `loss` and `parameters` non-embedding parameters
    /// (its pretraining is sunk: only its logits can cost).
    case given(loss: Double, parameters: Double)
}

/// The compute-optimal distillation problem of Busbridge et al. (2025), §5: minimise Eq. 8's
/// student loss over N_S, D_S (and the teacher) under a FLOP budget per student (Eq. 9, with
/// the teacher's costs shared by `students`: delta = 1/n).
public struct PlanRequest: Sendable {
    /// FLOPs per student, its share of the teacher's costs included.
    public var budget: Double
    public var students: Int
    public var scenario: DistillationScenario
    public var teacher: PlanTeacher
    public var forward: ForwardCost
    /// Measured cache costs (FLOPs per token): writing, shared by the students like the
    /// teacher's logits, and reading, paid by each student for each token it reads.
    public var cacheWritePerToken: Double
    public var cacheReadPerToken: Double
    /// Range of model sizes searched (non-embedding parameters).
    public var parameterRange: ClosedRange<Double>
    /// Least D_S / N_S of a plan. Eq. 8 was fitted on students with roughly 0.3 to 3,600
    /// tokens per parameter; far below, it lets a huge student with almost no data match a
    /// perfect teacher, which no run supports.
    public var minTokensPerParameter: Double

    public init(budget: Double, students: Int = 1, scenario: DistillationScenario, teacher: PlanTeacher = .chosen,
                forward: ForwardCost = .leadingOrder, cacheWritePerToken: Double = 0, cacheReadPerToken: Double = 0,
                parameterRange: ClosedRange<Double> = 1e5...1e13, minTokensPerParameter: Double = 1) {
        self.minTokensPerParameter = minTokensPerParameter
        self.budget = budget; self.students = students; self.scenario = scenario; self.teacher = teacher
        self.forward = forward; self.cacheWritePerToken = cacheWritePerToken; self.cacheReadPerToken = cacheReadPerToken
        self.parameterRange = parameterRange
    }
}

/// A compute-optimal plan and the supervised alternative on the same budget.
public struct DistillationPlan: Codable, Equatable, Sendable {
    public var NS: Double
    public var DS: Double
    /// The teacher: its loss, size and (when paid for) pretraining tokens.
    public var teacherLoss: Double
    public var NT: Double?
    public var DT: Double?
    public var predictedLoss: Double
    /// FLOPs per student: student training, its share of teacher logits and pretraining, cache.
    public var studentFLOPs: Double
    public var teacherLogitFLOPs: Double
    public var teacherPretrainingFLOPs: Double
    public var cacheFLOPs: Double
    /// Eq. 1's best model on the whole budget (3 F(N) D = budget).
    public var supervisedN: Double
    public var supervisedD: Double
    public var supervisedLoss: Double
    /// Whether the plan's student is predicted below the supervised model.
    public var distillationWins: Bool { predictedLoss < supervisedLoss }
}

public enum PlanError: Error, Equatable, CustomStringConvertible {
    case noDistillationLaw
    case infeasible(String)
    public var description: String {
        switch self {
        case .noDistillationLaw: return "the coefficients have no distillation law (Eq. 8): planning needs one"
        case .infeasible(let m): return m
        }
    }
}

/// Solves ``PlanRequest`` with `law`: a coarse-to-fine grid over the free variables (log N_S and,
/// by scenario, the teacher's log N_T and share of the budget, or its log excess loss), with
/// D_S (and D_T) spending exactly the budget.
/// - Throws: ``PlanError`` without Eq. 8 coefficients, or when the budget buys no student.
public func planDistillation(law: DistillationLaw, request r: PlanRequest) throws -> DistillationPlan {
    guard law.distillation != nil else { throw PlanError.noDistillationLaw }
    guard r.budget.isFinite, r.budget > 0, r.students >= 1 else { throw PlanError.infeasible("the budget and students must be positive") }
    let n = Double(r.students), F = r.forward, s = law.supervised
    let logRange = log(r.parameterRange.lowerBound)...log(r.parameterRange.upperBound)
    /// The plan at free variables x, or nil where the budget buys nothing.
    func evaluate(_ x: [Double]) -> DistillationPlan? {
        let NS = exp(x[0]), FS = F.flopsPerToken(parameters: NS)
        var LT: Double, NT: Double?, DT: Double? = nil, pretraining = 0.0, left = r.budget
        switch (r.teacher, r.scenario.countsTeacherPretraining) {
        case (.given(let loss, let parameters), _):
            LT = loss; NT = parameters
        case (.chosen, true):
            NT = exp(x[1])
            pretraining = x[2] * r.budget
            DT = n * pretraining / (3 * F.flopsPerToken(parameters: NT!))
            LT = s.loss(parameters: NT!, tokens: DT!)
            left -= pretraining
        case (.chosen, false):
            LT = s.E + exp(x[1])
            // The smallest teacher of that loss: Eq. 1 with D_T → ∞, (A / N^alpha)^gamma = L_T - E.
            NT = pow(s.A / pow(LT - s.E, 1 / s.gamma), 1 / s.alpha)
        }
        // Per distillation token: teacher logits and writing the cache, once per token and
        // shared by the n students; reading the cache, by each student.
        let logitsPerToken = r.scenario.countsTeacherInference ? (NT.map { F.flopsPerToken(parameters: $0) } ?? 0) / n : 0
        let cachePerToken = (r.scenario.countsTeacherInference ? r.cacheWritePerToken / n : 0) + r.cacheReadPerToken
        guard left > 0 else { return nil }
        let DS = left / (3 * FS + logitsPerToken + cachePerToken)
        guard DS >= r.minTokensPerParameter * NS else { return nil }
        guard let L = law.studentLoss(studentParameters: NS, studentTokens: DS, teacherLoss: LT), L.isFinite else { return nil }
        return DistillationPlan(NS: NS, DS: DS, teacherLoss: LT, NT: NT, DT: DT, predictedLoss: L, studentFLOPs: 3 * FS * DS,
                                teacherLogitFLOPs: logitsPerToken * DS, teacherPretrainingFLOPs: pretraining,
                                cacheFLOPs: cachePerToken * DS, supervisedN: 0, supervisedD: 0, supervisedLoss: 0)
    }
    var ranges: [ClosedRange<Double>] = [logRange]
    switch (r.teacher, r.scenario.countsTeacherPretraining) {
    case (.given, _): break
    case (.chosen, true): ranges += [logRange, 1e-4...(1 - 1e-4)]
    case (.chosen, false): ranges += [log(1e-4)...log(20)]
    }
    guard var plan = coarseToFine(ranges, { evaluate($0).map(\.predictedLoss) }).flatMap(evaluate) else {
        throw PlanError.infeasible("no student fits in \(r.budget) FLOPs")
    }
    let sup = planSupervised(law: s, budget: r.budget, forward: F, parameterRange: r.parameterRange)
    plan.supervisedN = sup.N; plan.supervisedD = sup.D; plan.supervisedLoss = sup.loss
    return plan
}

/// Eq. 1's best model on `budget` FLOPs of training (3 F(N) D = budget).
public func planSupervised(law s: SupervisedCoefficients, budget: Double, forward F: ForwardCost,
                           parameterRange: ClosedRange<Double> = 1e5...1e13) -> (N: Double, D: Double, loss: Double) {
    func at(_ logN: Double) -> (N: Double, D: Double, loss: Double) {
        let N = exp(logN), D = budget / (3 * F.flopsPerToken(parameters: N))
        return (N, D, s.loss(parameters: N, tokens: D))
    }
    let range = log(parameterRange.lowerBound)...log(parameterRange.upperBound)
    let x = coarseToFine([range], { at($0[0]).loss }) ?? [range.lowerBound]
    return at(x[0])
}

/// Minimises `f` over the box `ranges`: a 41-point grid per variable, then around the best
/// point a grid a tenth as wide, 8 times. Returns nil when `f` is nil everywhere.
func coarseToFine(_ ranges: [ClosedRange<Double>], _ f: ([Double]) -> Double?) -> [Double]? {
    let k = 41
    var box = ranges
    var best: (x: [Double], v: Double)?
    for _ in 0..<9 {
        var point = box.map(\.lowerBound)
        func walk(_ d: Int) {
            if d == box.count {
                if let v = f(point), v < (best?.v ?? .infinity) { best = (point, v) }
                return
            }
            for i in 0..<k {
                point[d] = box[d].lowerBound + (box[d].upperBound - box[d].lowerBound) * Double(i) / Double(k - 1)
                walk(d + 1)
            }
        }
        walk(0)
        guard let b = best else { return nil }
        box = zip(box, ranges).enumerated().map { d, pair in
            let (current, limit) = pair
            let half = (current.upperBound - current.lowerBound) / 20
            return max(limit.lowerBound, b.x[d] - half)...min(limit.upperBound, b.x[d] + half)
        }
    }
    return best?.x
}
