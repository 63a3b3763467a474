import Foundation

/// Shape assumptions that turn a non-embedding parameter count into forward FLOPs per token.
///
/// The paper counts compute with `N` = non-embedding parameters and models of a fixed aspect
/// ratio `rho = d_model / n_layers`, so that depth and width follow from `N` alone. With the
/// usual `N = 12 * n_layers * d_model^2` (4 d^2 attention projections + 8 d^2 MLP; a SwiGLU
/// MLP of width 8/3 d also gives 8 d^2) this means
///
///     d_model  = (rho * N / 12)^(1/3)
///     n_layers = d_model / rho
///
/// and one token's forward pass costs (Kaplan et al. 2020, Table 1, plus the output logits)
///
///     F(N) = 2N + 2 * n_layers * n_ctx * d_model + 2 * n_vocab * d_model
///          = 2N * (1 + cContext * N^(-1/3) + cVocabulary * N^(-2/3))
///
/// with `cContext = n_ctx / (144 * rho)^(1/3)` and `cVocabulary = n_vocab * (rho / 12)^(1/3)`.
/// The attention-context term counts one multiply-add per key per channel per layer, as Kaplan
/// et al. do; the exact constants of the paper's own appendix expression were not available to
/// check here, which is why both coefficients are exposed and derived, not hard-coded.
/// Units: FLOPs (a multiply-add counts as 2).
public struct TransformerShape: Codable, Equatable, Sendable {
    /// Attention context length in tokens (n_ctx).
    public var contextLength: Double
    /// Vocabulary size (n_vocab): the output projection costs 2 * n_vocab * d_model.
    public var vocabularySize: Double
    /// d_model / n_layers.
    public var aspectRatio: Double

    public init(contextLength: Double, vocabularySize: Double, aspectRatio: Double) {
        self.contextLength = contextLength
        self.vocabularySize = vocabularySize
        self.aspectRatio = aspectRatio
    }

    /// Coefficient of `N^(-1/3)` inside `F(N) / 2N`: the attention-context term.
    public var cContext: Double { contextLength / cbrt(144 * aspectRatio) }
    /// Coefficient of `N^(-2/3)` inside `F(N) / 2N`: the output-logits (vocabulary) term.
    public var cVocabulary: Double { vocabularySize * cbrt(aspectRatio / 12) }

    /// Forward FLOPs per token, F(N), for `N` non-embedding parameters.
    public func forwardFLOPs(parameters N: Double) -> Double {
        2 * N * (1 + cContext / cbrt(N) + cVocabulary / cbrt(N * N))
    }
}

/// Forward FLOPs per token of a model: either `2N` (leading order, no shape known) or the
/// shape-aware F(N) of ``TransformerShape``.
public enum ForwardCost: Equatable, Sendable {
    /// F(N) = 2N: matrix multiplies only, no attention-context or logits term.
    case leadingOrder
    /// F(N) with attention-context and vocabulary terms.
    case shaped(TransformerShape)

    /// Forward FLOPs per token for `N` non-embedding parameters.
    public func flopsPerToken(parameters N: Double) -> Double {
        switch self {
        case .leadingOrder: return 2 * N
        case .shaped(let s): return s.forwardFLOPs(parameters: N)
        }
    }
}

/// Encoded flat and self-describing: `{"formula": "2N"}`, or the shape's fields with the
/// derived coefficients beside them.
extension ForwardCost: Codable {
    private enum Keys: String, CodingKey {
        case formula, contextLength, vocabularySize, aspectRatio, cContext, cVocabulary
    }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: Keys.self)
        switch self {
        case .leadingOrder:
            try c.encode("2N", forKey: .formula)
        case .shaped(let s):
            try c.encode("2N(1 + cContext N^-1/3 + cVocabulary N^-2/3)", forKey: .formula)
            try c.encode(s.contextLength, forKey: .contextLength)
            try c.encode(s.vocabularySize, forKey: .vocabularySize)
            try c.encode(s.aspectRatio, forKey: .aspectRatio)
            try c.encode(s.cContext, forKey: .cContext)
            try c.encode(s.cVocabulary, forKey: .cVocabulary)
        }
    }
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: Keys.self)
        if c.contains(.contextLength) {
            self = .shaped(TransformerShape(contextLength: try c.decode(Double.self, forKey: .contextLength),
                                            vocabularySize: try c.decode(Double.self, forKey: .vocabularySize),
                                            aspectRatio: try c.decode(Double.self, forKey: .aspectRatio)))
        } else {
            self = .leadingOrder
        }
    }
}
