import ArgumentParser
import Foundation
import Tokenizers

/// `logitcache tokenize`: encode text (or decode ids) with a Hugging Face `tokenizer.json`.
struct TokenizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenize",
        abstract: "Encode text to token ids (or decode ids to text) with a byte-level BPE tokenizer.json.",
        discussion: """
            Ids equal those of the Hugging Face `tokenizers` library. Examples:
              logitcache tokenize --tokenizer tokenizer.json --text "Hello world" --json
              logitcache tokenize --tokenizer tokenizer.json --decode 9906,1917
            """)

    @Option(help: "Path of the tokenizer.json file.")
    var tokenizer: String

    @Option(help: "Text to encode.")
    var text: String?

    @Option(help: "File whose whole UTF-8 contents are encoded.")
    var textFile: String?

    @Option(help: "Comma-separated ids to decode to text instead of encoding.")
    var decode: String?

    @Flag(help: "Add the post-processor's special tokens (e.g. <|begin_of_text|>) when encoding.")
    var addSpecialTokens = false

    @Flag(help: "Leave special tokens out when decoding.")
    var skipSpecialTokens = false

    @Flag(help: "Print JSON: {\"ids\": [...]} when encoding, {\"text\": \"...\"} when decoding.")
    var json = false

    func validate() throws {
        let inputs = [text != nil, textFile != nil, decode != nil].filter { $0 }.count
        guard inputs == 1 else { throw ValidationError("give exactly one of --text, --text-file or --decode") }
    }

    func run() throws {
        let tok = try Tokenizer(contentsOfFile: tokenizer)
        if let decode {
            var ids: [UInt32] = []
            for (i, part) in decode.split(separator: ",", omittingEmptySubsequences: false).enumerated() {
                let trimmed = part.trimmingCharacters(in: .whitespaces)
                guard let id = UInt32(trimmed) else {
                    throw ValidationError("--decode: item \(i + 1) `\(trimmed)` is not a token id (a non-negative integer)")
                }
                ids.append(id)
            }
            let out = try tok.decode(ids, skipSpecialTokens: skipSpecialTokens)
            if json {
                let data = try JSONSerialization.data(withJSONObject: ["text": out], options: [.withoutEscapingSlashes])
                print(String(decoding: data, as: UTF8.self))
            } else {
                print(out)
            }
            return
        }
        let input: String
        if let text {
            input = text
        } else {
            let path = textFile ?? ""
            guard let data = FileManager.default.contents(atPath: path) else {
                throw ValidationError("--text-file: cannot read \(path)")
            }
            guard let s = String(validating: [UInt8](data), as: UTF8.self) else {
                throw ValidationError("--text-file: \(path) is not valid UTF-8")
            }
            input = s
        }
        let ids = tok.encode(input, addSpecialTokens: addSpecialTokens)
        let list = ids.map(String.init).joined(separator: json ? ", " : ",")
        print(json ? "{\"ids\": [\(list)]}" : list)
    }
}
