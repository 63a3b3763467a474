import Foundation
import Kernels
import Truncation

/// Turns teacher logits into cached teacher targets under one ``CapturePolicy``.
///
/// Two entry points:
/// - ``capture(row:nextToken:position:into:)`` takes a full logits row and serves every policy;
/// - ``capture(topIDs:topLogits:logSumExp:nextTokenLogit:into:)`` takes the output of a fused
///   LM-head top-K (descending ids and logits plus the full logsumexp) and serves top-k and
///   top-p without the full row ever existing.
///
/// The full-row path takes raw logits and divides by the temperature; the fused path takes
/// the fused head's already-scaled output. Reusable scratch
/// makes repeated calls allocation-free; one instance per thread.
public struct Capturer: Sendable {
    public let policy: CapturePolicy
    public let temperature: Float
    public let seed: UInt64
    public let vocabularySize: Int

    // Scratch, reused across calls.
    private var heapIDs: [Int32] = []
    private var heapLogits: [Float] = []
    private var uniforms: [Double] = []
    private var scaled: [Float] = []
    private var excludedMask: [Bool] = []

    /// - Throws: ``CaptureError`` when the policy or temperature is out of range.
    public init(policy: CapturePolicy, temperature: Float = 1, seed: UInt64 = 0, vocabularySize: Int) throws {
        do { try policy.validate(vocabularySize: vocabularySize) } catch TruncationError.badPolicy(let m) { throw CaptureError.badPolicy(m) }
        guard temperature.isFinite, temperature >= 1e-3, temperature <= 1e3 else { throw CaptureError.badTemperature(temperature) }
        self.policy = policy
        self.temperature = temperature
        self.seed = seed
        self.vocabularySize = vocabularySize
    }

    /// Captures one position from its full logits row.
    /// - Parameters:
    ///   - row: raw logits. Shape [V].
    ///   - nextToken: the real next token id.
    ///   - position: the token's position in the corpus stream; seeds its draws.
    /// - Throws: ``CaptureError`` for a short row or an out-of-range next token.
    public mutating func capture(row: UnsafeBufferPointer<Float>, nextToken: Int32, position: UInt64,
                                 into out: inout CapturedTargets) throws {
        let V = vocabularySize
        guard row.count >= V else { throw CaptureError.rowTooShort(expected: V, got: row.count) }
        guard nextToken >= 0, Int(nextToken) < V else { throw CaptureError.nextTokenOutOfRange(nextToken, vocabularySize: V) }
        if scaled.count != V { scaled = [Float](repeating: 0, count: V) }
        let invT = 1 / temperature
        for i in 0..<V { scaled[i] = row[i] * invT }
        // The same top-K and logsumexp kernel the fused LM head matches bit for bit, so a
        // full-row capture and a fused one store identical values.
        let headK = policy.maxEntries
        // Reallocated only when the size changes (the fused path reuses these buffers too).
        if heapIDs.count != max(headK, 1) {
            heapIDs = [Int32](repeating: 0, count: max(headK, 1))
            heapLogits = [Float](repeating: 0, count: max(headK, 1))
        }
        var lse: Float = 0
        scaled.withUnsafeBufferPointer { z in
            topKLogsumexp(logits: z.baseAddress!, rows: 1, vocab: V, k: headK, topIds: &heapIDs, topLogits: &heapLogits,
                          logsumexp: &lse, pool: .serial)
        }
        out.logSumExp.append(lse)
        out.nextTokenLogProb.append(scaled[Int(nextToken)] - lse)

        // Exact head: top-k, or a top-p prefix of the top-maxK.
        var mass = 0.0
        if headK > 0 {
            let keep = prefixLength(logits: heapLogits[0..<headK], lse: lse)
            for j in 0..<keep {
                out.entryIDs.append(heapIDs[j])
                out.entryLogProbs.append(heapLogits[j] - lse)
                mass += exp(Double(heapLogits[j] - lse))
            }
        }
        out.entryOffsets.append(out.entryIDs.count)

        // Sampled draws: from the whole distribution, or (head-tail) from the tail outside the head.
        let draws = policy.maxSamples
        if draws > 0 {
            if excludedMask.count != V { excludedMask = [Bool](repeating: false, count: V) }
            let head = heapIDs.prefix(policy.maxEntries)
            if case .topKAndSampled = policy {
                let first = out.sampleIDs.count
                _ = sample(draws: draws, lse: lse, position: position, into: &out)
                // Captured mass counts each id once: sampled ids outside the head add theirs.
                for id in head { excludedMask[Int(id)] = true }
                for i in first..<out.sampleIDs.count where !excludedMask[Int(out.sampleIDs[i])] {
                    mass += exp(Double(out.sampleLogProbs[i]))
                }
            } else {
                for id in head { excludedMask[Int(id)] = true }
                mass += sample(draws: draws, lse: lse, position: position, into: &out)
            }
            for id in head { excludedMask[Int(id)] = false }
        }
        out.sampleOffsets.append(out.sampleIDs.count)
        out.capturedMass.append(Float(min(mass, 1)))
    }

    /// Captures one position from a fused top-K head (top-k and top-p policies only).
    /// - Parameters:
    ///   - topIDs: ids in descending logit order (ties: lower id first). Shape [K'] with K' >= the policy's entries.
    ///   - topLogits: their logits divided by the temperature, as a fused head with scale 1/τ
    ///     returns them. Shape [K'].
    ///   - logSumExp: logsumexp of the full row of logits divided by the temperature.
    ///   - nextTokenLogit: the real next token's logit divided by the temperature.
    public mutating func capture(topIDs: UnsafeBufferPointer<Int32>, topLogits: UnsafeBufferPointer<Float>,
                                 logSumExp lse: Float, nextTokenLogit: Float, into out: inout CapturedTargets) throws {
        guard !policy.needsFullRow else { throw CaptureError.badPolicy("\(policy) needs the full logits row") }
        let k = min(policy.maxEntries, topIDs.count)
        heapIDs.removeAll(keepingCapacity: true); heapLogits.removeAll(keepingCapacity: true)
        for j in 0..<k { heapIDs.append(topIDs[j]); heapLogits.append(topLogits[j]) }
        out.logSumExp.append(lse)
        out.nextTokenLogProb.append(nextTokenLogit - lse)
        let keep = prefixLength(logits: heapLogits[...], lse: lse)
        var mass = 0.0
        for j in 0..<keep {
            out.entryIDs.append(heapIDs[j])
            out.entryLogProbs.append(heapLogits[j] - lse)
            mass += exp(Double(heapLogits[j] - lse))
        }
        out.entryOffsets.append(out.entryIDs.count)
        out.sampleOffsets.append(out.sampleIDs.count)
        out.capturedMass.append(Float(min(mass, 1)))
    }

    /// How many of the descending head entries the policy keeps: all for top-k; for top-p the
    /// shortest prefix whose mass reaches p (all of them when even the whole head falls short).
    private func prefixLength(logits: ArraySlice<Float>, lse: Float) -> Int {
        guard case .topP(let p, _) = policy else { return logits.count }
        var mass = 0.0
        for (j, z) in logits.enumerated() {
            mass += exp(Double(z - lse))
            if mass >= p { return j + 1 }
        }
        return logits.count
    }

    /// Draws `draws` ids with replacement from the distribution restricted to ids not marked in
    /// `excludedMask` (renormalised), by inverse CDF over sorted uniforms in one pass over the
    /// row. Appends distinct ids with counts; returns their total probability mass.
    private mutating func sample(draws: Int, lse: Float, position: UInt64, into out: inout CapturedTargets) -> Double {
        var rng = CounterRandom(seed: seed, position: position)
        uniforms.removeAll(keepingCapacity: true)
        for _ in 0..<draws { uniforms.append(rng.nextUniform()) }
        uniforms.sort()
        // Total allowed mass, summed the same way as the walk below so the scaled uniforms
        // never run past the end.
        var total = 0.0
        for i in 0..<vocabularySize where !excludedMask[i] { total += exp(Double(scaled[i] - lse)) }
        guard total > 0 else { return 0 }
        var found: [(id: Int32, count: UInt32, logProb: Float)] = []
        var cumulative = 0.0, j = 0
        for i in 0..<vocabularySize where !excludedMask[i] {
            let lp = scaled[i] - lse
            cumulative += exp(Double(lp))
            var c: UInt32 = 0
            while j < draws && uniforms[j] * total < cumulative { c += 1; j += 1 }
            if c > 0 { found.append((Int32(i), c, lp)) }
            if j == draws { break }
        }
        // Rounding can leave the last draws past the final cumulative sum: give them to the
        // last id with mass, as an exact walk would.
        if j < draws, let last = (0..<vocabularySize).last(where: { !excludedMask[$0] && scaled[$0] > -.infinity }) {
            if let k = found.firstIndex(where: { $0.id == Int32(last) }) { found[k].count += UInt32(draws - j) }
            else { found.append((Int32(last), UInt32(draws - j), scaled[last] - lse)) }
        }
        found.sort { ($0.count, $0.logProb, -$0.id) > ($1.count, $1.logProb, -$1.id) }
        var mass = 0.0
        for f in found {
            out.sampleIDs.append(f.id); out.sampleCounts.append(f.count); out.sampleLogProbs.append(f.logProb)
            mass += exp(Double(f.logProb))
        }
        return mass
    }
}
