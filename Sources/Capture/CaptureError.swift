/// Errors of capture settings.
public enum CaptureError: Error, Equatable, CustomStringConvertible {
    case badPolicy(String)
    case badTemperature(Float)
    case rowTooShort(expected: Int, got: Int)
    case nextTokenOutOfRange(Int32, vocabularySize: Int)

    public var description: String {
        switch self {
        case .badPolicy(let m): return "bad capture policy: \(m)"
        case .badTemperature(let t): return "temperature \(t) must be in 0.001...1000 (outside it logits / τ leave float range)"
        case .rowTooShort(let e, let g): return "logits row has \(g) entries, expected \(e)"
        case .nextTokenOutOfRange(let id, let v): return "next token id \(id) is outside the vocabulary of \(v)"
        }
    }
}
