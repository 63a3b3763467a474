import Foundation
import Testing
@testable import ShardFormat

@Suite struct QuantisationTests {
    /// The default step bounds every entry's error by 1/128 nat <= 0.01, on values dense near
    /// step midpoints (the worst case) and spread over the whole range.
    @Test(arguments: [6, 5, 0, 10, 20])
    func errorNeverExceedsHalfAStep(_ b: Int) throws {
        let dir = freshDirectory("q\(b)")
        var rng = SplitMix(UInt64(b))
        let h = 1 / Double(1 << b)
        var s = TeacherLikeGenerator.Sequence(documentKey: .init(high: 0, low: 0), documentOffset: 0)
        var values: [Float] = []
        for i in 0..<4000 {
            // Midpoints ±1 ulp, exact multiples, and random magnitudes up to the clamp.
            let mid = Float(-(Double(i) + 0.5) * h)
            values += [mid, mid.nextUp, mid.nextDown, Float(-Double(i) * h), Float(-rng.unit() * pow(10, 5 * rng.unit()))]
        }
        values += [0, -0.0, Float(h / 2).nextDown, -.infinity, -1e30, -Float(16_777_215 * h), -Float(16_777_215 * h).nextUp]
        values.sort(by: >)
        for (i, l) in values.enumerated() {
            s.inputIDs.append(0); s.nextTokenLogProbs.append(0); s.logSumExps.append(0)
            s.entryIDs.append(Int32(i % 7)); s.entryLogProbs.append(l); s.entryOffsets.append(s.entryIDs.count); s.sampleOffsets.append(0)
        }
        try writeCache(dir, [s], vocab: 7, k: 1, options: WriterOptions(logProbs: .quantized(stepLog2: b)))
        let r = try CacheReader(directory: dir)
        let batch = TargetBatch()
        try r.decode(tokens: 0..<values.count, k: 1, into: batch)
        var worst = 0.0, clampedOK = true
        for (i, l) in values.enumerated() {
            let got = Double(batch.entryLogProbs[i])
            if Double(l) >= -16_777_215 * h { worst = max(worst, abs(got - Double(l))) }
            else { clampedOK = clampedOK && got == -16_777_215 * h }
            #expect(got == referenceQuantized(l, stepLog2: b))
        }
        #expect(worst <= h / 2, "worst error \(worst) > \(h / 2)")
        #expect(worst > h / 2 * 0.99, "the test must reach the bound")
        #expect(clampedOK)
        if b == 6 { #expect(worst <= 0.01) }
        #expect(LogProbEncoding.quantized(stepLog2: b).maxError == h / 2)
    }

    /// Quantised entries stay in descending order, so prefixes remain top-k.
    @Test func orderIsPreserved() throws {
        let dir = freshDirectory("order")
        let g = TeacherLikeGenerator(vocabularySize: 1000, k: 64, seed: 9)
        try writeCache(dir, [g.sequence(0, length: 300)], vocab: 1000, k: 64)
        let r = try CacheReader(directory: dir), b = TargetBatch()
        try r.decode(tokens: 0..<300, k: 64, into: b)
        var bad = 0
        for t in 0..<300 { for j in 1..<Int(b.entryCounts[t]) where b.entryLogProbs[t * 64 + j] > b.entryLogProbs[t * 64 + j - 1] { bad += 1 } }
        #expect(bad == 0)
    }
}
