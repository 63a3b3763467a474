import Foundation

/// Coefficients of the distillation scaling law (Busbridge et al. 2025, Eq. 8):
///
///     L_S = L_T + L_T^(-c0) * (1 + (L_T / (L~_S * d1))^(1/f1))^(-c1 * f1)
///                          * (A' / N_S^alpha' + B' / D_S^beta')^gamma'
///
/// where `L_T` is the teacher's cross-entropy, `N_S` the student's non-embedding parameters,
/// `D_S` the distillation tokens and `L~_S = L(N_S, D_S)` the student's *supervised* loss from
/// Eq. 1. The middle factor is a broken power law in the ratio `L_T / L~_S` (the capacity gap:
/// it switches regime when the teacher becomes much stronger than the student can follow).
///
/// ``busbridge2025`` holds the paper's fitted values (Table 6); coefficients fitted to other
/// runs can be given as a value of this type or as a coefficients file
/// (`logitcache law predict --coefficients`).
public struct DistillationCoefficients: Codable, Equatable, Sendable {
    /// Exponent of the teacher loss in the leading `L_T^(-c0)` factor.
    public var c0: Double
    /// Slope of the capacity-gap broken power law.
    public var c1: Double
    /// Transition point of the broken power law, as a ratio `L_T / L~_S`.
    public var d1: Double
    /// Sharpness of the transition.
    public var f1: Double
    /// Student-size term scale (A').
    public var A: Double
    /// Distillation-data term scale (B').
    public var B: Double
    /// Student-size exponent (alpha').
    public var alpha: Double
    /// Distillation-data exponent (beta').
    public var beta: Double
    /// Outer exponent (gamma').
    public var gamma: Double

    public init(c0: Double, c1: Double, d1: Double, f1: Double,
                A: Double, B: Double, alpha: Double, beta: Double, gamma: Double) {
        self.c0 = c0; self.c1 = c1; self.d1 = d1; self.f1 = f1
        self.A = A; self.B = B; self.alpha = alpha; self.beta = beta; self.gamma = gamma
    }

    /// The distillation coefficients fitted by Busbridge et al. (2025), Appendix F.3, Table 6
    /// (fit on all 697 distillation runs; point estimates of the 90% bootstrap intervals):
    /// c0 = 2.549, c1 = 522.6, d1 = 1.315, f1 = 0.090, A' = 2243, B' = 24181,
    /// alpha' = 0.321, beta' = 0.637, gamma' = 0.764. They describe students of 143M–12.6B
    /// parameters trained with muP on English C4 (vocabulary 32,168, context 4096); other
    /// corpora, tokenizers and scales need their own fit.
    public static let busbridge2025 = DistillationCoefficients(
        c0: 2.549, c1: 522.6, d1: 1.315, f1: 0.090, A: 2243, B: 24181, alpha: 0.321, beta: 0.637, gamma: 0.764)
}

/// The supervised law (Eq. 1) together with the distillation law (Eq. 8) that builds on it.
public struct DistillationLaw: Codable, Equatable, Sendable {
    /// Eq. 1 coefficients; also used for the teacher's loss from (N_T, D_T) and for `L~_S`.
    public var supervised: SupervisedCoefficients
    /// Eq. 8 coefficients; `nil` when only the supervised law is known.
    public var distillation: DistillationCoefficients?

    public init(supervised: SupervisedCoefficients, distillation: DistillationCoefficients?) {
        self.supervised = supervised
        self.distillation = distillation
    }

    /// Both laws with the published coefficients of Busbridge et al. (2025), Table 6.
    public static let busbridge2025 = DistillationLaw(supervised: .busbridge2025, distillation: .busbridge2025)

    /// How ``busbridge2025`` is cited in reports and command output.
    public static let busbridge2025Source = "Busbridge et al. 2025, Table 6"

    /// Teacher cross-entropy from its size and pretraining tokens via the supervised law, as
    /// the paper does when a teacher is described by (N_T, D_T) rather than a measured loss.
    public func teacherLoss(parameters NT: Double, tokens DT: Double) -> Double {
        supervised.loss(parameters: NT, tokens: DT)
    }

    /// Student cross-entropy (nats/token) predicted by Eq. 8 for a student with
    /// `studentParameters` non-embedding parameters distilled on `studentTokens` tokens from a
    /// teacher of cross-entropy `teacherLoss`. `nil` without distillation coefficients.
    public func studentLoss(studentParameters NS: Double, studentTokens DS: Double,
                            teacherLoss LT: Double) -> Double? {
        guard let c = distillation else { return nil }
        let supervisedStudent = supervised.loss(parameters: NS, tokens: DS)  // L~_S
        let gap = pow(1 + pow(LT / (supervisedStudent * c.d1), 1 / c.f1), -c.c1 * c.f1)
        let learn = pow(c.A / pow(NS, c.alpha) + c.B / pow(DS, c.beta), c.gamma)
        return LT + pow(LT, -c.c0) * gap * learn
    }
}
