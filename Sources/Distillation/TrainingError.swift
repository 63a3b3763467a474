/// Errors of training and evaluation, each naming what is wrong.
public enum TrainingError: Error, Equatable, CustomStringConvertible {
    case badSetting(String)
    case tooFewTokens(String)
    case resume(String)
    case io(path: String, reason: String)
    case diverged(step: Int, loss: Double)

    public var description: String {
        switch self {
        case .badSetting(let m): return "bad setting: \(m)"
        case .tooFewTokens(let m): return "not enough data: \(m)"
        case .resume(let m): return "cannot resume: \(m)"
        case let .io(path, reason): return "\(path): \(reason)"
        case let .diverged(step, loss): return "training diverged at step \(step): loss \(loss) is not finite (lower --lr?)"
        }
    }
}
