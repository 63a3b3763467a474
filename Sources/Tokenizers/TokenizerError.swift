/// Why a `tokenizer.json` could not be loaded, or an encode/decode request could not be served.
///
/// Every case names what went wrong and where (the JSON path inside the file, the component
/// type, the token id), so a user can act on the message without reading the source.
public enum TokenizerError: Error, Equatable, CustomStringConvertible {
    /// The file could not be read.
    case unreadable(path: String, reason: String)
    /// The text is not valid JSON; `offset` is the byte where parsing stopped.
    case invalidJSON(offset: Int, reason: String)
    /// A required field is missing or has the wrong type; `path` is a JSON path like `model.vocab`.
    case malformed(path: String, reason: String)
    /// The file asks for a component this implementation does not honour (for example a
    /// `Unigram` model or a `Metaspace` pre-tokenizer). It is refused rather than approximated.
    case unsupported(component: String, detail: String)
    /// `decode` was given an id that is in neither the model vocabulary nor the added tokens.
    case unknownTokenId(UInt32)
    /// `decode` was asked of a tokenizer whose file has no decoder.
    case noDecoder

    public var description: String {
        switch self {
        case let .unreadable(path, reason): return "cannot read tokenizer file \(path): \(reason)"
        case let .invalidJSON(offset, reason): return "tokenizer.json is not valid JSON at byte \(offset): \(reason)"
        case let .malformed(path, reason): return "tokenizer.json field `\(path)`: \(reason)"
        case let .unsupported(component, detail):
            return "unsupported tokenizer component \(component): \(detail) (only byte-level BPE tokenizers are supported)"
        case let .unknownTokenId(id): return "token id \(id) is not in the vocabulary"
        case .noDecoder: return "the tokenizer has no decoder (`decoder` is null), so ids cannot be turned back into text"
        }
    }
}
