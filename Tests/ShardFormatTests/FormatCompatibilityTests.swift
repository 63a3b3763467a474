import Foundation
import Truncation
import SyntheticData
import Testing
import TestSupport
@testable import ShardFormat

/// Caches written before format 1.1 must keep reading, and the format 1.0 writer must keep
/// writing them bit for bit.
@Suite struct FormatCompatibilityTests {
    /// A cache written by the format 1.0 writer (commit 4bbb930, before the bucket filters) with
    /// `logitcache synth format-1.0-historical --vocab 1000 --tokens 600 --seq-len 200 --k 8
    ///  --sampled --draws 6 --block-tokens 128 --seed 3`.
    static let fixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../Golden/format-1.0-historical").standardized.path
    static let generator = TeacherLikeGenerator(vocabularySize: 1000, k: 8, seed: 3, draws: 6)
    static let sequences = (0..<3).map { generator.sequence($0, length: 200) }

    @Test func aFormat10CacheReadsEveryValue() throws {
        let r = try CacheReader(directory: Self.fixture)
        let shard = try ShardReader(path: Self.fixture + "/" + r.manifest.shards[0].file)
        #expect(shard.layout.json.formatMinorVersion == nil)
        #expect(Set(shard.layout.json.blocks.flatMap(\.chunks).map(\.filter)).isSubset(of: ["raw", "planes"]))
        #expect(CacheVerifier.verify(directory: Self.fixture).problems == [])
        let b = TargetBatch()
        for (i, s) in Self.sequences.enumerated() {
            let info = try r.sequence(i)
            #expect(info.documentKey == s.documentKey && info.length == s.count)
            try r.decode(tokens: info.firstToken..<(info.firstToken + info.length), k: 8, samples: true, into: b)
            #expect(b.inputIDs == s.inputIDs && b.nextTokenLogProbs == s.nextTokenLogProbs && b.logSumExps == s.logSumExps)
            #expect(b.sampleOffsets == s.sampleOffsets && b.sampleIDs == s.sampleIDs && b.sampleDraws == s.sampleDraws)
            for t in 0..<s.count {
                let e = s.entryOffsets[t]..<s.entryOffsets[t + 1]
                #expect(Int(b.entryCounts[t]) == e.count)
                #expect(Array(b.entryIDs[(t * 8)..<(t * 8 + e.count)]) == Array(s.entryIDs[e]))
                let got = b.entryLogProbs[(t * 8)..<(t * 8 + e.count)].map(Double.init)
                #expect(got == s.entryLogProbs[e].map { referenceQuantized($0, stepLog2: 6) })
            }
        }
    }

    @Test func theFormat10WriterIsUnchanged() throws {
        let dir = freshDirectory("format-1.0")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let desc = CacheDescription(vocabularySize: 1000,
                                    fingerprints: Fingerprints(teacher: "synthetic-3", tokenizer: "synthetic-vocab-1000", corpus: "synthetic-3-600"),
                                    capture: CaptureSettings(policy: .topKAndSampled(k: 8, draws: 6), temperature: 1, seed: 3))
        let w = try CacheWriter(directory: dir, description: desc, options: WriterOptions(blockTokens: 128, formatMinorVersion: 0))
        for s in Self.sequences { try w.append(s) }
        let m = try w.finish()
        let name = m.shards[0].file
        #expect(try readWholeFile(dir + "/" + name) == readWholeFile(Self.fixture + "/" + name))
    }
}
