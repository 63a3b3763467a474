import Foundation
import Testing
@testable import ShardFormat

/// The golden caches of Tests/Golden (see its README): one committed cache per format version a
/// reader accepts, each with `expected.jsonl`, the `logitcache dump --json` of every decoded value
/// when it was written (by tools/make_golden_caches.sh). The reader must keep decoding every golden
/// to exactly those values, and every format minor version this library reads must have one: a
/// new version adds a directory; goldens are never regenerated. The Python readers are held to the
/// same files by python/tests/test_golden.py.
@Suite struct GoldenCacheTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Golden").path
    /// Every directory of Tests/Golden, sorted.
    static let names: [String] = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).filter { name in
        var isDir: ObjCBool = false
        return FileManager.default.fileExists(atPath: root + "/" + name, isDirectory: &isDir) && isDir.boolValue
    }.sorted()

    /// `expected.jsonl` of golden `dir`: one JSON object per sequence.
    static func expected(_ dir: String) throws -> [[String: Any]] {
        let text = try String(contentsOfFile: dir + "/expected.jsonl", encoding: .utf8)
        return try text.split(separator: "\n").map { line in
            try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        }
    }

    /// A JSON integer.
    static func integer(_ v: Any?) -> Int? {
        if let i = v as? Int { return i }
        if let n = v as? NSNumber, let i = Int(exactly: n.doubleValue) { return i }
        return nil
    }

    /// A JSON array of integers (nil if anything in it is not one).
    static func integers(_ v: Any?) -> [Int]? {
        guard let a = v as? [Any] else { return nil }
        let r = a.compactMap(integer)
        return r.count == a.count ? r : nil
    }

    /// A dumped float: a JSON number, or the strings "inf", "-inf", "nan" for non-finite values.
    static func number(_ v: Any?) -> Double? {
        if let s = v as? String { return s == "inf" ? .infinity : s == "-inf" ? -.infinity : s == "nan" ? .nan : nil }
        if let d = v as? Double { return d }
        if let i = v as? Int { return Double(i) }
        if let n = v as? NSNumber { return n.doubleValue }
        return nil
    }

    /// `got` equals the dumped float `want` (JSON doubles are the stored float32s widened, so
    /// the conversion back is exact); NaN equals NaN.
    static func sameFloat(_ got: Float, _ want: Any?) -> Bool {
        guard let d = number(want) else { return false }
        return got.isNaN ? d.isNaN : got == Float(d)
    }

    /// `got` equals the dumped array of floats `want`, element by element.
    static func sameFloats(_ got: [Float], _ want: Any?) -> Bool {
        guard let a = want as? [Any], a.count == got.count else { return false }
        return zip(got, a).allSatisfy { sameFloat($0, $1) }
    }

    @Test func everyFormatMinorVersionHasAGolden() {
        #expect(ShardFormatVersion.minor >= 3)
        for m in 0...ShardFormatVersion.minor {
            #expect(Self.names.contains("format-1.\(m)"),
                    "no golden cache for format 1.\(m): add Tests/Golden/format-1.\(m) with tools/make_golden_caches.sh")
        }
    }

    /// A directory named `format-1.N` or `format-1.N-what` holds shards whose footers say 1.N.
    @Test(arguments: GoldenCacheTests.names) func aGoldenHoldsTheVersionItNames(name: String) throws {
        let prefix = "format-1."
        #expect(name.hasPrefix(prefix), "golden directories are named format-1.N or format-1.N-what")
        let rest = name.dropFirst(prefix.count)
        let digits = rest.prefix(while: { $0.isNumber })
        let minor = try #require(Int(digits), "\(name): no minor version in the name")
        let suffix = rest.dropFirst(digits.count)
        #expect(suffix.isEmpty || suffix.hasPrefix("-"), "\(name)")
        #expect(minor <= ShardFormatVersion.minor)
        let dir = Self.root + "/" + name
        let r = try CacheReader(directory: dir)
        #expect(!r.manifest.shards.isEmpty)
        for entry in r.manifest.shards {
            let shard = try ShardReader(path: dir + "/" + entry.file)
            #expect((shard.layout.json.formatMinorVersion ?? 0) == minor, "\(name)/\(entry.file)")
        }
    }

    /// Every value `CacheReader` decodes equals `expected.jsonl` (decoded and printed as
    /// `logitcache dump --json` does: every sequence, all K entries, samples when stored).
    @Test(arguments: GoldenCacheTests.names) func decodesEveryExpectedValue(name: String) throws {
        let dir = Self.root + "/" + name
        let lines = try Self.expected(dir)
        let r = try CacheReader(directory: dir)
        #expect(r.sequenceCount == lines.count, "\(name): sequences")
        let tokenCount = lines.reduce(0) { $0 + (Self.integer($1["length"]) ?? 0) }
        #expect(r.tokenCount > 0 && r.tokenCount == tokenCount, "\(name): tokens")
        let b = TargetBatch()
        for (i, line) in lines.enumerated() where i < r.sequenceCount {
            let s = try r.sequence(i)
            let at = "\(name) sequence \(i)"
            #expect(Self.integer(line["sequence"]) == i, "\(at)")
            #expect(line["document_key"] as? String == s.documentKey.description, "\(at): document key")
            #expect(Self.integer(line["document_offset"]) == s.documentOffset, "\(at): document offset")
            #expect(Self.integer(line["length"]) == s.length, "\(at): length")
            let tokens = try #require(line["tokens"] as? [[String: Any]], "\(at): tokens")
            #expect(tokens.count == s.length, "\(at): tokens")
            try r.decode(tokens: s.firstToken..<(s.firstToken + s.length), k: r.maxEntries, samples: r.maxSamples > 0, into: b)
            let K = b.k
            #expect(K == r.maxEntries)
            for (t, tok) in tokens.enumerated() where t < s.length {
                let where_ = "\(at) token \(t)"
                #expect(Self.integer(tok["input"]) == Int(b.inputIDs[t]), "\(where_): input id")
                #expect(Self.sameFloat(b.nextTokenLogProbs[t], tok["next"]), "\(where_): next-token log-prob")
                #expect(Self.sameFloat(b.logSumExps[t], tok["lse"]), "\(where_): logsumexp")
                let c = Int(b.entryCounts[t])
                let ids: [Int] = (0..<c).map { Int(b.entryIDs[t * K + $0]) }
                let logProbs: [Float] = Array(b.entryLogProbs[(t * K)..<(t * K + c)])
                #expect(Self.integers(tok["ids"]) == ids, "\(where_): entry ids")
                #expect(Self.sameFloats(logProbs, tok["logprobs"]), "\(where_): entry log-probs")
                let samples: Range<Int> = r.maxSamples > 0 ? b.sampleOffsets[t]..<b.sampleOffsets[t + 1] : 0..<0
                let sampleIDs: [Int] = samples.map { Int(b.sampleIDs[$0]) }
                let sampleDraws: [Int] = samples.map { Int(b.sampleDraws[$0]) }
                #expect(Self.integers(tok["sample_ids"]) == sampleIDs, "\(where_): sample ids")
                #expect(Self.integers(tok["sample_draws"]) == sampleDraws, "\(where_): sample draws")
            }
        }
    }

    @Test(arguments: GoldenCacheTests.names) func verifies(name: String) {
        #expect(CacheVerifier.verify(directory: Self.root + "/" + name).problems == [])
    }
}
