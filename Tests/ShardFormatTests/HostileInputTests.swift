import Foundation
import SyntheticData
import Testing
import TestSupport
@testable import ShardFormat

/// Inputs that once trapped or hung the tools: huge manifest integers and special files.
@Suite struct HostileInputTests {
    private static func cache(_ tag: String, partitions: Int = 1) throws -> String {
        let dir = freshDirectory(tag)
        let g = TeacherLikeGenerator(vocabularySize: 200, k: 4, seed: 1)
        try writeCache(dir, (0..<3).map { g.sequence($0, length: 30) }, vocab: 200, k: 4, options: WriterOptions(targetShardBytes: 1))
        return dir
    }

    /// Publishes `name` again after `edit`, with a valid checksum (and totals as they were).
    private static func forge(_ dir: String, _ name: String, _ edit: (inout CacheManifest) -> Void) throws {
        var m = try CacheManifest.load(directory: dir, name: name)
        edit(&m)
        try m.publish(directory: dir, name: name)
    }

    @Test(arguments: [("bytes", Int.max), ("tokens", Int.max), ("sequences", 1 << 62), ("entries", -1)])
    func hugeOrNegativeShardCountsAreMalformedNotATrap(field: String, value: Int) throws {
        let dir = try Self.cache("huge-\(field)")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for name in [CacheManifest.fileName, CacheManifest.partitionFileName(0)] {
            try Self.forge(dir, name) { m in
                for i in m.shards.indices {
                    switch field {
                    case "bytes": m.shards[i].bytes = value
                    case "tokens": m.shards[i].tokens = value
                    case "sequences": m.shards[i].sequences = value
                    default: m.shards[i].entries = value
                    }
                }
            }
        }
        #expect(throws: ShardFormatError.self) { _ = try CacheReader(directory: dir) }
        let problems = CacheVerifier.verify(directory: dir).problems.joined()
        #expect(problems.contains("bad shard entry"), "\(problems)")
        do { _ = try CacheManifest.merge(directory: dir); Issue.record("merge accepted") } catch let e as ShardFormatError {
            #expect("\(e)".contains("bad shard entry"), "\(e)")
        }
        // A resuming writer ignores the damaged partition manifest and adopts the shards it finds.
        let desc = CacheDescription(vocabularySize: 200, fingerprints: Fingerprints(teacher: "t", tokenizer: "tok", corpus: "c"),
                                    capture: CaptureSettings(policy: .topK(k: 4)))
        #expect(try CacheWriter(directory: dir, description: desc).resumedSequences == 3)
    }

    @Test func otherImpossibleManifestFieldsAreNamed() throws {
        let dir = try Self.cache("fields")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for (what, edit, message) in [
            ("blockTokens 0", { (m: inout CacheManifest) in m.encoding.blockTokens = 0 }, "encoding: blockTokens 0"),
            ("cost tokens", { (m: inout CacheManifest) in m.teacherCost.tokens = -5 }, "teacherCost"),
            ("temperature", { (m: inout CacheManifest) in m.capture.temperature = 0 }, "capture.temperature"),
        ] as [(String, (inout CacheManifest) -> Void, String)] {
            let copy = freshDirectory("fields-copy")
            defer { try? FileManager.default.removeItem(atPath: copy) }
            try FileManager.default.removeItem(atPath: copy)
            try FileManager.default.copyItem(atPath: dir, toPath: copy)
            try Self.forge(copy, CacheManifest.fileName, edit)
            do { _ = try CacheReader(directory: copy); Issue.record("reader accepted \(what)") } catch let e as ShardFormatError {
                #expect("\(e)".contains(message), "\(what): \(e)")
            }
        }
    }

    @Test func aFooterPromisingTerabytesIsRefusedBeforeAllocating() throws {
        let dir = try Self.cache("bomb")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // One column claims 2^40 values (a few bytes of zstd can say so); every checksum stays valid.
        try rewriteCache(dir, ShardRewrite(footer: { f in
            let i = f.blocks[0].chunks.firstIndex { $0.column == "entry_ids.0" }!
            f.blocks[0].chunks[i].count = 1 << 40
        }))
        do { _ = try CacheReader(directory: dir); Issue.record("reader accepted the bomb") } catch let e as ShardFormatError {
            #expect("\(e)".contains("block 0 column entry_ids.0") && "\(e)".contains("decodes to more than 4 GiB"), "\(e)")
        }
    }

    @Test func aFifoOrSocketInPlaceOfAShardIsRefusedWithoutWaiting() throws {
        let dir = try Self.cache("fifo")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let m = try CacheManifest.load(directory: dir)
        let shard = dir + "/" + m.shards[0].file
        try FileManager.default.removeItem(atPath: shard)
        #expect(mkfifo(shard, 0o644) == 0)
        let start = Date()
        do { _ = try CacheReader(directory: dir); Issue.record("reader accepted a FIFO") } catch let e as ShardFormatError {
            #expect("\(e)".contains("not a regular file"), "\(e)")
        }
        #expect(CacheVerifier.verify(directory: dir).problems.joined().contains("not a regular file"))
        #expect(Date().timeIntervalSince(start) < 5)
        // A socket: open fails at once.
        try FileManager.default.removeItem(atPath: shard)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let path = Array(shard.utf8CString)
        try #require(path.count <= MemoryLayout.size(ofValue: addr.sun_path))
        withUnsafeMutableBytes(of: &addr.sun_path) { p in path.withUnsafeBytes { p.copyMemory(from: $0) } }
        let bound = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        try #require(bound == 0)
        #expect(throws: ShardFormatError.self) { _ = try CacheReader(directory: dir) }
    }

    @Test func absurdLoaderArgumentsGetAClearErrorNotATrap() throws {
        let dir = try Self.cache("args")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let cases: [([String], String)] = [
            (["--batch", "1000000000"], "batch size 1000000000 must be in"),
            (["--context", "1000000000"], "context length 1000000000 must be in"),
            (["--context", "4611686018427387904"], "context length"),
            (["--batch", "1000000", "--context", "100000"], "above half this machine's memory"),
            (["--count=-1"], "--count -1 must be >= 0"),
            (["--epoch", "9223372036854775807"], "--epoch 9223372036854775807 must be in"),
            (["--temperature", "1e-39"], "temperature 1e-39 must be in"),
            (["--world-size", "1000000000"], "world size in 1...1048576"),
            (["--k", "99999"], "k 99999 must be in"),
        ]
        for (args, message) in cases {
            let r = try runLogitcache(["batches", dir] + args)
            #expect(r.failedCleanly, "\(args): \(r.reason) \(r.status)")
            #expect(r.standardError.contains(message), "\(args): \(r.standardError)")
        }
    }
}

/// The manifest grammar (FORMAT.md section 7): what JSONDecoder alone would let through.
@Suite struct ManifestGrammarTests {
    /// A manifest's bytes with `text` replaced and the checksum recomputed.
    private static func forged(_ bytes: [UInt8], _ from: String, _ to: String, bom: Bool = false) throws -> [UInt8] {
        var text = String(decoding: bytes, as: UTF8.self)
        let key = "\"checksum\": \""
        text = String(text[..<text.range(of: key, options: .backwards)!.lowerBound])
        try #require(text.contains(from))
        text = text.replacingOccurrences(of: from, with: to)
        var body = (bom ? [0xEF, 0xBB, 0xBF] : []) + Array(text.utf8)
        let sum = Checksum.xxh3(body)
        body += Array("\(key)\(hex16(sum))\"\n}\n".utf8)
        return body
    }

    @Test func strictJSONRefusalsNameTheMember() throws {
        let dir = freshDirectory("grammar")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let g = TeacherLikeGenerator(vocabularySize: 200, k: 4, seed: 1)
        try writeCache(dir, [g.sequence(0, length: 10)], vocab: 200, k: 4)
        let good = Array(try Data(contentsOf: URL(fileURLWithPath: dir + "/manifest.json")))
        _ = try CacheManifest.decode(good, file: "m")
        let tokens = try CacheManifest.decode(good, file: "m").totals.tokens
        let cases: [(String, [UInt8], String)] = [
            ("BOM", try Self.forged(good, "{", "{", bom: true), "byte-order mark"),
            ("duplicate key", try Self.forged(good, "\"format\" :", "\"format\" : \"logitcache\", \"format\" :"), "member \"format\" appears twice"),
            ("real count", try Self.forged(good, "\"tokens\" : \(tokens),", "\"tokens\" : \(tokens).0,"), "tokens: \(tokens).0 is not an integer"),
            ("huge integer", try Self.forged(good, "\"vocabularySize\" : 200", "\"vocabularySize\" : 99999999999999999999999"), "vocabularySize: integer 99999999999999999999999 is outside the 64-bit range"),
            ("null", try Self.forged(good, "\"corpus\" :", "\"x\" : null, \"corpus\" :"), "null is not allowed"),
            ("escaped duplicate", try Self.forged(good, "\"format\" :", "\"\\u0066ormat\" : \"logitcache\", \"format\" :"), "member \"format\" appears twice"),
            ("lone surrogate", try Self.forged(good, "\"corpus\" :", "\"x\" : \"\\ud800\", \"corpus\" :"), "unpaired surrogate"),
            ("bad escape", try Self.forged(good, "\"corpus\" :", "\"x\" : \"\\q\", \"corpus\" :"), "invalid escape"),
            ("deep nesting", try Self.forged(good, "\"corpus\" :", "\"x\" : " + String(repeating: "[", count: 40) + String(repeating: "]", count: 40) + ", \"corpus\" :"), "nested more than 32 levels"),
        ]
        // Valid JSON that Foundation's decoder alone refuses, a zero real written with an
        // exponent, is read as 0 (the writer's own manifest has flops 0).
        let zero = try Self.forged(good, "\"flops\" : 0,", "\"flops\" : 0e1,")
        #expect(try CacheManifest.decode(zero, file: "m").teacherCost.flops == 0)
        for (what, bytes, message) in cases {
            do { _ = try CacheManifest.decode(bytes, file: "m"); Issue.record("accepted \(what)") } catch let e as ShardFormatError {
                #expect("\(e)".contains(message), "\(what): \(e)")
            }
        }
    }
}
