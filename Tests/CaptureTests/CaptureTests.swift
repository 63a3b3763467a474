import Truncation
import Foundation
import Testing
@testable import Capture

/// Seeded logits with ties and a wide range, as a teacher row might have.
func makeRow(_ V: Int, seed: UInt64) -> [Float] {
    var g = CounterRandom(seed: seed, position: 0)
    return (0..<V).map { i in
        let u = g.nextUniform()
        // Every 7th id repeats a value so ties between different ids occur.
        return i % 7 == 3 ? 1.5 : Float(8 * u * u - 4)
    }
}

/// Double-precision reference: log-softmax of z / T.
func referenceLogProbs(_ z: [Float], temperature T: Double) -> [Double] {
    let s = z.map { Double($0) / T }
    let m = s.max()!
    let lse = m + log(s.reduce(0) { $0 + exp($1 - m) })
    return s.map { $0 - lse }
}

@Suite struct CaptureTests {
    @Test(arguments: [1, 5, 64])
    func topKMatchesAFullSortWithTiesByLowerID(k: Int) throws {
        let V = 1000, z = makeRow(V, seed: 3)
        var c = try Capturer(policy: .topK(k: k), temperature: 1, vocabularySize: V)
        var out = CapturedTargets()
        try z.withUnsafeBufferPointer { try c.capture(row: $0, nextToken: 17, position: 0, into: &out) }
        let expected = (0..<V).sorted { z[$0] > z[$1] || (z[$0] == z[$1] && $0 < $1) }.prefix(k).map(Int32.init)
        #expect(Array(out.entries(0).ids) == expected)
        let ref = referenceLogProbs(z, temperature: 1)
        for (id, lp) in zip(out.entries(0).ids, out.entries(0).logProbs) { #expect(abs(Double(lp) - ref[Int(id)]) < 1e-5) }
        #expect(abs(Double(out.nextTokenLogProb[0]) - ref[17]) < 1e-5)
        let mass = expected.reduce(0.0) { $0 + exp(ref[Int($1)]) }
        #expect(abs(Double(out.capturedMass[0]) - mass) < 1e-5)
    }

    @Test(arguments: [Float(0.5), 1, 2])
    func temperatureScalesLogitsBeforeTheNormaliser(T: Float) throws {
        let V = 300, z = makeRow(V, seed: 9)
        var c = try Capturer(policy: .topK(k: 4), temperature: T, vocabularySize: V)
        var out = CapturedTargets()
        try z.withUnsafeBufferPointer { try c.capture(row: $0, nextToken: 299, position: 0, into: &out) }
        let ref = referenceLogProbs(z, temperature: Double(T))
        let lse = Double(z[0]) / Double(T) - ref[0]
        #expect(abs(Double(out.logSumExp[0]) - lse) < 1e-5)
        #expect(abs(Double(out.nextTokenLogProb[0]) - ref[299]) < 1e-5)
    }

    @Test func topPKeepsTheShortestPrefixReachingP() throws {
        let V = 500, z = makeRow(V, seed: 5)
        let ref = referenceLogProbs(z, temperature: 1)
        for p in [0.05, 0.3, 0.9, 1.0] {
            var c = try Capturer(policy: .topP(p: p, maxK: 40), vocabularySize: V)
            var out = CapturedTargets()
            try z.withUnsafeBufferPointer { try c.capture(row: $0, nextToken: 0, position: 0, into: &out) }
            let masses = out.entries(0).ids.map { exp(ref[Int($0)]) }
            let n = masses.count
            #expect(n >= 1 && n <= 40)
            let total = masses.reduce(0, +), withoutLast = masses.dropLast().reduce(0, +)
            #expect(withoutLast < p, "p=\(p): prefix minus its last entry must fall short")
            #expect(total >= p - 1e-6 || n == 40, "p=\(p): reaches p unless capped")
        }
    }

    @Test func fusedHeadPathEqualsFullRowPath() throws {
        let V = 800, z = makeRow(V, seed: 11)
        for policy in [CapturePolicy.topK(k: 16), .topP(p: 0.5, maxK: 32)] {
            var full = try Capturer(policy: policy, temperature: 1.5, vocabularySize: V)
            var fused = try Capturer(policy: policy, temperature: 1.5, vocabularySize: V)
            var a = CapturedTargets(), b = CapturedTargets()
            try z.withUnsafeBufferPointer { try full.capture(row: $0, nextToken: 42, position: 0, into: &a) }
            // What a fused head returns: the top 32 raw logits and the scaled logsumexp.
            let order = (0..<V).sorted { z[$0] > z[$1] || (z[$0] == z[$1] && $0 < $1) }.prefix(32)
            let ids = order.map(Int32.init), logits = order.map { z[$0] * (1 / Float(1.5)) }
            try ids.withUnsafeBufferPointer { i in
                try logits.withUnsafeBufferPointer { l in
                    try fused.capture(topIDs: i, topLogits: l, logSumExp: a.logSumExp[0], nextTokenLogit: z[42] * (1 / Float(1.5)), into: &b)
                }
            }
            #expect(a == b, "\(policy)")
        }
    }

    @Test func sampledCountsSumToDrawsAndAreReproducible() throws {
        let V = 2000, z = makeRow(V, seed: 1)
        var c = try Capturer(policy: .sampled(draws: 50), seed: 42, vocabularySize: V)
        var out = CapturedTargets()
        try z.withUnsafeBufferPointer { r in
            for pos in [0, 1, 0] as [UInt64] { try c.capture(row: r, nextToken: 0, position: pos, into: &out) }
        }
        for p in 0..<3 {
            let s = out.samples(p)
            #expect(s.counts.reduce(0, +) == 50)
            #expect(Set(s.ids).count == s.ids.count, "ids are distinct")
            #expect(out.entries(p).ids.isEmpty)
        }
        #expect(out.samples(0).ids == out.samples(2).ids && out.samples(0).counts == out.samples(2).counts)
        #expect(out.samples(0).ids != out.samples(1).ids, "another position draws differently")
    }

    /// Pearson chi-square over many draws: with 7 degrees of freedom the statistic exceeds
    /// 24.3 with probability 0.001 under a correct sampler. Fixed seeds keep it deterministic.
    @Test func sampledFrequenciesConvergeToTeacherProbabilities() throws {
        let z: [Float] = [2.0, 1.0, 0.5, 0.0, -0.5, -1.0, 1.2, 0.3]
        let ref = referenceLogProbs(z, temperature: 1).map(exp)
        var c = try Capturer(policy: .sampled(draws: 1000), seed: 7, vocabularySize: 8)
        var counts = [Double](repeating: 0, count: 8)
        var out = CapturedTargets()
        try z.withUnsafeBufferPointer { r in
            for pos in 0..<100 { try c.capture(row: r, nextToken: 0, position: UInt64(pos), into: &out) }
        }
        for (id, n) in zip(out.sampleIDs, out.sampleCounts) { counts[Int(id)] += Double(n) }
        let N = counts.reduce(0, +)
        #expect(N == 100_000)
        let chi2 = zip(counts, ref).reduce(0.0) { $0 + pow($1.0 - N * $1.1, 2) / (N * $1.1) }
        #expect(chi2 < 24.3, "chi-square \(chi2)")
    }

    @Test func headTailSamplesOnlyOutsideTheHeadWithTailProportions() throws {
        let z: [Float] = [3.0, 2.5, 1.0, 0.5, 0.0, -0.5, -1.0, -2.0, 0.2, 0.7]
        let ref = referenceLogProbs(z, temperature: 1).map(exp)
        var c = try Capturer(policy: .headTail(k: 2, draws: 500), seed: 3, vocabularySize: z.count)
        var out = CapturedTargets()
        var counts = [Double](repeating: 0, count: z.count)
        try z.withUnsafeBufferPointer { r in
            for pos in 0..<200 { try c.capture(row: r, nextToken: 4, position: UInt64(pos), into: &out) }
        }
        #expect(Array(out.entries(0).ids) == [0, 1])
        for p in 0..<200 { #expect(out.samples(p).counts.reduce(0, +) == 500) }
        for (id, n) in zip(out.sampleIDs, out.sampleCounts) { counts[Int(id)] += Double(n) }
        #expect(counts[0] == 0 && counts[1] == 0)
        let tail = ref[2...].reduce(0, +), N = 100_000.0
        // 7 degrees of freedom (8 tail ids), same threshold as above.
        let chi2 = (2..<z.count).reduce(0.0) { acc, i in
            let e = N * ref[i] / tail
            return acc + pow(counts[i] - e, 2) / e
        }
        #expect(chi2 < 24.3, "chi-square \(chi2)")
    }

    /// top-k+sampled: the exact head as top-k, and beside it draws from the WHOLE distribution
    /// (head ids included) in the teacher's proportions; captured mass counts each id once.
    @Test func topKAndSampledDrawsFromTheWholeDistribution() throws {
        let z: [Float] = [3.0, 2.5, 1.0, 0.5, 0.0, -0.5, -1.0, -2.0, 0.2, 0.7]
        let ref = referenceLogProbs(z, temperature: 1).map(exp)
        var c = try Capturer(policy: .topKAndSampled(k: 2, draws: 500), seed: 3, vocabularySize: z.count)
        var out = CapturedTargets()
        var counts = [Double](repeating: 0, count: z.count)
        try z.withUnsafeBufferPointer { r in
            for pos in 0..<200 { try c.capture(row: r, nextToken: 4, position: UInt64(pos), into: &out) }
        }
        #expect(Array(out.entries(0).ids) == [0, 1])
        for (id, n) in zip(out.sampleIDs, out.sampleCounts) { counts[Int(id)] += Double(n) }
        let N = 100_000.0
        let chi2 = (0..<z.count).reduce(0.0) { acc, i in acc + pow(counts[i] - N * ref[i], 2) / (N * ref[i]) }
        #expect(chi2 < 27.9, "chi-square \(chi2)")  // 9 degrees of freedom, p = 0.001
        let s = out.samples(0)
        let outside = zip(s.ids, s.logProbs).filter { $0.0 > 1 }.map { exp(Double($0.1)) }.reduce(0, +)
        #expect(abs(Double(out.capturedMass[0]) - min(1, ref[0] + ref[1] + outside)) < 1e-5)
    }

    @Test func badSettingsAreRefusedByName() {
        #expect(throws: CaptureError.self) { try Capturer(policy: .topK(k: 0), vocabularySize: 10) }
        #expect(throws: CaptureError.self) { try Capturer(policy: .topK(k: 11), vocabularySize: 10) }
        #expect(throws: CaptureError.self) { try Capturer(policy: .topP(p: 1.5, maxK: 4), vocabularySize: 10) }
        #expect(throws: CaptureError.badTemperature(0)) { try Capturer(policy: .topK(k: 1), temperature: 0, vocabularySize: 10) }
        #expect(throws: CaptureError.self) {
            var c = try Capturer(policy: .topK(k: 1), vocabularySize: 10)
            var out = CapturedTargets()
            let z = [Float](repeating: 0, count: 10)
            try z.withUnsafeBufferPointer { try c.capture(row: $0, nextToken: 10, position: 0, into: &out) }
        }
    }
}
