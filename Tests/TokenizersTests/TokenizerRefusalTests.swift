import Foundation
import Testing
@testable import Tokenizers

/// Files this implementation cannot honour exactly must be refused with an error naming the
/// component or field, never approximated.
@Suite struct TokenizerRefusalTests {
    /// The llama3 fixture as a mutable JSON object.
    func llama3() throws -> [String: Any] {
        let data = try Data(contentsOf: Fixtures.directory.appendingPathComponent("llama3.tokenizer.json"))
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    func load(_ object: [String: Any]) throws -> Tokenizer {
        try Tokenizer(json: [UInt8](JSONSerialization.data(withJSONObject: object)))
    }

    func expectUnsupported(_ object: [String: Any], mentioning word: String) {
        do {
            _ = try load(object)
            Issue.record("expected a refusal mentioning \(word)")
        } catch let error as TokenizerError {
            guard case let .unsupported(component, detail) = error else {
                Issue.record("expected .unsupported, got \(error)")
                return
            }
            #expect((component + " " + detail).contains(word), "\(error)")
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }

    @Test func refusesUnigramAndWordPieceModels() throws {
        var o = try llama3()
        o["model"] = ["type": "Unigram", "unk_id": 0, "vocab": [["<unk>", 0.0]]]
        expectUnsupported(o, mentioning: "Unigram")
        o["model"] = ["type": "WordPiece", "unk_token": "[UNK]", "vocab": ["[UNK]": 0]]
        expectUnsupported(o, mentioning: "WordPiece")
    }

    @Test func refusesSentencePieceStyleParts() throws {
        var o = try llama3()
        o["pre_tokenizer"] = ["type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true]
        expectUnsupported(o, mentioning: "Metaspace")

        o = try llama3()
        o["normalizer"] = ["type": "Sequence", "normalizers": [["type": "NFC"], ["type": "Replace", "pattern": ["String": " "], "content": "▁"]]]
        expectUnsupported(o, mentioning: "Replace")

        o = try llama3()
        o["decoder"] = ["type": "Sequence", "decoders": [["type": "ByteFallback"], ["type": "Fuse"]]]
        expectUnsupported(o, mentioning: "decoder")

        o = try llama3()
        var model = try #require(o["model"] as? [String: Any])
        model["byte_fallback"] = true
        o["model"] = model
        expectUnsupported(o, mentioning: "byte_fallback")

        o = try llama3()
        o["pre_tokenizer"] = ["type": "Split", "pattern": ["String": " "], "behavior": "Isolated", "invert": false]
        expectUnsupported(o, mentioning: "ByteLevel")
    }

    @Test func refusesUnknownRegexAndDropout() throws {
        var o = try llama3()
        o["pre_tokenizer"] = ["type": "Sequence", "pretokenizers": [
            ["type": "Split", "pattern": ["Regex": "\\p{N}{1,4}"], "behavior": "Isolated", "invert": false],
            ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false]]]
        expectUnsupported(o, mentioning: "\\p{N}{1,4}")

        o = try llama3()
        var model = try #require(o["model"] as? [String: Any])
        model["dropout"] = 0.1
        o["model"] = model
        expectUnsupported(o, mentioning: "dropout")
    }

    @Test func reportsMalformedFilesWithTheirPlace() throws {
        #expect(throws: TokenizerError.invalidJSON(offset: 11, reason: "unterminated string")) {
            try Tokenizer(json: Array(#"{"model": "#.utf8) + [0x22])
        }
        var o = try llama3()
        var model = try #require(o["model"] as? [String: Any])
        model["merges"] = [["t", "no-such-token"]]
        o["model"] = model
        #expect(throws: TokenizerError.malformed(path: "model.merges[0]", reason: "merge uses a token that is not in model.vocab")) {
            try load(o)
        }
        model["merges"] = ["t h e"]
        o["model"] = model
        #expect(throws: TokenizerError.malformed(path: "model.merges[0]", reason: "merge `t h e` is not two tokens separated by one space")) {
            try load(o)
        }
        o = try llama3()
        o.removeValue(forKey: "model")
        #expect(throws: TokenizerError.malformed(path: "model", reason: "missing model object")) { try load(o) }
        #expect(throws: TokenizerError.self) { try Tokenizer(contentsOfFile: "/nonexistent/tokenizer.json") }
    }

    @Test func truncatedFileIsRefusedNotCrashed() throws {
        let data = try [UInt8](Data(contentsOf: Fixtures.directory.appendingPathComponent("gpt2.tokenizer.json")))
        for cut in stride(from: 1, to: data.count, by: data.count / 37) {
            #expect(throws: TokenizerError.self) { try Tokenizer(json: Array(data[..<cut])) }
        }
    }
}
