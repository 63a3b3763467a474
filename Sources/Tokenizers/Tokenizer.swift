import Foundation

/// A Hugging Face `tokenizer.json` of the byte-level BPE kind (GPT-2, Llama 3, Qwen 2 style),
/// encoding and decoding with ids identical to the `tokenizers` library's.
///
/// Supported components (anything else is refused with `TokenizerError.unsupported` when
/// loading, never approximated):
/// - model `BPE` with merges as `"a b"` strings or `["a", "b"]` pairs, `ignore_merges`;
/// - normalizer `null`, `NFC`, `NFD`, `NFKC`, `NFKD` or a `Sequence` of them;
/// - pre-tokenizer `ByteLevel` (with `add_prefix_space`, `use_regex`), `Split` with the GPT-2,
///   Llama 3 or Qwen 2 regex or a literal string (any behaviour, `invert`), and `Sequence`s
///   of these ending in `ByteLevel`;
/// - added and special tokens with `single_word`, `lstrip`, `rstrip`, `normalized`;
/// - post-processors `ByteLevel`, `TemplateProcessing` (single sequence), `RobertaProcessing`,
///   `BertProcessing` and `Sequence`s of them; decoder `ByteLevel`.
///
/// The file's `truncation` and `padding` settings are not applied: the project tokenises
/// whole documents (`truncationInFile` / `paddingInFile` tell whether the file had any).
///
/// `Tokenizer` is immutable and `Sendable`. `encode` keeps a word cache for one call; for
/// many texts make one `TokenEncoder` per thread with `makeEncoder()`.
public struct Tokenizer: Sendable {
    let model: BytePairModel
    let normalizer: Normalizer
    let preTokenizer: [PreTokenizerStep]
    let rawMatcher: AddedTokenMatcher
    let normalizedMatcher: AddedTokenMatcher
    let postProcessors: [PostProcessor]
    let hasDecoder: Bool
    /// Model vocabulary by id (nil for unused ids); strings as written in the file.
    let modelTokens: [String?]
    let modelIdsByBytes: [[UInt8]: UInt32]
    let addedById: [UInt32: AddedToken]
    let addedIdsByBytes: [[UInt8]: UInt32]

    /// All added and special tokens of the file, in file order.
    public let addedTokens: [AddedToken]
    /// Whether the file set `truncation` / `padding` (which `encode` does not apply).
    public let truncationInFile: Bool
    public let paddingInFile: Bool

    /// One more than the largest id of the model vocabulary and the added tokens: the size of
    /// an embedding table for this tokenizer.
    public var vocabularySize: Int {
        let addedMax = addedById.keys.max().map { Int($0) + 1 } ?? 0
        return max(modelTokens.count, addedMax)
    }

    /// Loads a `tokenizer.json` file.
    /// - Throws: `TokenizerError.unreadable` naming the path, `.invalidJSON`, `.malformed`
    ///   naming the field, or `.unsupported` naming the component.
    public init(contentsOfFile path: String) throws {
        if let problem = regularFileProblem(path) { throw TokenizerError.unreadable(path: path, reason: problem) }
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw TokenizerError.unreadable(path: path, reason: error.localizedDescription)
        }
        try self.init(json: [UInt8](data))
    }

    /// Parses the UTF-8 text of a `tokenizer.json`. Errors as for `init(contentsOfFile:)`.
    public init(json: [UInt8]) throws {
        self = try TokenizerLoader.load(try JSONValue.parse(json))
    }

    init(model: BytePairModel, normalizer: Normalizer, preTokenizer: [PreTokenizerStep],
         addedTokens: [AddedToken], postProcessors: [PostProcessor], hasDecoder: Bool,
         modelTokens: [String?], modelIdsByBytes: [[UInt8]: UInt32],
         truncationInFile: Bool, paddingInFile: Bool) {
        self.model = model
        self.normalizer = normalizer
        self.preTokenizer = preTokenizer
        self.postProcessors = postProcessors
        self.hasDecoder = hasDecoder
        self.modelTokens = modelTokens
        self.modelIdsByBytes = modelIdsByBytes
        self.addedTokens = addedTokens
        self.truncationInFile = truncationInFile
        self.paddingInFile = paddingInFile
        var byId: [UInt32: AddedToken] = [:]
        var byBytes: [[UInt8]: UInt32] = [:]
        for t in addedTokens { byId[t.id] = t; byBytes[Array(t.content.utf8)] = t.id }
        self.addedById = byId
        self.addedIdsByBytes = byBytes
        // Like the library: special tokens first, then the others; each in file order.
        let ordered = addedTokens.filter(\.special) + addedTokens.filter { !$0.special }
        rawMatcher = AddedTokenMatcher(ordered.filter { !$0.normalized }.map { (Array($0.content.utf8), $0) })
        normalizedMatcher = AddedTokenMatcher(ordered.filter(\.normalized).map {
            (normalizer.applyIfNeeded(Array($0.content.utf8)[...]) ?? Array($0.content.utf8), $0)
        })
    }

    /// Token ids of `text`.
    /// - Parameter addSpecialTokens: apply the post-processor's template (for example Llama 3's
    ///   leading `<|begin_of_text|>`), as `encode(text, add_special_tokens=True)` does.
    /// - Complexity: O(n log n) in the length of the longest word, linear in the text otherwise.
    public func encode(_ text: String, addSpecialTokens: Bool = false) -> [UInt32] {
        var encoder = makeEncoder()
        return encoder.encode(text, addSpecialTokens: addSpecialTokens)
    }

    /// An encoder with its own word cache, for encoding many texts on one thread.
    public func makeEncoder() -> TokenEncoder { TokenEncoder(tokenizer: self) }

    /// The text of `ids`, as the library's `decode` gives it: model tokens through the
    /// ByteLevel decoder (invalid UTF-8 becomes U+FFFD), added tokens by their content.
    /// - Parameter skipSpecialTokens: leave out special tokens.
    /// - Throws: `TokenizerError.unknownTokenId` for an id that is in no vocabulary (the library
    ///   drops such ids silently), `.noDecoder` when the file has no decoder.
    public func decode(_ ids: [UInt32], skipSpecialTokens: Bool = false) throws -> String {
        guard hasDecoder else { throw TokenizerError.noDecoder }
        var bytes: [UInt8] = []
        for id in ids {
            if let added = addedById[id] {
                if skipSpecialTokens && added.special { continue }
                // The ByteLevel decoder maps a token's characters back to bytes when all of
                // them are byte-level characters, and keeps its UTF-8 otherwise.
                bytes += ByteLevel.bytes(of: added.content) ?? Array(added.content.utf8)
            } else if Int(id) < modelTokens.count, let token = modelTokens[Int(id)] {
                bytes += ByteLevel.bytes(of: token) ?? Array(token.utf8)
            } else {
                throw TokenizerError.unknownTokenId(id)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The id of a token written as in the file (byte-level characters for model tokens).
    public func id(forToken token: String) -> UInt32? {
        let key = Array(token.utf8)
        return addedIdsByBytes[key] ?? modelIdsByBytes[key]
    }

    /// The token of an id as written in the file, or nil.
    public func token(forId id: UInt32) -> String? {
        if let added = addedById[id] { return added.content }
        return Int(id) < modelTokens.count ? modelTokens[Int(id)] : nil
    }
}

/// Encodes texts with a cache of word -> ids kept across calls. Not thread-safe: make one per
/// thread with `Tokenizer.makeEncoder()`.
public struct TokenEncoder {
    public let tokenizer: Tokenizer
    private var cache: [[UInt8]: [UInt32]] = [:]
    /// Words longer than this are not cached (they rarely repeat).
    private static let maxCachedWordLength = 64
    private static let maxCacheEntries = 200_000

    init(tokenizer: Tokenizer) { self.tokenizer = tokenizer }

    /// Token ids of `text`; see `Tokenizer.encode(_:addSpecialTokens:)`.
    public mutating func encode(_ text: String, addSpecialTokens: Bool = false) -> [UInt32] {
        var ids: [UInt32] = []
        ids.reserveCapacity(text.utf8.count / 3)
        let bytes = Array(text.utf8)
        var raw: [Segment] = []
        tokenizer.rawMatcher.split(bytes[...], into: &raw)
        for segment in raw {
            switch segment {
            case let .token(id): ids.append(id)
            case let .text(piece):
                if let normalized = tokenizer.normalizer.applyIfNeeded(piece) {
                    encodeNormalized(normalized[...], into: &ids)
                } else {
                    encodeNormalized(piece, into: &ids)
                }
            }
        }
        if addSpecialTokens {
            for p in tokenizer.postProcessors { ids = p.apply(ids) }
        }
        return ids
    }

    private mutating func encodeNormalized(_ piece: ArraySlice<UInt8>, into ids: inout [UInt32]) {
        var segments: [Segment] = []
        tokenizer.normalizedMatcher.split(piece, into: &segments)
        let pre = PreTokenizer(steps: tokenizer.preTokenizer)
        for segment in segments {
            switch segment {
            case let .token(id): ids.append(id)
            case let .text(text):
                pre.forEachWord(text) { word in encodeWord(word, into: &ids) }
            }
        }
    }

    private mutating func encodeWord(_ word: UnsafeBufferPointer<UInt8>, into ids: inout [UInt32]) {
        guard word.count <= Self.maxCachedWordLength else {
            tokenizer.model.tokenize(word, into: &ids)
            return
        }
        let key = Array(word)
        if let hit = cache[key] { ids.append(contentsOf: hit); return }
        var out: [UInt32] = []
        tokenizer.model.tokenize(word, into: &out)
        if cache.count >= Self.maxCacheEntries { cache.removeAll(keepingCapacity: true) }
        cache[key] = out
        ids.append(contentsOf: out)
    }
}

/// A post-processor step, applied only when special tokens are requested.
enum PostProcessor: Sendable {
    /// `TemplateProcessing` for a single sequence: the ids of each special token or of the text.
    case template([TemplatePiece])

    func apply(_ ids: [UInt32]) -> [UInt32] {
        switch self {
        case let .template(pieces):
            var out: [UInt32] = []
            out.reserveCapacity(ids.count + pieces.count)
            for p in pieces {
                switch p {
                case let .special(s): out += s
                case .sequence: out += ids
                }
            }
            return out
        }
    }
}

enum TemplatePiece: Sendable {
    case special([UInt32])
    case sequence
}

/// Why `path` is not a regular file one can read whole (a directory, a FIFO, a socket, a
/// device: reading a FIFO would wait for a writer), or nil when it is one or does not exist
/// (then opening it says so).
public func regularFileProblem(_ path: String) -> String? {
    var st = stat()
    guard stat(path, &st) == 0 else { return nil }
    switch st.st_mode & S_IFMT {
    case S_IFREG: return nil
    case S_IFDIR: return "it is a directory, not a file"
    default: return "it is not a regular file (a FIFO, socket or device)"
    }
}
