import Foundation
import ShardFormat
import Testing
@testable import Corpus
import TestSupport

@Suite struct CorpusTests {
    @Test func directoriesAndGlobsExpandInByteOrder() throws {
        let d = TempDir()
        let b = d.file("sub/b.txt", "b"), a = d.file("sub/a.jsonl", "{\"text\":\"a\"}"), c = d.file("c.txt", "c")
        _ = d.file("sub/ignored.csv", "x")
        #expect(try expandCorpusPaths([d.path + "/sub", c]) == [c, a, b].sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) })
        #expect(try expandCorpusPaths([d.path + "/sub/*.txt"]) == [b])
        #expect(throws: CorpusError.notFound(path: d.path + "/nope.txt")) { try expandCorpusPaths([d.path + "/nope.txt"]) }
        #expect(throws: CorpusError.unsupportedFile(path: d.path + "/sub/ignored.csv")) {
            try expandCorpusPaths([d.path + "/sub/ignored.csv"])
        }
    }

    @Test func textJsonlAndBlankLineDocuments() throws {
        let d = TempDir()
        let t = d.file("t.txt", "para one\nline two\n\n \r\npara two\r\n")
        #expect(try readDocuments(path: t).map(\.content) == [.text("para one\nline two\n\n \r\npara two\r\n")])
        #expect(try readDocuments(path: t, options: .init(blankLineDocuments: true)).map(\.content)
                == [.text("para one\nline two"), .text("para two")])
        let j = d.file("j.jsonl", "{\"text\": \"héllo\", \"id\": 1}\n\n{\"body\": \"x\", \"text\": \"wörld\"}\n")
        let docs = try readDocuments(path: j)
        #expect(docs.map(\.content) == [.text("héllo"), .text("wörld")])
        #expect(docs.map(\.source) == ["\(j):1", "\(j):3"])
        #expect(docs[0].key == DocumentHash(text: "héllo") && docs[0].key != docs[1].key)
    }

    /// Keys are XXH3-128 with the high half first, as caches written so far store them
    /// (reference digests from the xxhash Python package).
    @Test func documentKeysAreXXH3128() {
        #expect(DocumentHash(text: "héllo").description == "5c04d7f26e6ecfce2ad2fc5553253f9c")
        #expect(DocumentHash(tokens: [5, -1, 70000]).description == "be6e6ffcd834492b572d254b1f2e22f0")
    }

    @Test func compressedBuiltInCorpusReads() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let eval = root.appendingPathComponent("Data/corpus/eval.jsonl.zst").path
        let docs = try readDocuments(path: eval)
        #expect(docs.count > 50)
        guard case .text(let first) = docs[0].content else { Issue.record("expected text"); return }
        #expect(!first.isEmpty)
        let d = TempDir()
        let cut = d.bytes("cut.jsonl.zst", Array(try Data(contentsOf: URL(fileURLWithPath: eval)).prefix(500)))
        #expect(throws: CorpusError.self) { try readDocuments(path: cut) }
    }

    @Test func badInputNamesFileAndPlace() throws {
        let d = TempDir()
        let bad = d.bytes("bad.txt", Array("ok".utf8) + [0xC3, 0x28])
        #expect(throws: CorpusError.invalidUTF8(path: bad, byteOffset: 2)) { try readDocuments(path: bad) }
        let j = d.file("j.jsonl", "{\"text\": \"a\"}\n{oops\n")
        #expect(throws: CorpusError.badJSONLine(path: j, line: 2, reason: "invalid JSON")) { try readDocuments(path: j) }
        let m = d.file("m.jsonl", "{\"text\": 3}\n")
        #expect(throws: CorpusError.missingTextField(path: m, line: 1, field: "text")) { try readDocuments(path: m) }
        let odd = d.bytes("odd.u16", [1, 2, 3])
        #expect(throws: CorpusError.self) { try readDocuments(path: odd) }
    }

    @Test func tokenFilesRoundTripInEveryLayout() throws {
        let d = TempDir()
        let small: [Int32] = [50256, 1, 2, 50256, 3], wide: [Int32] = [128_000, 5, 128_001, 7]
        for (ids, name, header) in [(small, "a.bin", true), (small, "raw.bin", false), (small, "r.u16", false),
                                     (wide, "w.bin", true), (wide, "w.u32", false)] {
            let p = (d.path as NSString).appendingPathComponent(name)
            try TokenFile.write(ids, path: p, llmcHeader: header)
            #expect(try TokenFile.read(path: p) == ids, "\(name)")
        }
        // llm.c header with a count that disagrees with the size.
        var header = [Int32](repeating: 0, count: 256); header[0] = 20240520; header[1] = 1; header[2] = 9
        let lying = d.bytes("lie.bin", header.withUnsafeBytes { Array($0) } + [1, 0])
        #expect(throws: CorpusError.self) { try TokenFile.read(path: lying) }
        // Documents split at end-of-text, separator kept with the document it ends.
        let p = (d.path as NSString).appendingPathComponent("docs.bin")
        try TokenFile.write(small, path: p)
        let docs = try readDocuments(path: p, options: .init(endOfTextID: 50256))
        #expect(docs.map(\.content) == [.tokens([50256]), .tokens([1, 2, 50256]), .tokens([3])])
    }

    @Test func windowsCoverTheStreamExactlyOnce() {
        var s = TokenStream()
        let docs: [[Int32]] = [[1, 2, 3], [4], [5, 6, 7, 8, 9, 10]]
        for (i, d) in docs.enumerated() { s.append(d, key: DocumentHash(high: 0, low: UInt64(i)), endOfText: 0) }
        #expect(s.ids == [1, 2, 3, 0, 4, 0, 5, 6, 7, 8, 9, 10, 0])
        for context in 1...14 {
            let n = s.windowCount(context: context)
            var covered: [Int] = []
            for w in 0..<n {
                let win = s.window(w, context: context)
                #expect(win.length >= 1 && win.length <= context)
                #expect(w == n - 1 || win.length == context)
                #expect(win.sequenceEnd == s.ids.count)
                covered += Array(win.firstToken ..< win.firstToken + win.length)
                let doc = s.documentStarts.lastIndex { $0 <= win.firstToken }!
                let found = s.document(at: win.firstToken)
                #expect(found.key.low == UInt64(doc) && found.offset == win.firstToken - s.documentStarts[doc])
            }
            // Every position that has a next token is an input exactly once.
            #expect(covered == Array(0 ..< s.ids.count - 1), "context \(context)")
        }
    }

    @Test func partitionsAreDisjointCompleteAndBalanced() throws {
        for total in [0, 1, 7, 100, 1001] {
            for n in 1...9 {
                let ranges = try (0..<n).map { try Partition(index: $0, count: n).windowRange(total: total) }
                #expect(ranges.flatMap { Array($0) } == Array(0..<total))
                let sizes = ranges.map(\.count)
                #expect(sizes.max()! - sizes.min()! <= 1)
            }
        }
        #expect(try Partition(parsing: "2/4") == Partition(index: 2, count: 4))
        #expect(throws: CorpusError.self) { try Partition(parsing: "4/4") }
        #expect(throws: CorpusError.self) { try Partition(parsing: "x") }
        let slurm = ["SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "3", "SLURM_ARRAY_TASK_COUNT": "4"]
        #expect(try Partition.fromEnvironment(slurm) == Partition(index: 2, count: 4))
        #expect(try Partition.fromEnvironment(["JOB_COMPLETION_INDEX": "1"], kubernetesCount: 3) == Partition(index: 1, count: 3))
        #expect(throws: CorpusError.self) { try Partition.fromEnvironment(["JOB_COMPLETION_INDEX": "1"]) }
        #expect(try Partition.fromEnvironment([:]) == nil)
    }

    @Test func splitIsByDocumentDeterministicAndProportional() throws {
        let split = try CorpusSplit(parsing: "teacher-train=0.5,student-train=0.4,eval=0.1", seed: 7)
        var counts = [0, 0, 0]
        for i in 0..<20_000 {
            let key = DocumentHash(text: "document \(i)")
            let p = split.partIndex(for: key)
            #expect(p == split.partIndex(for: key))
            counts[p] += 1
        }
        // Binomial standard deviation at n=20000 is at most ~71 documents; allow 5 sigma.
        for (c, f) in zip(counts, [0.5, 0.4, 0.1]) { #expect(abs(Double(c) - 20_000 * f) < 360) }
        let other = try CorpusSplit(parsing: "teacher-train=0.5,student-train=0.4,eval=0.1", seed: 8)
        let moved = (0..<1000).filter { split.partIndex(for: DocumentHash(text: "d\($0)")) != other.partIndex(for: DocumentHash(text: "d\($0)")) }
        #expect(!moved.isEmpty, "the seed must change the assignment")
        #expect(throws: CorpusError.self) { try CorpusSplit(parsing: "a=0.5,b=0.4") }
        #expect(throws: CorpusError.self) { try CorpusSplit(parsing: "a=0.5,a=0.5") }
    }
}
