import Foundation
import SyntheticData
import Testing
import TestSupport
@testable import ShardFormat
import Random

@Suite struct CapturedMassTests {
    /// Nearest-rank quantile of `v` in double: the value of rank ⌈p·n⌉ in ascending order.
    func referenceQuantile(_ v: [Double], _ p: Double) -> Double {
        let s = v.sorted()
        return s[max(1, Int((p * Double(s.count)).rounded(.up))) - 1]
    }

    /// `exact`: how far the cache's masses may be from `masses` (rounding of what was written);
    /// quantiles may be off by a further half bin.
    func expectClose(_ got: CapturedMass, _ masses: [Double], exact: Double) {
        let tolerance = CapturedMass.resolution / 2 + exact
        let mean = masses.reduce(0, +) / Double(masses.count)
        #expect(got.tokens == masses.count)
        #expect(abs(got.mean - mean) <= exact)
        #expect(abs(got.min - masses.min()!) <= exact && abs(got.max - masses.max()!) <= exact)
        for (p, q) in [(0.01, got.p1), (0.10, got.p10), (0.50, got.p50), (0.90, got.p90), (0.99, got.p99)] {
            let want = referenceQuantile(masses, p)
            #expect(abs(q - want) <= tolerance, "p\(Int(p * 100)): \(q) vs \(want)")
        }
    }

    @Test func quantilesOfAHandList() {
        let m = (1...10).map { Double($0) / 10 }
        let c = CapturedMass(masses: m.reversed())
        #expect(abs(c.mean - 0.55) < 1e-12)
        for (q, want) in [(c.p1, 0.1), (c.p10, 0.1), (c.p50, 0.5), (c.p90, 0.9), (c.p99, 1.0)] {
            #expect(abs(q - want) <= CapturedMass.resolution / 2)
        }
        #expect(CapturedMass(masses: []).tokens == 0)
    }

    /// A cache whose tokens hold known masses j/1000 (spread over 1–5 exact float32 entries)
    /// and some tokens without entries (mass 0), across several blocks and reads.
    @Test func knownMassesOfALosslessCache() throws {
        let dir = freshDirectory("mass")
        var masses: [Double] = [], seqs: [TeacherLikeGenerator.Sequence] = []
        var rng = SplitMix64(seed: 7)
        for q in 0..<6 {
            var s = TeacherLikeGenerator.Sequence(documentKey: .init(high: UInt64(q), low: 0), documentOffset: 0)
            for _ in 0..<500 {
                let j = Int(rng.next() % 1001), c = j == 0 ? 0 : 1 + Int(rng.next() % 5)
                s.inputIDs.append(Int32(j % 50)); s.nextTokenLogProbs.append(-1); s.logSumExps.append(0)
                // c entries of equal probability (j/1000)/c: a descending (non-increasing) row.
                for e in 0..<c { s.entryIDs.append(Int32(e)); s.entryLogProbs.append(Float(log(Double(j) / 1000 / Double(c)))) }
                s.entryOffsets.append(s.entryIDs.count); s.sampleOffsets.append(0)
                masses.append(Double(j) / 1000)
            }
            seqs.append(s)
        }
        try writeCache(dir, seqs, vocab: 50, k: 5, options: WriterOptions(logProbs: .float32, blockTokens: 256, targetShardBytes: 4096))
        let r = try CacheReader(directory: dir)
        for step in [37, 1 << 16] {
            // float32 log-probs round each mass by ~1e-7 relative.
            expectClose(try r.capturedMass(tokensPerRead: step), masses, exact: 1e-6)
        }
    }

    /// Random rows (masses spread over [0, 1], 0–8 entries) with the default quantised
    /// log-probs: the summary equals a double reference over the quantised values (FORMAT.md
    /// section 5's quantiser, re-implemented in the tests).
    @Test func quantisedCacheMatchesADoubleReference() throws {
        let dir = freshDirectory("massq")
        var rng = SplitMix64(seed: 11)
        var seqs: [TeacherLikeGenerator.Sequence] = []
        for q in 0..<12 {
            var s = TeacherLikeGenerator.Sequence(documentKey: .init(high: UInt64(q), low: 1), documentOffset: 0)
            for _ in 0..<Int(rng.next() % 400) {
                let c = Int(rng.next() % 9), total = rng.unit()
                var u = (0..<c).map { _ in rng.unit() + 1e-3 }
                let z = u.reduce(0, +)
                u = u.map { $0 / z * total }.sorted(by: >)
                s.inputIDs.append(Int32(rng.next() % 300)); s.nextTokenLogProbs.append(-2); s.logSumExps.append(1)
                for (e, p) in u.enumerated() { s.entryIDs.append(Int32(e)); s.entryLogProbs.append(Float(log(p))) }
                s.entryOffsets.append(s.entryIDs.count); s.sampleOffsets.append(0)
            }
            seqs.append(s)
        }
        try writeCache(dir, seqs, vocab: 300, k: 8, options: WriterOptions(blockTokens: 128))
        var masses: [Double] = []
        for s in seqs {
            for t in 0..<s.inputIDs.count {
                masses.append((s.entryOffsets[t]..<s.entryOffsets[t + 1]).reduce(0.0) { $0 + exp(referenceQuantized(s.entryLogProbs[$1], stepLog2: 8, multiplier: 5)) })
            }
        }
        let got = try CacheReader(directory: dir).capturedMass(tokensPerRead: 100)
        #expect(masses.count > 1000)
        expectClose(got, masses, exact: 1e-9)
    }
}
