/// Teacher targets of many positions, back to back (compressed-sparse-row layout), ready to
/// be handed to a shard writer.
///
/// Position `p` owns exact entries `entryOffsets[p] ..< entryOffsets[p+1]` and sampled entries
/// `sampleOffsets[p] ..< sampleOffsets[p+1]`. All log-probabilities are natural logs of the
/// teacher distribution at the capture temperature.
public struct CapturedTargets: Sendable, Equatable {
    /// Full-vocabulary logsumexp of the temperature-scaled logits. Shape [P].
    public var logSumExp: [Float] = []
    /// Exact log-probability of the real next token. Shape [P].
    public var nextTokenLogProb: [Float] = []
    /// Probability mass of the distinct ids stored for the position (exact and sampled). Shape [P].
    public var capturedMass: [Float] = []
    /// Start of each position's exact entries; `entryOffsets[P]` is the total. Shape [P+1].
    public var entryOffsets: [Int] = [0]
    /// Exact entries' ids, descending probability per position (ties: lower id first). Shape [E].
    public var entryIDs: [Int32] = []
    /// Exact entries' log-probabilities. Shape [E].
    public var entryLogProbs: [Float] = []
    /// Start of each position's sampled entries. Shape [P+1].
    public var sampleOffsets: [Int] = [0]
    /// Distinct sampled ids, by descending count, then descending probability, then id. Shape [S].
    public var sampleIDs: [Int32] = []
    /// How many of the position's draws gave each id; they sum to the policy's draws. Shape [S].
    public var sampleCounts: [UInt32] = []
    /// Teacher log-probability of each sampled id. Shape [S].
    public var sampleLogProbs: [Float] = []

    public init() {}

    /// Number of positions.
    public var count: Int { logSumExp.count }

    /// Removes every position, keeping capacity.
    public mutating func removeAll() {
        logSumExp.removeAll(keepingCapacity: true)
        nextTokenLogProb.removeAll(keepingCapacity: true)
        capturedMass.removeAll(keepingCapacity: true)
        entryOffsets.removeAll(keepingCapacity: true); entryOffsets.append(0)
        entryIDs.removeAll(keepingCapacity: true)
        entryLogProbs.removeAll(keepingCapacity: true)
        sampleOffsets.removeAll(keepingCapacity: true); sampleOffsets.append(0)
        sampleIDs.removeAll(keepingCapacity: true)
        sampleCounts.removeAll(keepingCapacity: true)
        sampleLogProbs.removeAll(keepingCapacity: true)
    }

    /// The exact entries of position `p`.
    public func entries(_ p: Int) -> (ids: ArraySlice<Int32>, logProbs: ArraySlice<Float>) {
        let r = entryOffsets[p] ..< entryOffsets[p + 1]
        return (entryIDs[r], entryLogProbs[r])
    }

    /// The sampled entries of position `p`.
    public func samples(_ p: Int) -> (ids: ArraySlice<Int32>, counts: ArraySlice<UInt32>, logProbs: ArraySlice<Float>) {
        let r = sampleOffsets[p] ..< sampleOffsets[p + 1]
        return (sampleIDs[r], sampleCounts[r], sampleLogProbs[r])
    }
}
