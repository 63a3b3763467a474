import Foundation
import SyntheticData
import Testing
import TestSupport
@testable import ShardFormat

/// `logitcache dump --json` must stay valid JSON whatever the stored floats are.
@Suite struct DumpCommandTests {
    static func dump(_ dir: String) throws -> (status: Int32, lines: [[String: Any]], stderr: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: try logitcacheBinary())
        p.arguments = ["dump", dir, "--json"]
        let out = Pipe(), err = Pipe()
        p.standardOutput = out; p.standardError = err
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        let e = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        let lines = try String(decoding: data, as: UTF8.self).split(separator: "\n").map {
            try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
        }
        return (p.terminationStatus, lines, e)
    }

    @Test func nonFiniteLogProbsBecomeStrings() throws {
        let dir = freshDirectory("dumpinf")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var s = TeacherLikeGenerator.Sequence(documentKey: .init(high: 7, low: 8), documentOffset: 0)
        // Row 0: probability 0 for the real next token, an overflowed logsumexp, a -inf entry.
        // Row 1: ordinary values.
        for (next, lse, lps) in [(-Float.infinity, Float.infinity, [Float(-0.5), -.infinity]), (Float(-2), Float(3.5), [Float(-0.25)])] {
            s.inputIDs.append(1); s.nextTokenLogProbs.append(next); s.logSumExps.append(lse)
            s.entryIDs += (0..<lps.count).map { Int32($0 + 3) }; s.entryLogProbs += lps; s.entryOffsets.append(s.entryIDs.count)
            s.sampleOffsets.append(0)
        }
        try writeCache(dir, [s], vocab: 256, k: 2, options: WriterOptions(logProbs: .float32))
        var d = try Self.dump(dir)
        #expect(d.status == 0, "\(d.stderr)")
        var toks = try #require(d.lines.first?["tokens"] as? [[String: Any]])
        #expect(toks.count == 2)
        #expect(toks[0]["next"] as? String == "-inf" && toks[0]["lse"] as? String == "inf")
        #expect((toks[0]["logprobs"] as? [Any])?.last as? String == "-inf")
        #expect((toks[0]["logprobs"] as? [Any])?.first as? Double == -0.5)
        #expect(toks[1]["next"] as? Double == -2 && toks[1]["lse"] as? Double == 3.5)

        // The writer refuses NaN, but a cache from elsewhere may hold one: dump says "nan".
        let refused = freshDirectory("dumpnan")
        defer { try? FileManager.default.removeItem(atPath: refused) }
        for nan in [(Float.nan, Float(0)), (Float(-1), Float.nan)] {
            var bad = s; bad.nextTokenLogProbs[1] = nan.0; bad.logSumExps[1] = nan.1
            #expect(throws: ShardFormatError.self) { try writeCache(refused, [bad], vocab: 256, k: 2, options: WriterOptions(logProbs: .float32)) }
        }
        try rewriteCache(dir, ShardRewrite(values: { _, column, v in if column == "logsumexp" { v[1] = Float.nan.bitPattern } }))
        d = try Self.dump(dir)
        #expect(d.status == 0, "\(d.stderr)")
        toks = try #require(d.lines.first?["tokens"] as? [[String: Any]])
        #expect(toks[1]["lse"] as? String == "nan" && toks[0]["next"] as? String == "-inf")
    }

    /// A non-finite teacher cost cannot be written as JSON: publishing the manifest throws.
    @Test func nonFiniteManifestNumbersAreRefused() throws {
        let dir = freshDirectory("maninf")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let w = try CacheWriter(directory: dir, description: description(vocab: 256, k: 2))
        w.teacherCost.seconds = .infinity
        do { try w.finish(); Issue.record("published a manifest with an infinite cost") } catch let e as ShardFormatError {
            #expect("\(e)".contains("manifest"))
        }
        var m = try writeCache(dir + "/other", [], vocab: 256, k: 2)
        m.teacherCost.flops = .nan
        #expect(throws: ShardFormatError.self) { try m.encoded() }
        #expect(m.checksum.count == 16)
    }
}
