import Foundation
import SyntheticData
import Testing
import TestSupport
@testable import ShardFormat

/// Rules behind valid checksums (FORMAT.md sections 3, 4, 7): repeated ids, zero draws, NaN,
/// overlapping chunks and repeated shards are refused by the writer, the reader or `verify`.
@Suite struct ValueRuleTests {
    /// One shard, one block of 40 tokens, K = 6 (every position full), samples, id dictionary.
    static func cache(_ tag: String) throws -> String {
        let dir = freshDirectory(tag)
        let g = TeacherLikeGenerator(vocabularySize: 300, k: 6, seed: 5, draws: 8)
        try writeCache(dir, (0..<2).map { g.sequence($0, length: 20) }, vocab: 300, k: 6, samples: 8,
                       options: WriterOptions(blockTokens: 64))
        return dir
    }

    static func problems(_ dir: String) -> String { CacheVerifier.verify(directory: dir).problems.joined(separator: "\n") }

    @Test func writerRefusesRepeatedIDs() throws {
        let dir = freshDirectory("repeat-writer")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let w = try CacheWriter(directory: dir, description: description(vocab: 100, k: 3, samples: 4))
        try w.beginSequence(documentKey: .init(high: 0, low: 0), documentOffset: 0)
        func row(_ ids: [Int32], _ samples: [Int32], draws: [UInt32]? = nil) throws {
            try w.appendToken(inputID: 1, nextTokenLogProb: -1, logSumExp: 0, entryIDs: ids[...], entryLogProbs: ids.map { _ in Float(-2) }[...],
                              sampleIDs: samples[...], sampleDraws: (draws ?? samples.map { _ in 1 })[...])
        }
        #expect(throws: ShardFormatError.self) { try row([5, 7, 5], []) }
        #expect(throws: ShardFormatError.self) { try row([5], [3, 9, 3]) }
        #expect(throws: ShardFormatError.self) { try row([5], [3], draws: [0]) }
        // A refused row leaves nothing behind: the same ids are fine in the next rows.
        try row([5, 7, 9], [3, 9])
        try row([7, 5], [9, 3, 5])
        try w.endSequence()
        let m = try w.finish()
        #expect(m.totals.tokens == 2 && m.totals.entries == 5 && m.totals.samples == 5)
        #expect(Self.problems(dir) == "")
    }

    @Test func forgedValuesAreFound() throws {
        let clean = try Self.cache("forged")
        defer { try? FileManager.default.removeItem(atPath: clean) }
        #expect(Self.problems(clean) == "")
        let r = try CacheReader(directory: clean)
        let b = TargetBatch()
        try r.decode(tokens: 0..<r.tokenCount, k: 6, samples: true, into: b)
        let t = try #require((0..<b.tokenCount).first { b.sampleOffsets[$0 + 1] - b.sampleOffsets[$0] >= 2 })
        let s0 = b.sampleOffsets[t]
        #expect(b.entryCounts[0] >= 2)
        // With next-token links (format 1.3) `next_logprob` holds the unlinked positions only.
        let links = try NextTokenLinkTests.links(clean)
        let nan = links.isEmpty ? 2 : (0..<links.count).filter { links[$0] == 0 }[2]
        // Sample references (format 1.4) leave only some ids stored: the forged repeat stores them all.
        let sampled = (0..<b.sampleIDs.count).map { UInt32(bitPattern: b.sampleIDs[$0]) }
        let cases: [(String, ShardRewrite, String)] = [
            ("repeated entry id", ShardRewrite(values: { _, c, v in if c == "entry_ids.0" { v[1] = v[0] } }), "entry_ids: token 0 lists entry id"),
            ("repeated sampled id", ShardRewrite(values: { _, c, v in
                if c == "sample_refs" { v = v.map { _ in 0 } }
                if c == "sample_ids" { v = sampled; v[s0 + 1] = v[s0] }
            }), "sample_ids: token \(t) lists sampled id"),
            ("zero draws", ShardRewrite(values: { _, c, v in if c == "sample_draws" { v[3] = 0 } }), "sample_draws: a draw count of 0"),
            ("NaN next log-prob", ShardRewrite(values: { _, c, v in if c == "next_logprob" { v[2] = Float.nan.bitPattern } }), "next_logprob: NaN at token \(nan)"),
            ("NaN logsumexp", ShardRewrite(values: { _, c, v in if c == "logsumexp" { v[4] = Float.nan.bitPattern } }), "logsumexp: NaN at token 4"),
            ("infinite logsumexp", ShardRewrite(values: { _, c, v in if c == "logsumexp" { v[5] = Float.infinity.bitPattern } }), "logsumexp: inf at token 5 is not finite"),
            ("positive next log-prob", ShardRewrite(values: { _, c, v in if c == "next_logprob" { v[2] = Float(100).bitPattern } }), "above 0, not a log-probability"),
        ]
        for (what, rewrite, message) in cases {
            let dir = freshDirectory("forged-case")
            defer { try? FileManager.default.removeItem(atPath: dir) }
            try FileManager.default.removeItem(atPath: dir)
            try FileManager.default.copyItem(atPath: clean, toPath: dir)
            try rewriteCache(dir, rewrite)
            let p = Self.problems(dir)
            #expect(p.contains(message) && p.contains("shard-000000.lcs: block 0 column"), "\(what): \(p)")
        }
        // Zero draws are refused on every read too (a loss would divide by the draw total).
        let dir = freshDirectory("forged-draws")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.removeItem(atPath: dir)
        try FileManager.default.copyItem(atPath: clean, toPath: dir)
        try rewriteCache(dir, cases[2].1)
        #expect(throws: ShardFormatError.self) { try CacheReader(directory: dir).decode(tokens: 0..<1, k: 1, samples: true, into: TargetBatch()) }
    }

    @Test func impossibleLosslessLogProbsAreFound() throws {
        let clean = freshDirectory("lossless-forged")
        defer { try? FileManager.default.removeItem(atPath: clean) }
        let g = TeacherLikeGenerator(vocabularySize: 300, k: 6, seed: 5)
        try writeCache(clean, (0..<2).map { g.sequence($0, length: 20) }, vocab: 300, k: 6, options: WriterOptions(logProbs: .float32, blockTokens: 64))
        #expect(Self.problems(clean) == "")
        for (what, value, message) in [("+100", Float(100), "is above 0"), ("+inf", Float.infinity, "is above 0"),
                                       ("mass above 1", Float(-0.01), "more than 1")] {
            let dir = freshDirectory("lossless-case")
            defer { try? FileManager.default.removeItem(atPath: dir) }
            try FileManager.default.removeItem(atPath: dir)
            try FileManager.default.copyItem(atPath: clean, toPath: dir)
            // Token 0's ranks 0 and 1 (mass above 1: both near probability 1, still descending).
            try rewriteCache(dir, ShardRewrite(values: { _, c, v in
                if c == "entry_logprobs.0" { v[0] = value.bitPattern; if what == "mass above 1" { v[1] = Float(-0.02).bitPattern } }
            }))
            // A linked next token decodes from the same entry, so its column may be named first.
            let p = Self.problems(dir)
            #expect(p.contains(message) && p.contains("block 0 column"), "\(what): \(p)")
        }
    }

    @Test func overlappingChunksAreRefused() throws {
        let dir = try Self.cache("overlap")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // entry_count starts one byte before logsumexp ends; everything else, checksums included, valid.
        try rewriteCache(dir, ShardRewrite(footer: { f in
            let c = f.blocks[0].chunks
            let lse = c.firstIndex { $0.column == "logsumexp" }!, cnt = c.firstIndex { $0.column == "entry_count" }!
            f.blocks[0].chunks[cnt].offset = c[lse].offset + c[lse].size - 1
        }))
        do { _ = try CacheReader(directory: dir); Issue.record("overlapping chunks accepted") } catch let e as ShardFormatError {
            #expect("\(e)".contains("block 0 column entry_count: footer: chunk bytes") && "\(e)".contains("overlap"), "\(e)")
        }
        #expect(Self.problems(dir).contains("overlap"))
    }

    @Test func repeatedShardsAreRefused() throws {
        let dir = freshDirectory("twice")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let g = TeacherLikeGenerator(vocabularySize: 300, k: 4, seed: 2)
        let good = try writeCache(dir, (0..<2).map { g.sequence($0, length: 9) }, vocab: 300, k: 4, options: WriterOptions(targetShardBytes: 1))
        try #require(good.shards.count == 2)
        try FileManager.default.createSymbolicLink(atPath: dir + "/alias.lcs", withDestinationPath: good.shards[0].file)
        var alias = good.shards[0]; alias.file = "alias.lcs"
        for (list, message) in [([good.shards[0], good.shards[0]], "listed twice"), ([good.shards[0], alias], "same file as an earlier shard")] {
            var m = good
            m.shards = list
            m.recomputeTotals()
            try m.publish(directory: dir, name: CacheManifest.fileName)
            do { _ = try CacheReader(directory: dir); Issue.record("accepted \(list.map(\.file))") } catch let e as ShardFormatError {
                #expect("\(e)".contains(message), "\(e)")
            }
            #expect(Self.problems(dir).contains(message))
        }
    }
}
