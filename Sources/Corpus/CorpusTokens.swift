import Tokenizers

/// The id that joins documents in the token stream: `named` when given, else the first of the
/// usual end-of-text tokens the tokenizer knows.
/// - Throws: ``CorpusError/unknownEndOfTextToken(tokenizerPath:token:)`` when `named` is not a
///   token, ``CorpusError/noEndOfTextToken(tokenizerPath:)`` when none is found.
public func endOfTextID(_ t: Tokenizer, named: String?, tokenizerPath path: String) throws -> Int32 {
    let candidates = named.map { [$0] } ?? ["<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|eot_id|>"]
    for c in candidates { if let id = t.id(forToken: c) { return Int32(id) } }
    if let named { throw CorpusError.unknownEndOfTextToken(tokenizerPath: path, token: named) }
    throw CorpusError.noEndOfTextToken(tokenizerPath: path)
}

extension TokenStream {
    /// Reads every corpus file and builds the stream, documents in file order: text documents
    /// tokenised and followed by `endOfText`, pre-tokenised ones taken as they are.
    /// - Throws: ``CorpusError`` naming the file at fault, including
    ///   ``CorpusError/tokenOutOfVocabulary(id:vocabulary:source:)`` for an id `>= V`.
    public init(corpus: [String], tokenizer: Tokenizer, endOfText: Int32, options: CorpusOptions, vocabulary V: Int) throws {
        self.init()
        var encoder = tokenizer.makeEncoder()
        for path in try expandCorpusPaths(corpus) {
            for doc in try readDocuments(path: path, options: options) {
                switch doc.content {
                case .text(let text):
                    let ids = encoder.encode(text).map { Int32(bitPattern: $0) }
                    append(ids, key: doc.key, endOfText: endOfText)
                case .tokens(let ids):
                    if let bad = ids.first(where: { $0 < 0 || Int($0) >= V }) {
                        throw CorpusError.tokenOutOfVocabulary(id: bad, vocabulary: V, source: doc.source)
                    }
                    append(ids, key: doc.key, endOfText: nil)
                }
            }
        }
    }
}

/// The token stream of a corpus as the teacher pass builds it (documents tokenised and joined
/// with the end-of-text token), for training and evaluation on the same windows.
///
/// - Throws: ``CorpusError`` naming the file at fault, and the tokenizer's errors.
public func corpusTokens(corpus: [String], tokenizerPath: String, options: CorpusOptions = .init(),
                         endOfTextToken: String? = nil, vocabularySize V: Int) throws -> [Int32] {
    let tokenizer = try Tokenizer(contentsOfFile: tokenizerPath)
    let eot = try endOfTextID(tokenizer, named: endOfTextToken, tokenizerPath: tokenizerPath)
    var o = options
    if o.endOfTextID == nil { o.endOfTextID = eot }
    let stream = try TokenStream(corpus: corpus, tokenizer: tokenizer, endOfText: eot, options: o, vocabulary: V)
    guard !stream.ids.isEmpty else { throw CorpusError.emptyCorpus(paths: corpus) }
    return stream.ids
}
