import Foundation

/// What went wrong reading a corpus; every case names the file (and where it helps, the line
/// or byte offset) so a user can find the bad input.
public enum CorpusError: Error, Equatable, CustomStringConvertible {
    case notFound(path: String)
    case unreadable(path: String, reason: String)
    case invalidUTF8(path: String, byteOffset: Int)
    case badJSONLine(path: String, line: Int, reason: String)
    case missingTextField(path: String, line: Int, field: String)
    case badTokenFile(path: String, reason: String)
    case unsupportedFile(path: String)
    case emptyCorpus(paths: [String])
    case badPartition(String)
    case badSplit(String)
    case noEndOfTextToken(tokenizerPath: String)
    case unknownEndOfTextToken(tokenizerPath: String, token: String)
    case tokenOutOfVocabulary(id: Int32, vocabulary: Int, source: String)

    public var description: String {
        switch self {
        case .notFound(let p): return "\(p): no such file or directory"
        case .unreadable(let p, let r): return "\(p): cannot read (\(r))"
        case .invalidUTF8(let p, let o): return "\(p): not valid UTF-8 at byte \(o)"
        case .badJSONLine(let p, let l, let r): return "\(p):\(l): not a JSON object (\(r))"
        case .missingTextField(let p, let l, let f): return "\(p):\(l): no string field \"\(f)\""
        case .badTokenFile(let p, let r): return "\(p): bad token file (\(r))"
        case .unsupportedFile(let p):
            return "\(p): unsupported corpus file type (expected .txt, .jsonl, .bin, .u16 or .u32)"
        case .emptyCorpus(let ps): return "corpus is empty: no documents in \(ps.joined(separator: ", "))"
        case .badPartition(let m): return "bad partition: \(m)"
        case .badSplit(let m): return "bad split: \(m)"
        case .noEndOfTextToken(let p):
            return "\(p): no end-of-text token found (looked for <|endoftext|>, <|end_of_text|>, </s>, <eos>); name one with --eot-token"
        case .unknownEndOfTextToken(let p, let t):
            return "\(p): --eot-token \"\(t)\" is not a token of this tokenizer (give the token's text, such as </s>, not its id)"
        case .tokenOutOfVocabulary(let id, let v, let s): return "\(s): token id \(id) is outside the model's vocabulary of \(v)"
        }
    }
}
