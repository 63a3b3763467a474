import Foundation
import Testing
@testable import Tokenizers
import Random

/// Fixtures written by `tools/make_tokenizer_fixtures.py` with the `tokenizers` library.
enum Fixtures {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")

    struct Case: Decodable {
        let text: String
        let ids: [UInt32]
        let ids_with_special: [UInt32]
        let decoded: String
        let decoded_skip_special: String
    }

    struct DecodeCase: Decodable {
        let ids: [UInt32]
        let decoded: String
        let decoded_skip_special: String
    }

    struct File: Decodable {
        let tokenizer: String
        let cases: [Case]
        let decode_cases: [DecodeCase]
    }

    static func path(_ name: String) -> String { directory.appendingPathComponent(name).path }

    static func file(_ name: String) throws -> File {
        try JSONDecoder().decode(File.self, from: Data(contentsOf: directory.appendingPathComponent("\(name).cases.json")))
    }

    static func load(_ name: String) throws -> (Tokenizer, [Case]) {
        let file = try file(name)
        return (try Tokenizer(contentsOfFile: path(file.tokenizer)), file.cases)
    }

    static let names = ["llama3", "llama3-legacy-merges", "gpt2", "gpt2-prefix", "data-tokenizer"]
}

/// Swift `==` on strings is canonical equivalence; the tests want the exact scalars.
func sameText(_ a: String, _ b: String) -> Bool { Array(a.utf8) == Array(b.utf8) }

@Suite struct TokenizerFixtureTests {
    @Test(arguments: Fixtures.names)
    func idsEqualTheLibrary(name: String) throws {
        let (tokenizer, cases) = try Fixtures.load(name)
        #expect(cases.count >= 90)
        var encoder = tokenizer.makeEncoder()
        for c in cases {
            #expect(encoder.encode(c.text) == c.ids, "\(name): \(c.text.debugDescription)")
            #expect(encoder.encode(c.text, addSpecialTokens: true) == c.ids_with_special,
                    "\(name) with special tokens: \(c.text.debugDescription)")
            // A fresh encoder (empty cache) must agree with the warmed one.
            #expect(tokenizer.encode(c.text) == c.ids, "\(name) uncached: \(c.text.debugDescription)")
        }
    }

    @Test(arguments: Fixtures.names)
    func decodeEqualsTheLibrary(name: String) throws {
        let (tokenizer, cases) = try Fixtures.load(name)
        for c in cases {
            let plain = try tokenizer.decode(c.ids)
            #expect(sameText(plain, c.decoded), "\(name): decode of \(c.text.debugDescription) gave \(plain.debugDescription)")
            let skipped = try tokenizer.decode(c.ids_with_special, skipSpecialTokens: true)
            #expect(sameText(skipped, c.decoded_skip_special), "\(name): skip-special decode of \(c.text.debugDescription)")
        }
    }

    /// Random id sequences: partial UTF-8 becomes U+FFFD exactly where the library puts it.
    @Test(arguments: Fixtures.names)
    func decodeOfArbitraryIdsEqualsTheLibrary(name: String) throws {
        let file = try Fixtures.file(name)
        let tokenizer = try Tokenizer(contentsOfFile: Fixtures.path(file.tokenizer))
        #expect(file.decode_cases.count >= 50)
        for c in file.decode_cases {
            #expect(sameText(try tokenizer.decode(c.ids), c.decoded), "\(name): \(c.ids)")
            #expect(sameText(try tokenizer.decode(c.ids, skipSpecialTokens: true), c.decoded_skip_special), "\(name): \(c.ids)")
        }
    }

    /// Every `Split` behaviour, `invert`, literal patterns and the Qwen 2 regex, each swapped
    /// into the llama3 fixture as its pre-tokenizer.
    @Test func preTokenizerVariantsEqualTheLibrary() throws {
        let url = Fixtures.directory.appendingPathComponent("llama3.variants.json")
        // Texts through JSONDecoder (JSONSerialization drops U+FEFF from strings); the
        // pre-tokenizer objects, plain ASCII, through JSONSerialization to splice them in.
        struct Variant: Decodable { struct Case: Decodable { let text: String; let ids: [UInt32] }; let cases: [Case] }
        struct Variants: Decodable { let variants: [Variant] }
        let variants = try JSONDecoder().decode(Variants.self, from: Data(contentsOf: url)).variants
        let root = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        let preTokenizers = try #require(root["variants"] as? [[String: Any]]).map { $0["pre_tokenizer"] }
        let baseData = try Data(contentsOf: Fixtures.directory.appendingPathComponent("llama3.tokenizer.json"))
        var base = try #require(try JSONSerialization.jsonObject(with: baseData) as? [String: Any])
        #expect(variants.count == 21 && preTokenizers.count == 21)
        for (variant, pre) in zip(variants, preTokenizers) {
            base["pre_tokenizer"] = pre
            let tokenizer = try Tokenizer(json: [UInt8](JSONSerialization.data(withJSONObject: base)))
            for c in variant.cases {
                #expect(tokenizer.encode(c.text) == c.ids, "\(pre ?? "-"): \(c.text.debugDescription)")
            }
        }
    }

    /// Without a normalizer, prefix space or stripping added tokens, decoding is the inverse of encoding.
    @Test(arguments: ["llama3", "gpt2", "data-tokenizer"])
    func decodeInvertsEncode(name: String) throws {
        let (tokenizer, cases) = try Fixtures.load(name)
        for c in cases {
            let back = try tokenizer.decode(tokenizer.encode(c.text))
            #expect(sameText(back, c.text), "\(name): \(c.text.debugDescription) came back as \(back.debugDescription)")
        }
    }

    @Test func llama3SpecialTokensAndTemplate() throws {
        let (tokenizer, _) = try Fixtures.load("llama3")
        let bos = try #require(tokenizer.id(forToken: "<|begin_of_text|>"))
        let eot = try #require(tokenizer.id(forToken: "<|eot_id|>"))
        let ids = tokenizer.encode("hi<|eot_id|>", addSpecialTokens: true)
        #expect(ids.first == bos)
        #expect(ids.last == eot)
        #expect(tokenizer.encode("hi<|eot_id|>", addSpecialTokens: false).first != bos)
        #expect(tokenizer.token(forId: eot) == "<|eot_id|>")
        #expect(tokenizer.vocabularySize == 2501)
        #expect(!tokenizer.truncationInFile && !tokenizer.paddingInFile)
    }

    /// Long words take the heap path of the BPE merge loop, short ones the scan path; both
    /// must merge in the same order (lowest rank, then leftmost) on any word.
    @Test func heapAndScanMergeAlike() throws {
        let (tokenizer, _) = try Fixtures.load("llama3")
        let model = tokenizer.model
        var rng = SplitMix64(seed: 7)
        let alphabet = Array("the and of  said unto\n,.'sTHE日本😀".utf8)
        for _ in 0..<2000 {
            let n = Int(rng.next() % 60) + 2
            let word = (0..<n).map { _ in alphabet[Int(rng.next() % UInt64(alphabet.count))] }
            let symbols = word.map { UInt32(model.byteIds[Int($0)]) }
            var a = symbols, b = symbols
            model.mergeByScan(&a)
            model.mergeWithHeap(&b)
            #expect(a == b, "\(word)")
        }
    }

    @Test func decodeRefusesUnknownIds() throws {
        let (tokenizer, _) = try Fixtures.load("llama3")
        #expect(throws: TokenizerError.unknownTokenId(999_999)) { try tokenizer.decode([5, 999_999]) }
    }
}

