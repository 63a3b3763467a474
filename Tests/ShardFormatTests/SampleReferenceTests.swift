import Foundation
import Random
import SyntheticData
import Testing
import TestSupport
@testable import ShardFormat

/// Format 1.4 sample references (FORMAT.md section 4.7): sampled ids named by their rank among
/// the position's entries, in runs of equal draw counts.
@Suite struct SampleReferenceTests {
    /// Sequences whose samples are drawn, like capture's, from the position's own entries (in
    /// rank order within each run of equal counts, any rank up to K; not with `inHead` false)
    /// and from outside them. Entry ids are below 450, ids outside the entries 450 and above.
    static func sequences(seed: UInt64, inHead: Bool = true, k K: Int = 40, samples S: Int = 12) -> [TeacherLikeGenerator.Sequence] {
        var rng = SplitMix64(seed: seed)
        return (0..<3).map { q in
            var s = TeacherLikeGenerator.Sequence(documentKey: DocumentHash(high: UInt64(q), low: seed), documentOffset: 0)
            for _ in 0..<(50 + q * 37) {
                s.inputIDs.append(Int32(rng.next() % 500))
                s.nextTokenLogProbs.append(-2)
                s.logSumExps.append(5)
                let c = Int(rng.next() % UInt64(K + 1))
                var ids: [Int32] = []
                while ids.count < c { let id = Int32(rng.next() % 450); if !ids.contains(id) { ids.append(id) } }
                for (r, id) in ids.enumerated() { s.entryIDs.append(id); s.entryLogProbs.append(-Float(r + 1) * 0.25 - 4) }
                s.entryOffsets.append(s.entryIDs.count)
                // Runs of draw counts 3, 2, 1; in each, entries in rank order, then ids outside them.
                var used = Set<Int32>()
                for draws: UInt32 in [3, 2, 1] {
                    let named = ids.filter { _ in rng.next() % 4 == 0 && inHead }.filter { !used.contains($0) }
                    for id in named.prefix(3) where s.sampleIDs.count - s.sampleOffsets.last! < S {
                        used.insert(id); s.sampleIDs.append(id); s.sampleDraws.append(draws)
                    }
                    for _ in 0..<Int(rng.next() % 3) where s.sampleIDs.count - s.sampleOffsets.last! < S {
                        let id = Int32(450 + rng.next() % 50)
                        if used.insert(id).inserted { s.sampleIDs.append(id); s.sampleDraws.append(draws) }
                    }
                }
                s.sampleOffsets.append(s.sampleIDs.count)
            }
            return s
        }
    }

    static func write(_ dir: String, _ seqs: [TeacherLikeGenerator.Sequence], minor: Int = ShardFormatVersion.minor) throws {
        let d = CacheDescription(vocabularySize: 500, fingerprints: Fingerprints(teacher: "t", tokenizer: "tok", corpus: "c"),
                                 capture: CaptureSettings(policy: .topKAndSampled(k: 40, draws: 12)))
        let w = try CacheWriter(directory: dir, description: d, options: WriterOptions(blockTokens: 64, formatMinorVersion: minor))
        for s in seqs { try w.append(s) }
        try w.finish()
    }

    static func chunks(_ dir: String, _ column: String) throws -> [FooterJSON.Chunk] {
        let shard = try ShardReader(path: dir + "/" + CacheWriter.shardName(partition: 0, index: 0))
        return shard.layout.json.blocks.flatMap(\.chunks).filter { $0.column == column }
    }

    static func footerMinor(_ dir: String) throws -> Int? {
        try ShardReader(path: dir + "/" + CacheWriter.shardName(partition: 0, index: 0)).layout.json.formatMinorVersion
    }

    @Test func aTopKCacheIsA13Cache() throws {
        let dir = freshDirectory("sample-refs-topk")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var seqs = Self.sequences(seed: 5)
        for q in seqs.indices { seqs[q].sampleIDs = []; seqs[q].sampleDraws = []; seqs[q].sampleOffsets = Array(repeating: 0, count: seqs[q].count + 1) }
        let d = CacheDescription(vocabularySize: 500, fingerprints: Fingerprints(teacher: "t", tokenizer: "tok", corpus: "c"),
                                 capture: CaptureSettings(policy: .topK(k: 40)))
        let w = try CacheWriter(directory: dir, description: d, options: WriterOptions(blockTokens: 64))
        for s in seqs { try w.append(s) }
        try w.finish()
        #expect(try Self.footerMinor(dir) == 3)
    }

    @Test func everySampleReadsBackAtEveryK() throws {
        let seqs = Self.sequences(seed: 1)
        let dir = freshDirectory("sample-refs")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Self.write(dir, seqs)
        let refs = try Self.chunks(dir, "sample_refs"), stored = try Self.chunks(dir, "sample_ids")
        #expect(try Self.footerMinor(dir) == 4)
        let samples = seqs.reduce(0) { $0 + $1.sampleIDs.count }
        #expect(refs.reduce(0) { $0 + $1.count } == samples)
        // Most samples are named by reference, not stored.
        #expect(stored.reduce(0) { $0 + $1.count } < samples / 2)
        let r = try CacheReader(directory: dir)
        #expect(CacheVerifier.verify(directory: dir).problems == [])
        // A reference may name a rank past the k read: k = 0 and k = 8 must give every sample.
        for k in [0, 8, 40] {
            let b = TargetBatch()
            try r.decode(tokens: 0..<r.tokenCount, k: k, samples: true, into: b)
            #expect(b.sampleIDs == seqs.flatMap(\.sampleIDs), "k = \(k)")
            #expect(b.sampleDraws == seqs.flatMap(\.sampleDraws), "k = \(k)")
        }
    }

    @Test func theFormat13WriterStoresEveryIDAndReadsTheSame() throws {
        let seqs = Self.sequences(seed: 2)
        let new = freshDirectory("sample-refs-14"), old = freshDirectory("sample-refs-13")
        defer { for d in [new, old] { try? FileManager.default.removeItem(atPath: d) } }
        try Self.write(new, seqs)
        try Self.write(old, seqs, minor: 3)
        #expect(try Self.chunks(old, "sample_refs").isEmpty)
        #expect(try Self.chunks(old, "sample_ids").reduce(0) { $0 + $1.count } == seqs.reduce(0) { $0 + $1.sampleIDs.count })
        let a = TargetBatch(), b = TargetBatch()
        let ra = try CacheReader(directory: new), rb = try CacheReader(directory: old)
        try ra.decode(tokens: 0..<ra.tokenCount, k: 0, samples: true, into: a)
        try rb.decode(tokens: 0..<rb.tokenCount, k: 0, samples: true, into: b)
        #expect(a.sampleIDs == b.sampleIDs && a.sampleOffsets == b.sampleOffsets)
    }

    @Test func samplesOutsideTheEntriesGetNoReferenceColumn() throws {
        // As in a head-tail cache: every sample lies outside its position's entries.
        let seqs = Self.sequences(seed: 3, inHead: false)
        let dir = freshDirectory("sample-refs-none")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Self.write(dir, seqs)
        #expect(try Self.chunks(dir, "sample_refs").isEmpty)
        // Without sample references the shard is a 1.3 shard, and says so (1.3 readers read it).
        #expect(try Self.footerMinor(dir) == 3)
        let b = TargetBatch(), r = try CacheReader(directory: dir)
        try r.decode(tokens: 0..<r.tokenCount, k: 0, samples: true, into: b)
        #expect(b.sampleIDs == seqs.flatMap(\.sampleIDs))
    }

    @Test func forgedReferencesAreRefused() throws {
        let dir = freshDirectory("sample-refs-forged")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Self.write(dir, Self.sequences(seed: 4))
        try expectForgeriesRefused(dir, [
            ("rank past the entries", ShardRewrite(values: { b, c, v in if b == 0 && c == "sample_refs" { v[0] = 1000 } }), "names rank"),
            ("stored id left over", ShardRewrite(values: { b, c, v in if b == 0 && c == "sample_ids" { v.append(v[0]) } }), "sample_ids"),
            ("stored id missing", ShardRewrite(values: { b, c, v in if b == 0 && c == "sample_ids" { v.removeLast() } }), "sample_ids"),
            ("references in format 1.3", ShardRewrite(footer: { $0.formatMinorVersion = 3 }), "sample references need format 1.4"),
        ])
    }
}
