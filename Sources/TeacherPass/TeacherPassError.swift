/// Problems found before or during a teacher pass; each names what is wrong.
public enum TeacherPassError: Error, CustomStringConvertible {
    case vocabularyMismatch(tokenizer: Int, model: Int, tokenizerPath: String, modelDirectory: String)
    case contextTooLong(context: Int, modelMaximum: Int)
    case badContext(Int)
    case settingsDiffer(cache: String, field: String, existing: String, requested: String)
    case failed(String)

    public var description: String {
        switch self {
        case .vocabularyMismatch(let t, let m, let tp, let md):
            return "tokenizer \(tp) has \(t) ids but the model \(md) has a vocabulary of \(m): they do not belong together"
        case .contextTooLong(let c, let m): return "--context \(c) is longer than the model allows (\(m) positions)"
        case .badContext(let c): return "--context \(c) must be at least 1"
        case .settingsDiffer(let c, let f, let e, let r):
            return "\(c) already holds a cache made with different settings: \(f) is \(e) there, \(r) now. Use another --out, or the same settings to resume"
        case .failed(let m): return m
        }
    }
}
