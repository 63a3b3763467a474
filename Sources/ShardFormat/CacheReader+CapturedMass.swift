import Foundation

/// How much of the teacher's probability the stored entries capture, over every token of a cache.
///
/// A token's captured mass is `Σ exp(l_i)` over its stored (exact) entries, from the stored
/// log-probs: 1 means the entries hold the whole distribution, 0 that the token has none
/// (sampled ids are not counted). With quantised log-probs each entry's probability is off by
/// at most a factor `exp(±maxError)`, so a mass may slightly exceed 1.
///
/// `mean`, `min` and `max` are exact (double sums). Quantiles are nearest-rank (the value of
/// rank `⌈p·n⌉` in ascending order), read from a histogram of ``bins`` equal bins over [0, 2)
/// so memory stays fixed whatever the cache size: each is within ``resolution`` / 2 of the
/// exact one (and clamped to [min, max]). A mass of 2 or more (no teacher's: probabilities sum
/// to 1) counts in the top bin, so a quantile that falls there reads as `max`.
public struct CapturedMass: Sendable, Equatable, Codable {
    /// Tokens summarised (every token of the cache).
    public var tokens: Int
    public var mean: Double
    public var min: Double
    public var max: Double
    public var p1: Double
    public var p10: Double
    public var p50: Double
    public var p90: Double
    public var p99: Double

    /// Histogram bins over [0, 2) (16 MiB of counts while summarising).
    public static let bins = 1 << 21
    /// Bin width: quantiles are exact to half of it (2^-21).
    public static let resolution = 2.0 / Double(bins)

    /// Summarises `masses` (for tests and small inputs; caches go through
    /// ``CacheReader/capturedMass(tokensPerRead:)``).
    public init(masses: [Double]) {
        var acc = Accumulator()
        for m in masses { acc.add(m) }
        self = acc.summary()
    }

    init(tokens: Int, mean: Double, min: Double, max: Double, p1: Double, p10: Double, p50: Double, p90: Double, p99: Double) {
        self.tokens = tokens; self.mean = mean; self.min = min; self.max = max
        self.p1 = p1; self.p10 = p10; self.p50 = p50; self.p90 = p90; self.p99 = p99
    }

    /// Running sums and the histogram.
    struct Accumulator {
        var n = 0, sum = 0.0, lo = Double.infinity, hi = -Double.infinity
        var counts = [Int](repeating: 0, count: CapturedMass.bins)   // [bins]

        mutating func add(_ m: Double) {
            n += 1; sum += m; lo = Swift.min(lo, m); hi = Swift.max(hi, m)
            let x = m * (Double(CapturedMass.bins) / 2)
            // NaN and negative masses cannot come from exp; they land in bin 0 rather than trap.
            let b = x >= Double(CapturedMass.bins - 1) ? CapturedMass.bins - 1 : (x > 0 ? Int(x) : 0)
            counts[b] += 1
        }

        /// Nearest-rank quantile p: the centre of the bin holding rank ⌈p·n⌉, clamped to [lo, hi].
        func quantile(_ p: Double) -> Double {
            let rank = Swift.max(1, Int((p * Double(n)).rounded(.up)))
            var seen = 0
            for (b, c) in counts.enumerated() where c > 0 {
                seen += c
                guard seen >= rank else { continue }
                return b == counts.count - 1 ? hi : Swift.min(hi, Swift.max(lo, (Double(b) + 0.5) * CapturedMass.resolution))
            }
            return hi
        }

        func summary() -> CapturedMass {
            guard n > 0 else { return CapturedMass(tokens: 0, mean: 0, min: 0, max: 0, p1: 0, p10: 0, p50: 0, p90: 0, p99: 0) }
            return CapturedMass(tokens: n, mean: sum / Double(n), min: lo, max: hi, p1: quantile(0.01), p10: quantile(0.10),
                                p50: quantile(0.50), p90: quantile(0.90), p99: quantile(0.99))
        }
    }
}

extension CacheReader {
    /// The captured-mass summary of every token, from one sequential pass over all entries.
    ///
    /// Time O(tokens · K) (every entry band is decompressed); memory one read of
    /// `tokensPerRead` tokens plus the fixed histogram.
    /// - Throws: ``ShardFormatError`` naming the shard file and chunk of a damaged chunk.
    public func capturedMass(tokensPerRead: Int = 1 << 16) throws -> CapturedMass {
        var acc = CapturedMass.Accumulator()
        let batch = TargetBatch(), K = maxEntries, step = Swift.max(1, tokensPerRead)
        var t = 0
        while t < tokenCount {
            let range = t..<Swift.min(tokenCount, t + step)
            try decode(tokens: range, k: K, into: batch)
            for r in 0..<range.count {
                // [T, K] row r: its first entryCounts[r] log-probs are the stored entries.
                var m = 0.0
                for i in 0..<Int(batch.entryCounts[r]) { m += exp(Double(batch.entryLogProbs[r * K + i])) }
                acc.add(m)
            }
            t = range.upperBound
        }
        return acc.summary()
    }
}
