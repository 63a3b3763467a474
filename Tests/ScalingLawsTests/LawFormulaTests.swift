import Foundation
import Testing
@testable import ScalingLaws

@Suite struct LawFormulaTests {
    /// Eq. 1 with the published coefficients, worked by hand at N = 1e9, D = 2e10:
    ///   A / N^alpha = 3355 * exp(-0.408 * ln 1e9)    = 3355 * exp(-8.45502)  ≈ 0.71567
    ///   B / D^beta  = 18186 * exp(-0.431 * ln 2e10)  = 18186 * exp(-10.22297) ≈ 0.66068
    ///   (0.71567 + 0.66068)^0.452 = exp(0.452 * ln 1.37635) ≈ 1.15547
    ///   L = 1.220 + 1.15547 ≈ 2.37547 — and exactly 2.3746922483534956 in double precision
    ///   (computed separately with Python's ** operator).
    @Test func supervisedLawMatchesHandArithmetic() {
        let c = SupervisedCoefficients.busbridge2025
        let N = 1e9, D = 2e10
        let byExpLog = 1.220 + exp(0.452 * log(3355 * exp(-0.408 * log(N)) + 18186 * exp(-0.431 * log(D))))
        let L = c.loss(parameters: N, tokens: D)
        #expect(abs(L - byExpLog) < 1e-12)
        #expect(abs(L - 2.3746922483534956) < 1e-12)
        // A second point (a 1.82B student on 38.9B tokens), also from Python: 2.244586190429362.
        #expect(abs(c.loss(parameters: 1.82e9, tokens: 3.89e10) - 2.244586190429362) < 1e-12)
        // Loss falls with both N and D and tends to E.
        #expect(c.loss(parameters: 2e9, tokens: D) < L && c.loss(parameters: N, tokens: 4e10) < L)
        #expect(abs(c.loss(parameters: 1e30, tokens: 1e30) - 1.220) < 1e-3)
    }

    /// Made-up distillation coefficients (NOT the paper's; chosen only so every factor matters).
    static let testDistillation = DistillationCoefficients(
        c0: 0.5, c1: 2.0, d1: 0.9, f1: 0.25, A: 3000, B: 20000, alpha: 0.4, beta: 0.45, gamma: 0.5)

    /// Eq. 8 by hand for N_S = 5e8, D_S = 1e10, L_T = 2.2 with the test coefficients, written
    /// with each factor computed separately and with exp/log instead of pow.
    @Test func distillationLawMatchesHandArithmetic() throws {
        let law = DistillationLaw(supervised: .busbridge2025, distillation: Self.testDistillation)
        let NS = 5e8, DS = 1e10, LT = 2.2
        // Supervised student loss L~_S from Eq. 1.
        let sup = 1.220 + exp(0.452 * log(3355 / exp(0.408 * log(NS)) + 18186 / exp(0.431 * log(DS))))
        // Capacity-gap factor (1 + (L_T / (L~_S d1))^(1/f1))^(-c1 f1) = (1 + ratio^4)^(-0.5).
        let ratio = LT / (sup * 0.9)
        let gap = 1 / (1 + ratio * ratio * ratio * ratio).squareRoot()
        // Learning term (A'/N^a' + B'/D^b')^g' with gamma' = 0.5.
        let learn = (3000 / exp(0.4 * log(NS)) + 20000 / exp(0.45 * log(DS))).squareRoot()
        let expected = LT + gap * learn / LT.squareRoot()  // L_T^(-c0) with c0 = 0.5
        let got = try #require(law.studentLoss(studentParameters: NS, studentTokens: DS, teacherLoss: LT))
        #expect(abs(got - expected) < 1e-12)
        #expect(got > LT)  // the law never predicts a student below its teacher
        // More student data or size brings the student towards the teacher.
        let more = try #require(law.studentLoss(studentParameters: NS, studentTokens: 1e14, teacherLoss: LT))
        #expect(more < got && more > LT)
    }

    /// Eq. 8 with the paper's Table 6 coefficients, against values computed separately with
    /// Python's decimal module at 40 digits (each power as x ** y on Decimals):
    ///   N_S = 546M, D_S = 10.92B, L_T = 2.3:  L~_S = 2.514940988, gap factor 0.438535706,
    ///     learning term 2.619438908, L_S = 2.437457670633977 (a student below its supervised loss);
    ///   N_S = 1.82B, D_S = 36.4B, L_T = 2.0:  L_S = 2.182760806228223;
    ///   N_S = 198M, D_S = 3.96B, L_T = 3.0 (teacher weaker than the student could be alone):
    ///     L_S = 3.001704392360654, close to the teacher, as the law's second property says.
    @Test func publishedDistillationLawMatchesIndependentValues() throws {
        let law = DistillationLaw.busbridge2025
        #expect(law.supervised == .busbridge2025)
        for (NS, DS, LT, expected) in [(546e6, 10.92e9, 2.3, 2.437457670633977), (1.82e9, 36.4e9, 2.0, 2.182760806228223),
                                       (198e6, 3.96e9, 3.0, 3.001704392360654)] {
            let got = try #require(law.studentLoss(studentParameters: NS, studentTokens: DS, teacherLoss: LT))
            #expect(abs(got - expected) < 1e-9, "N_S \(NS) D_S \(DS) L_T \(LT): \(got)")
        }
        #expect(abs(law.supervised.loss(parameters: 546e6, tokens: 10.92e9) - 2.514940988209995) < 1e-9)
    }

    @Test func teacherLossUsesSupervisedLawAndMissingCoefficientsGiveNil() {
        let law = DistillationLaw(supervised: .busbridge2025, distillation: nil)
        #expect(law.teacherLoss(parameters: 1.82e9, tokens: 3.89e10) == SupervisedCoefficients.busbridge2025.loss(parameters: 1.82e9, tokens: 3.89e10))
        #expect(law.studentLoss(studentParameters: 1e8, studentTokens: 1e9, teacherLoss: 2.5) == nil)
    }

    @Test func coefficientsRoundTripThroughJSON() throws {
        let law = DistillationLaw(supervised: .busbridge2025, distillation: Self.testDistillation)
        let data = try JSONEncoder().encode(law)
        #expect(try JSONDecoder().decode(DistillationLaw.self, from: data) == law)
    }
}

@Suite struct FLOPAccountingTests {
    /// A 2-layer model with d_model = 256 (aspect ratio 128), context 1024, vocabulary 50257:
    ///   N = 12 * 2 * 256^2                 = 1_572_864 non-embedding parameters
    ///   2N                                 = 3_145_728
    ///   2 * n_layers * n_ctx * d_model     = 2 * 2 * 1024 * 256  = 1_048_576
    ///   2 * n_vocab * d_model              = 2 * 50257 * 256     = 25_731_584
    ///   F                                  = 29_925_888 FLOPs per token
    @Test func forwardFLOPsFromParameterCountMatchExplicitShape() {
        let shape = TransformerShape(contextLength: 1024, vocabularySize: 50257, aspectRatio: 128)
        let F = shape.forwardFLOPs(parameters: 1_572_864)
        #expect(abs(F - 29_925_888) / 29_925_888 < 1e-12)
        #expect(ForwardCost.leadingOrder.flopsPerToken(parameters: 1_572_864) == 3_145_728)
        // The JSON form decodes back to the same cost.
        for cost in [ForwardCost.leadingOrder, .shaped(shape)] {
            let data = try! JSONEncoder().encode(cost)
            #expect(try! JSONDecoder().decode(ForwardCost.self, from: data) == cost)
        }
        // The correction terms vanish relative to 2N for large models.
        let big = 1e13
        #expect(abs(shape.forwardFLOPs(parameters: big) / (2 * big) - 1) < 0.01)
    }

    /// Hand example: N_T = 1e9, N_S = 1e8, D_S = 1e10, D_T = 2e10, S = 4, F(N) = 2N.
    ///   teacher pass   P = 2e9 * 1e10        = 2e19
    ///   pretraining      = 3 * 2e9 * 2e10    = 1.2e20
    ///   one student      = 3 * 2e8 * 1e10    = 6e18, four students 2.4e19
    ///   inference, cached  = 2.4e19 + 2e19            = 4.4e19
    ///   inference, online  = 2.4e19 + 4 * 2e19        = 1.04e20
    ///   both, cached       = 4.4e19 + 1.2e20          = 1.64e20
    @Test func scenarioTotalsMatchHandExample() {
        let m = AmortisationModel(teacherParameters: 1e9, studentParameters: 1e8, studentTokens: 1e10,
                                  teacherTokens: 2e10, students: 4)
        func close(_ a: Double, _ b: Double) -> Bool { abs(a - b) <= 1e-12 * max(abs(a), abs(b)) }
        let t = Dictionary(uniqueKeysWithValues: m.allTotals.map { ($0.scenario, $0) })
        #expect(close(t[.bestCase]!.cached, 2.4e19) && close(t[.bestCase]!.online, 2.4e19))
        #expect(close(t[.teacherInference]!.cached, 4.4e19) && close(t[.teacherInference]!.online, 1.04e20))
        #expect(close(t[.teacherPretraining]!.cached, 1.44e20))
        #expect(close(t[.teacherPretrainingAndInference]!.cached, 1.64e20))
        #expect(close(t[.teacherPretrainingAndInference]!.online, 2.24e20))
        #expect(t[.teacherInference]!.cachedDeltaLogits == 0.25 && t[.teacherPretraining]!.deltaPretraining == 0.25)
        // One student through a free cache is exactly Eq. 9 with delta_Lgt = delta_Pre = 1.
        let one = AmortisationModel(teacherParameters: 1e9, studentParameters: 1e8, studentTokens: 1e10,
                                    teacherTokens: 2e10, students: 1)
        let eq9 = distillationFLOPs(studentForward: 2e8, studentTokens: 1e10, teacherForward: 2e9,
                                    teacherTokens: 2e10, deltaLogits: 1, deltaPretraining: 1)
        #expect(close(one.totals(.teacherPretrainingAndInference).cached, eq9))
        #expect(close(one.totals(.teacherPretrainingAndInference).online, eq9))
        // The curve over S: online grows by P + one student per student, cached by one student.
        let curve = m.curve(.teacherInference, students: 1...6)
        #expect(curve.count == 6 && curve[3].students == 4 && close(curve[3].cached, 4.4e19) && close(curve[3].online, 1.04e20))
        for k in 1..<curve.count {
            #expect(close(curve[k].online - curve[k - 1].online, 2e19 + 6e18))
            #expect(close(curve[k].cached - curve[k - 1].cached, 6e18))
        }
    }

    @Test func breakEvenHandValuesAndEdges() {
        // No overhead: equal at S = 1, the cache wins from S = 2.
        #expect(BreakEven(teacherPass: 10, overhead: .none) == BreakEven(teacherPass: 10, overhead: .init()))
        #expect(BreakEven(teacherPass: 10, overhead: .none).students == 2)
        // P = 10, W = 5, R = 2: crossing (10 + 5) / (10 - 2) = 1.875, so 2 students.
        let b = BreakEven(teacherPass: 10, overhead: CacheOverhead(write: 5, readPerStudent: 2))
        #expect(b.crossing == 1.875 && b.students == 2)
        // P = 10, W = 30, R = 5: crossing 40 / 5 = 8 exactly; at S = 8 the arms tie, so 9.
        #expect(BreakEven(teacherPass: 10, overhead: CacheOverhead(write: 30, readPerStudent: 5)).students == 9)
        // Reading costs as much as recomputing: never.
        #expect(BreakEven(teacherPass: 10, overhead: CacheOverhead(write: 0, readPerStudent: 10)).students == nil)
    }

    /// The break-even count must agree with a direct comparison of the two arms, never fall as
    /// the write or read overhead grows, and never rise as the teacher gets more expensive.
    @Test func breakEvenIsMonotonicAndMatchesDirectComparison() {
        var previous = 0
        for W in stride(from: 0.0, through: 200, by: 7) {
            let b = BreakEven(teacherPass: 10, overhead: CacheOverhead(write: W, readPerStudent: 1))
            let s = b.students!
            #expect(s >= previous); previous = s
            // Direct: cached P + W + S R < online S P first holds at s.
            func cheaper(_ S: Int) -> Bool { 10 + W + Double(S) * 1 < Double(S) * 10 }
            #expect(cheaper(s) && (s == 1 || !cheaper(s - 1)))
        }
        previous = 0
        for R in stride(from: 0.0, through: 9.5, by: 0.5) {
            let s = BreakEven(teacherPass: 10, overhead: CacheOverhead(write: 3, readPerStudent: R)).students!
            #expect(s >= previous); previous = s
        }
        previous = .max
        for P in stride(from: 2.0, through: 200, by: 3) {
            let s = BreakEven(teacherPass: P, overhead: CacheOverhead(write: 20, readPerStudent: 1)).students!
            #expect(s <= previous); previous = s
        }
    }

    @Test func measuredCostScalesWithTokens() {
        let m = MeasuredTeacherCost(tokens: 1_000, seconds: 50, flops: nil)
        #expect(m.seconds(forTokens: 4_000) == 200)
        #expect(MeasuredTeacherCost(tokens: 1_000).seconds(forTokens: 10) == nil)
        #expect(MeasuredTeacherCost(tokens: 2_000, flops: 6e12).flops(forTokens: 500) == 1.5e12)
    }
}
