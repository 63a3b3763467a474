import Foundation
import Random
import Testing
@testable import ScalingLaws

/// `planDistillation`: the budget is spent exactly, and no other feasible choice does better.
@Suite struct PlanTests {
    static let law = DistillationLaw.busbridge2025

    static func total(_ p: DistillationPlan) -> Double {
        p.studentFLOPs + p.teacherLogitFLOPs + p.teacherPretrainingFLOPs + p.cacheFLOPs
    }

    @Test(arguments: DistillationScenario.allCases)
    func theBudgetIsSpentAndNoRandomAlternativeDoesBetter(scenario: DistillationScenario) throws {
        let budget = 1e21, F = ForwardCost.leadingOrder
        let r = PlanRequest(budget: budget, students: 2, scenario: scenario, cacheWritePerToken: 1e9, cacheReadPerToken: 5e8)
        let p = try planDistillation(law: Self.law, request: r)
        #expect(abs(Self.total(p) - budget) <= 1e-9 * budget)
        #expect(p.DS >= p.NS && p.predictedLoss == Self.law.studentLoss(studentParameters: p.NS, studentTokens: p.DS, teacherLoss: p.teacherLoss))
        // Random feasible alternatives, built from Eq. 9 like the plan's.
        var rng = SplitMix64(seed: 11)
        let s = Self.law.supervised
        for _ in 0..<3000 {
            let NS = exp(log(1e5) + rng.unit() * (log(1e13) - log(1e5)))
            var left = budget, LT: Double, NT: Double
            if scenario.countsTeacherPretraining {
                NT = exp(log(1e5) + rng.unit() * (log(1e13) - log(1e5)))
                let share = rng.unit()
                left -= share * budget
                LT = s.loss(parameters: NT, tokens: 2 * share * budget / (3 * F.flopsPerToken(parameters: NT)))
            } else {
                LT = s.E + exp(log(1e-4) + rng.unit() * (log(20) - log(1e-4)))
                NT = pow(s.A / pow(LT - s.E, 1 / s.gamma), 1 / s.alpha)
            }
            let shared = scenario.countsTeacherInference ? (F.flopsPerToken(parameters: NT) + 1e9) / 2 : 0
            let DS = left / (3 * F.flopsPerToken(parameters: NS) + shared + 5e8)
            guard DS >= NS, let L = Self.law.studentLoss(studentParameters: NS, studentTokens: DS, teacherLoss: LT) else { continue }
            #expect(L >= p.predictedLoss - 1e-6, "\(scenario): N_S \(NS), L_T \(LT) gives \(L) < \(p.predictedLoss)")
        }
    }

    @Test func theSupervisedAlternativeSpendsTheBudgetAndIsItsBest() {
        let F = ForwardCost.shaped(TransformerShape(contextLength: 4096, vocabularySize: 32168, aspectRatio: 100))
        let best = planSupervised(law: .busbridge2025, budget: 1e22, forward: F)
        #expect(abs(3 * F.flopsPerToken(parameters: best.N) * best.D - 1e22) <= 1e-9 * 1e22)
        for N in stride(from: 8.0, through: 11.5, by: 0.05).map({ pow(10, $0) }) {
            let D = 1e22 / (3 * F.flopsPerToken(parameters: N))
            #expect(SupervisedCoefficients.busbridge2025.loss(parameters: N, tokens: D) >= best.loss - 1e-9)
        }
    }

    @Test func sharingTheTeacherNeverHurtsAndAGivenTeacherIsKept() throws {
        let one = try planDistillation(law: Self.law, request: PlanRequest(budget: 1e21, students: 1, scenario: .teacherPretrainingAndInference))
        let many = try planDistillation(law: Self.law, request: PlanRequest(budget: 1e21, students: 16, scenario: .teacherPretrainingAndInference))
        #expect(many.predictedLoss <= one.predictedLoss)
        let given = try planDistillation(law: Self.law, request: PlanRequest(budget: 1e21, scenario: .teacherInference,
                                                                           teacher: .given(loss: 2.1, parameters: 7e9)))
        #expect(given.teacherLoss == 2.1 && given.NT == 7e9 && given.DT == nil && given.teacherPretrainingFLOPs == 0)
        #expect(abs(given.teacherLogitFLOPs - 2 * 7e9 * given.DS) <= 1e-9 * given.teacherLogitFLOPs)
        #expect(throws: PlanError.noDistillationLaw) {
            try planDistillation(law: DistillationLaw(supervised: .busbridge2025, distillation: nil), request: PlanRequest(budget: 1e21, scenario: .bestCase))
        }
    }
}
