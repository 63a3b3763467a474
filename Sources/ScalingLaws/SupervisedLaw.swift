// ScalingLaws
//
// The distillation scaling law of Busbridge et al. (2025), "Distillation Scaling Laws",
// arXiv:2502.08606: the supervised law (Eq. 1), the distillation law (Eq. 8), the FLOP
// accounting of Eq. 9 extended to S students sharing one cached teacher pass, and fitting.
// Everything here is plain double-precision arithmetic; the module imports nothing of ours.
import Foundation

/// Coefficients of the supervised scaling law (Busbridge et al. 2025, Eq. 1):
///
///     L(N, D) = E + (A / N^alpha + B / D^beta)^gamma
///
/// `N` is the number of non-embedding parameters, `D` the number of training tokens and `L`
/// the cross-entropy in nats per token. This is the Chinchilla form with an extra outer
/// exponent `gamma` (gamma = 1 gives Hoffmann et al. 2022).
public struct SupervisedCoefficients: Codable, Equatable, Sendable {
    /// Irreducible loss, nats per token.
    public var E: Double
    /// Parameter-term scale.
    public var A: Double
    /// Data-term scale.
    public var B: Double
    /// Parameter exponent.
    public var alpha: Double
    /// Data exponent.
    public var beta: Double
    /// Outer exponent applied to the sum of the two power-law terms.
    public var gamma: Double

    public init(E: Double, A: Double, B: Double, alpha: Double, beta: Double, gamma: Double) {
        self.E = E; self.A = A; self.B = B
        self.alpha = alpha; self.beta = beta; self.gamma = gamma
    }

    /// The supervised coefficients fitted by Busbridge et al. (2025), Appendix F.3, Table 6
    /// (supervised scaling law, Eq. 1; fit on 73 runs; point estimates of the 90% bootstrap
    /// intervals, as printed there): E = 1.220, A = 3355, alpha = 0.408, B = 18186,
    /// beta = 0.431, gamma = 0.452.
    public static let busbridge2025 = SupervisedCoefficients(
        E: 1.220, A: 3355, B: 18186, alpha: 0.408, beta: 0.431, gamma: 0.452)

    /// Predicted cross-entropy (nats/token) of a model with `parameters` non-embedding
    /// parameters trained on `tokens` tokens. Both must be positive.
    public func loss(parameters N: Double, tokens D: Double) -> Double {
        E + pow(A / pow(N, alpha) + B / pow(D, beta), gamma)
    }
}

extension SupervisedCoefficients {
    /// Coefficients in the order the fitter uses: E, A, B, alpha, beta, gamma.
    var array: [Double] { [E, A, B, alpha, beta, gamma] }
}
