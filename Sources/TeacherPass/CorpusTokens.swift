import Tokenizers

/// The token stream of a corpus as the teacher pass builds it (documents tokenised and joined
/// with the end-of-text token), for training and evaluation on the same windows.
///
/// - Throws: ``CorpusError`` and ``TeacherPassError`` naming the file at fault, the tokenizer's
///   errors, and ``TeacherPassError/tokenOutOfVocabulary(id:vocabulary:source:)``.
public func corpusTokens(corpus: [String], tokenizerPath: String, options: CorpusOptions = .init(),
                         endOfTextToken: String? = nil, vocabularySize V: Int) throws -> [Int32] {
    let tokenizer = try Tokenizer(contentsOfFile: tokenizerPath)
    let eot = try TeacherPassJob.endOfText(tokenizer, named: endOfTextToken, path: tokenizerPath)
    var o = options
    if o.endOfTextID == nil { o.endOfTextID = eot }
    let stream = try TeacherPassJob.tokenize(corpus: corpus, tokenizer: tokenizer, endOfText: eot, options: o, vocabulary: V)
    guard !stream.ids.isEmpty else { throw CorpusError.emptyCorpus(paths: corpus) }
    return stream.ids
}

/// The tokenizer fingerprint a cache's manifest records (`xxh3:` + 16 hex digits of the
/// `tokenizer.json` bytes), for checking a student against a cache.
public func tokenizerFingerprint(path: String) throws -> String {
    Fingerprint.render(try Fingerprint.file(path))
}

