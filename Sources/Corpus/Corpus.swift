import CXXHash
import Foundation
import ShardFormat
import Tokenizers

/// Document keys are ShardFormat's ``DocumentHash`` (the value a shard footer stores per
/// sequence), computed here: XXH3-128 of a document's UTF-8 text, or of its token ids as
/// little-endian `UInt32` for pre-tokenised corpora. The same text gives the same key wherever
/// it appears, so a cached window can be traced back to its document.
extension DocumentHash {
    /// The key of raw bytes: XXH3-128, high and low 64-bit halves.
    public init(bytes: UnsafeRawBufferPointer) {
        let h = XXH3_128bits(bytes.baseAddress, bytes.count)
        self.init(high: h.high64, low: h.low64)
    }

    /// The key of a document's text.
    public init(text: String) {
        var s = text
        self = s.withUTF8 { DocumentHash(bytes: UnsafeRawBufferPointer($0)) }
    }

    /// The key of a pre-tokenised document.
    public init(tokens: [Int32]) {
        let le = tokens.map { UInt32(bitPattern: $0).littleEndian }
        self = le.withUnsafeBytes { DocumentHash(bytes: $0) }
    }
}

/// One corpus document: text to tokenise, or ids already tokenised.
public struct CorpusDocument: Sendable {
    public enum Content: Sendable, Equatable {
        case text(String)
        case tokens([Int32])
    }
    public var content: Content
    /// Where it came from: `path`, `path:line` (JSON Lines) or `path#n` (n-th document of a file).
    public var source: String
    public var key: DocumentHash

    public init(content: Content, source: String) {
        self.content = content
        self.source = source
        switch content {
        case .text(let t): key = DocumentHash(text: t)
        case .tokens(let t): key = DocumentHash(tokens: t)
        }
    }
}

/// How corpus files are cut into documents.
public struct CorpusOptions: Sendable, Equatable {
    /// Plain text: split a file into documents at blank lines instead of one document per file.
    public var blankLineDocuments = false
    /// JSON Lines: the string field that holds a document's text.
    public var textField = "text"
    /// Token files: the id that separates documents (the tokenizer's end-of-text id). When nil,
    /// a token file is one document.
    public var endOfTextID: Int32? = nil

    public init(blankLineDocuments: Bool = false, textField: String = "text", endOfTextID: Int32? = nil) {
        self.blankLineDocuments = blankLineDocuments
        self.textField = textField
        self.endOfTextID = endOfTextID
    }
}

/// Reads the documents of corpus files in order. Empty documents are skipped.
///
/// - Throws: ``CorpusError`` naming the file (and line or byte) of unreadable, non-UTF-8,
///   malformed JSON, or inconsistent token files.
public func readDocuments(path: String, options: CorpusOptions = .init()) throws -> [CorpusDocument] {
    guard let kind = CorpusFileKind(path: path) else { throw CorpusError.unsupportedFile(path: path) }
    switch kind {
    case .tokens:
        let ids = try TokenFile.read(path: path)
        if let bad = ids.firstIndex(where: { $0 < 0 }) {
            throw CorpusError.badTokenFile(path: path, reason: "token \(bad) is above 2^31-1")
        }
        guard let eot = options.endOfTextID else {
            return ids.isEmpty ? [] : [CorpusDocument(content: .tokens(ids), source: path)]
        }
        // Each document ends with (or, llm.c style, is preceded by) the end-of-text id; keep
        // the separator with the document it ends so the stream is reproduced exactly.
        var docs: [CorpusDocument] = []
        var start = 0
        for i in ids.indices where ids[i] == eot {
            if i + 1 > start { docs.append(CorpusDocument(content: .tokens(Array(ids[start...i])), source: "\(path)#\(docs.count)")) }
            start = i + 1
        }
        if start < ids.count { docs.append(CorpusDocument(content: .tokens(Array(ids[start...])), source: "\(path)#\(docs.count)")) }
        return docs
    case .text:
        let text = try readUTF8(path: path)
        if !options.blankLineDocuments {
            return text.isEmpty ? [] : [CorpusDocument(content: .text(text), source: path)]
        }
        return splitAtBlankLines(text).enumerated().map {
            CorpusDocument(content: .text($0.element), source: "\(path)#\($0.offset)")
        }
    case .jsonl:
        let text = try readUTF8(path: path)
        var docs: [CorpusDocument] = []
        var lineNo = 0
        for line in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline) {
            lineNo += 1
            if line.allSatisfy({ $0.isWhitespace }) { continue }
            let object: Any
            do { object = try JSONSerialization.jsonObject(with: Data(line.utf8)) }
            catch { throw CorpusError.badJSONLine(path: path, line: lineNo, reason: "invalid JSON") }
            guard let dict = object as? [String: Any] else {
                throw CorpusError.badJSONLine(path: path, line: lineNo, reason: "not an object")
            }
            guard let t = dict[options.textField] as? String else {
                throw CorpusError.missingTextField(path: path, line: lineNo, field: options.textField)
            }
            if !t.isEmpty { docs.append(CorpusDocument(content: .text(t), source: "\(path):\(lineNo)")) }
        }
        return docs
    }
}

/// Reads a whole file as UTF-8, naming the byte offset of the first invalid sequence.
func readUTF8(path: String) throws -> String {
    let data: Data
    if path.lowercased().hasSuffix(".zst") { data = try CompressedCorpus.read(path: path) }
    else {
        if let problem = regularFileProblem(path) { throw CorpusError.unreadable(path: path, reason: problem) }
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) }
        catch { throw CorpusError.unreadable(path: path, reason: error.localizedDescription) }
    }
    if let s = String(data: data, encoding: .utf8), s.utf8.count == data.count { return s }
    throw CorpusError.invalidUTF8(path: path, byteOffset: firstInvalidUTF8Offset(data))
}

/// The byte offset of the first byte that does not start or continue a valid UTF-8 scalar.
func firstInvalidUTF8Offset(_ data: Data) -> Int {
    var decoder = UTF8()
    var it = data.makeIterator()
    var offset = 0
    while true {
        switch decoder.decode(&it) {
        case .scalarValue(let s): offset += UTF8.width(s)
        case .emptyInput: return offset
        case .error: return offset
        }
    }
}

/// Paragraph-style documents: runs of lines separated by one or more blank lines.
func splitAtBlankLines(_ text: String) -> [String] {
    var docs: [String] = []
    var current: [Substring] = []
    for line in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline) {
        if line.allSatisfy({ $0.isWhitespace }) {
            if !current.isEmpty { docs.append(current.joined(separator: "\n")); current = [] }
        } else {
            current.append(line)
        }
    }
    if !current.isEmpty { docs.append(current.joined(separator: "\n")) }
    return docs
}
