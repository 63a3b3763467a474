import Foundation
import SyntheticData
import Testing
import TestSupport
@testable import ShardFormat
import Random

@Suite struct RoundTripTests {
    struct Config: CustomTestStringConvertible, Sendable {
        var vocab: Int, k: Int, samples: Int, codec: Codec, logProbs: LogProbEncoding, blockTokens: Int
        var minor = ShardFormatVersion.minor
        var testDescription: String { "V=\(vocab) K=\(k) S=\(samples) \(codec) \(logProbs) block=\(blockTokens) format 1.\(minor)" }
    }
    static let configs: [Config] = [
        Config(vocab: 256, k: 5, samples: 0, codec: .none, logProbs: .default, blockTokens: 7),
        Config(vocab: 256, k: 64, samples: 4, codec: .lz4, logProbs: .float32, blockTokens: 16),
        Config(vocab: 1000, k: 20, samples: 0, codec: .zstd(level: 3), logProbs: .quantized(stepLog2: 3), blockTokens: 33),
        Config(vocab: 32000, k: 64, samples: 8, codec: .zstd(level: 1), logProbs: .default, blockTokens: 64),
        Config(vocab: 262_144, k: 100, samples: 0, codec: .zstd(level: 9), logProbs: .float32, blockTokens: 50),
        Config(vocab: 262_144, k: 1, samples: 3, codec: .none, logProbs: .float32, blockTokens: 5),
        Config(vocab: 1 << 24, k: 12, samples: 0, codec: .lz4, logProbs: .quantized(stepLog2: 10), blockTokens: 9),
        Config(vocab: 300, k: 0, samples: 5, codec: .zstd(level: 3), logProbs: .default, blockTokens: 4),
        Config(vocab: 50_000, k: 48, samples: 0, codec: .lz4, logProbs: .quantized(stepLog2: 9, multiplier: 3), blockTokens: 17),
        // Format 1.1 and 1.0 files still write and read.
        Config(vocab: 32000, k: 64, samples: 8, codec: .zstd(level: 3), logProbs: .quantized(stepLog2: 6), blockTokens: 64, minor: 1),
        Config(vocab: 32000, k: 64, samples: 8, codec: .zstd(level: 3), logProbs: .quantized(stepLog2: 6), blockTokens: 64, minor: 0),
        Config(vocab: 262_144, k: 16, samples: 0, codec: .lz4, logProbs: .quantized(stepLog2: 8), blockTokens: 21, minor: 0),
    ]

    @Test(arguments: configs)
    func everyValueComesBack(_ c: Config) throws {
        var rng = SplitMix64(seed: UInt64(c.vocab &* 31 &+ c.k))
        let seqs = randomSequences(&rng, count: 24, vocab: c.vocab, k: c.k, samples: c.samples, maxLength: 40)
        let dir = freshDirectory("rt")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // A tiny target forces several shards.
        let m = try writeCache(dir, seqs, vocab: c.vocab, k: c.k, samples: c.samples,
                               options: WriterOptions(codec: c.codec, logProbs: c.logProbs, blockTokens: c.blockTokens, targetShardBytes: 2000,
                                                      formatMinorVersion: c.minor))
        // The chunks use exactly the filters of the version written.
        let filters = try Set(m.shards.flatMap { try ShardReader(path: dir + "/" + $0.file).layout.json.blocks.flatMap(\.chunks).map(\.filter) })
        #expect(filters.isSubset(of: c.minor == 0 ? ["raw", "planes"] : ["raw", "planes", "buckets", "delta-buckets"]))
        if c.minor > 0 && c.codec != .none && c.k > 0 { #expect(filters.contains("buckets")) }
        #expect(m.shards.count > 1)
        let r = try CacheReader(directory: dir)
        #expect(r.sequenceCount == seqs.count)
        #expect(r.tokenCount == seqs.reduce(0) { $0 + $1.count })
        #expect(CacheVerifier.verify(directory: dir).problems == [])
        let batch = TargetBatch()
        for (i, s) in seqs.enumerated() {
            let info = try r.sequence(i)
            #expect(info.documentKey == s.documentKey && info.documentOffset == s.documentOffset && info.length == s.count)
            for k in Set([c.k, min(c.k, 3), 0]) {
                try r.decode(tokens: info.firstToken..<(info.firstToken + info.length), k: k, samples: c.samples > 0, into: batch)
                try check(batch, s, k: k, samples: c.samples > 0, c)
            }
        }
        // Arbitrary ranges across sequence, block and shard boundaries (partial blocks use the cache).
        let all = seqs.reduce(into: TeacherLikeGenerator.Sequence(documentKey: .init(high: 0, low: 0), documentOffset: 0)) { acc, s in
            let e0 = acc.entryIDs.count, s0 = acc.sampleIDs.count
            acc.inputIDs += s.inputIDs; acc.nextTokenLogProbs += s.nextTokenLogProbs; acc.logSumExps += s.logSumExps
            acc.entryIDs += s.entryIDs; acc.entryLogProbs += s.entryLogProbs; acc.entryOffsets += s.entryOffsets.dropFirst().map { $0 + e0 }
            acc.sampleIDs += s.sampleIDs; acc.sampleDraws += s.sampleDraws; acc.sampleOffsets += s.sampleOffsets.dropFirst().map { $0 + s0 }
        }
        for _ in 0..<20 {
            let a = Int(rng.next() % UInt64(all.count + 1)), b = a + Int(rng.next() % UInt64(all.count - a + 1))
            let k = Int(rng.next() % UInt64(c.k + 1))
            try r.decode(tokens: a..<b, k: k, samples: c.samples > 0, into: batch)
            try check(batch, slice(all, a..<b), k: k, samples: c.samples > 0, c)
        }
    }

    func slice(_ s: TeacherLikeGenerator.Sequence, _ r: Range<Int>) -> TeacherLikeGenerator.Sequence {
        var o = TeacherLikeGenerator.Sequence(documentKey: s.documentKey, documentOffset: 0)
        for t in r {
            o.inputIDs.append(s.inputIDs[t]); o.nextTokenLogProbs.append(s.nextTokenLogProbs[t]); o.logSumExps.append(s.logSumExps[t])
            o.entryIDs += s.entryIDs[s.entryOffsets[t]..<s.entryOffsets[t + 1]]; o.entryLogProbs += s.entryLogProbs[s.entryOffsets[t]..<s.entryOffsets[t + 1]]
            o.entryOffsets.append(o.entryIDs.count)
            o.sampleIDs += s.sampleIDs[s.sampleOffsets[t]..<s.sampleOffsets[t + 1]]; o.sampleDraws += s.sampleDraws[s.sampleOffsets[t]..<s.sampleOffsets[t + 1]]
            o.sampleOffsets.append(o.sampleIDs.count)
        }
        return o
    }

    func check(_ b: TargetBatch, _ s: TeacherLikeGenerator.Sequence, k: Int, samples: Bool, _ c: Config) throws {
        try #require(b.tokenCount == s.count)
        #expect(b.inputIDs == s.inputIDs)
        #expect(b.nextTokenLogProbs.map(\.bitPattern) == s.nextTokenLogProbs.map(\.bitPattern))
        #expect(b.logSumExps.map(\.bitPattern) == s.logSumExps.map(\.bitPattern))
        var bad = 0
        for t in 0..<s.count {
            let e = s.entryOffsets[t], n = s.entryOffsets[t + 1] - e, ck = min(n, k)
            if Int(b.entryCounts[t]) != ck { bad += 1; continue }
            for r in 0..<k {
                let id = b.entryIDs[t * k + r], lp = b.entryLogProbs[t * k + r]
                if r >= ck { if id != 0 || lp != -.infinity { bad += 1 }; continue }
                if id != s.entryIDs[e + r] { bad += 1 }
                switch c.logProbs {
                case .float32: if lp.bitPattern != s.entryLogProbs[e + r].bitPattern { bad += 1 }
                case .quantized(let q, let m):
                    if Double(lp) != referenceQuantized(s.entryLogProbs[e + r], stepLog2: q, multiplier: m) { bad += 1 }
                }
            }
        }
        #expect(bad == 0, "\(bad) mismatching entries")
        if samples {
            #expect(b.sampleOffsets == s.sampleOffsets)
            #expect(b.sampleIDs == s.sampleIDs && b.sampleDraws == s.sampleDraws)
        }
    }

    @Test func emptyCacheAndEmptySequencesRoundTrip() throws {
        let dir = freshDirectory("empty")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let m = try writeCache(dir, [], vocab: 256, k: 4)
        #expect(m.totals.tokens == 0 && m.shards.isEmpty)
        let r = try CacheReader(directory: dir)
        #expect(r.tokenCount == 0 && r.sequenceCount == 0)
        #expect(CacheVerifier.verify(directory: dir).isSound)
        let seq = TeacherLikeGenerator.Sequence(documentKey: .init(high: 1, low: 2), documentOffset: 3)
        let dir2 = freshDirectory("empty2")
        defer { try? FileManager.default.removeItem(atPath: dir2) }
        try writeCache(dir2, [seq, seq], vocab: 256, k: 4)
        let r2 = try CacheReader(directory: dir2)
        #expect(r2.sequenceCount == 2 && r2.tokenCount == 0)
        #expect(try r2.sequence(1) == SequenceInfo(documentKey: .init(high: 1, low: 2), documentOffset: 3, length: 0, firstToken: 0))
    }

    @Test func generatedCacheIsDeterministicAndReadsFromTwoThreads() throws {
        let g = TeacherLikeGenerator(vocabularySize: 5000, k: 16, seed: 3, draws: 10)
        let seqs = (0..<6).map { g.sequence($0, length: 100) }
        #expect(seqs == (0..<6).map { g.sequence($0, length: 100) })
        let d1 = freshDirectory("det1"), d2 = freshDirectory("det2")
        defer { try? FileManager.default.removeItem(atPath: d1); try? FileManager.default.removeItem(atPath: d2) }
        try writeCache(d1, seqs, vocab: 5000, k: 16, samples: 10, options: WriterOptions(blockTokens: 64))
        try writeCache(d2, seqs, vocab: 5000, k: 16, samples: 10, options: WriterOptions(blockTokens: 64))
        #expect(try snapshot(d1) == snapshot(d2))
        let r = try CacheReader(directory: d1, cacheBlocks: 2)
        let ok = ErrorCount()
        DispatchQueue.concurrentPerform(iterations: 4) { th in
            let b = TargetBatch()
            for i in 0..<200 {
                let a = (i * 37 + th * 11) % 590
                do {
                    try r.decode(tokens: a..<(a + 10), k: 16, into: b)
                    let s = seqs[a / 100], t = a % 100
                    if b.inputIDs[0] != s.inputIDs[t] || b.entryIDs[0] != s.entryIDs[s.entryOffsets[t]] { ok.add() }
                } catch { ok.add() }
            }
        }
        #expect(ok.value == 0)
    }

    @Test func tokenizerMismatchIsRefused() throws {
        let dir = freshDirectory("tok")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try writeCache(dir, [], vocab: 256, k: 4)
        #expect(throws: ShardFormatError.self) { try CacheReader(directory: dir, tokenizerFingerprint: "other") }
        _ = try CacheReader(directory: dir, tokenizerFingerprint: "tok")
    }

    @Test func writerRejectsBadRows() throws {
        let dir = freshDirectory("bad")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let w = try CacheWriter(directory: dir, description: description(vocab: 100, k: 3))
        try w.beginSequence(documentKey: .init(high: 0, low: 0), documentOffset: 0)
        func row(_ id: Int32, _ ids: [Int32], _ lps: [Float]) throws {
            try w.appendToken(inputID: id, nextTokenLogProb: -1, logSumExp: 0, entryIDs: ids[...], entryLogProbs: lps[...])
        }
        #expect(throws: ShardFormatError.self) { try row(100, [], []) }            // input id >= V
        #expect(throws: ShardFormatError.self) { try row(1, [1, 2, 3, 4], [-1, -2, -3, -4]) } // > K
        #expect(throws: ShardFormatError.self) { try row(1, [1, 2], [-2, -1]) }    // not descending
        #expect(throws: ShardFormatError.self) { try row(1, [1], [.nan]) }
        #expect(throws: ShardFormatError.self) { try row(1, [1], [0.5]) }          // positive beyond half a step
        #expect(throws: ShardFormatError.self) { try row(1, [1, 2], [-1]) }        // shape
        try row(1, [1, 2], [-1, -1])                                              // ties are fine
        try w.endSequence()
        let m = try w.finish()
        #expect(m.totals.tokens == 1 && m.totals.entries == 2)
    }
}

final class ErrorCount: @unchecked Sendable {
    // Sendable because `n` is only touched under `lock`.
    private let lock = NSLock()
    private var n = 0
    func add() { lock.lock(); n += 1; lock.unlock() }
    var value: Int { lock.lock(); defer { lock.unlock() }; return n }
}

@Suite struct SamplesAbsentTests {
    /// Asking for samples from a cache written without them gives empty sample rows (it once
    /// crashed reading the absent sample counts of a partly read block).
    @Test func samplesFromACacheWithoutThemAreEmpty() throws {
        let dir = freshDirectory("nosamples")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let g = TeacherLikeGenerator(vocabularySize: 3000, k: 8, seed: 21)
        try writeCache(dir, (0..<3).map { g.sequence($0, length: 45) }, vocab: 3000, k: 8, options: WriterOptions(blockTokens: 16))
        let r = try CacheReader(directory: dir, cacheBlocks: 2)
        #expect(r.maxSamples == 0)
        let with = TargetBatch(), without = TargetBatch()
        // Whole blocks, partial blocks (lo > 0, through the block cache) and the same block twice.
        for range in [0..<135, 3..<40, 17..<18, 3..<40, 130..<135, 0..<0] {
            try r.decode(tokens: range, k: 5, samples: true, into: with)
            try r.decode(tokens: range, k: 5, samples: false, into: without)
            #expect(with.sampleOffsets == [Int](repeating: 0, count: range.count + 1), "\(range)")
            #expect(with.sampleIDs.isEmpty && with.sampleDraws.isEmpty)
            #expect(with.inputIDs == without.inputIDs && with.entryIDs == without.entryIDs && with.entryCounts == without.entryCounts)
            #expect(with.entryLogProbs.map(\.bitPattern) == without.entryLogProbs.map(\.bitPattern))
        }
    }
}
