import Foundation
import Random
import ShardFormat

/// Seeded generator of teacher-like targets, for tests, `logitcache synth` and
/// `logitcache-bench format`. No model is involved; the point is data whose statistics are
/// close enough to a real teacher's that compression ratios mean something.
///
/// The model (also in docs/format-design.md, appendix A), per sequence i (its own RNG stream, so
/// sequence i can be generated without the ones before it):
/// - **Unigram frequencies** follow Zipf with exponent 1.0 over frequency ranks; rank -> id is
///   a seeded random permutation. Real BPE vocabularies give low ids to frequent tokens (merge
///   order), which would *help* byte-plane coding; we deliberately do not model that.
/// - **Candidates** for a position's top-K come from four sources: the unigram distribution
///   (40%: frequent tokens are everywhere in real top-k sets), a per-sequence topic set of 256
///   ids drawn from a flatter Zipf (30%: content words of the document), the last 64 input
///   tokens (20%: copying), and uniform ids (10%: rare tokens). They are ranked by
///   `0.5 log p_unigram + source bonus + 1.5 Gumbel`, so the top ids vary from position to
///   position and with context instead of repeating one global list.
/// - **Probabilities by rank** are heavy-tailed: weight `(r+1)^-beta` with `beta ~ U(0.6, 2.2)`
///   per position, jittered by `exp(N(0, 0.3))` and re-sorted; the top-K mass is
///   `1 - 0.3 U^2`, the rest is tail mass outside the stored entries.
/// - **logsumexp** ~ N(12, 3). The **real next token** is drawn from the distribution (a top-K
///   rank with its probability, else a tail id with a log-prob below the K-th) and becomes the
///   next position's input id.
/// - **Samples** (optional): `draws` draws from the same distribution, kept as distinct ids with
///   counts, by descending count then id.
/// - `topP < 1` truncates each position's entries to the shortest prefix reaching that mass.
public struct TeacherLikeGenerator: Sendable {
    public let vocabularySize: Int
    public let k: Int
    public let seed: UInt64
    public let draws: Int
    public let topP: Double
    private let rankToID: [Int32]      // [V]
    private let zipfCDF: [Double]      // [V] unigram CDF over ranks
    private let topicCDF: [Double]     // [V] flatter Zipf for topic words
    private let logFreq: [Float]       // [V] log unigram probability by id

    /// One generated sequence, in the writer's terms (CSR like `CapturedTargets`).
    public struct Sequence: Sendable, Equatable {
        public var documentKey: DocumentHash
        public var documentOffset: Int
        public var inputIDs: [Int32] = []          // [T]
        public var nextTokenLogProbs: [Float] = [] // [T]
        public var logSumExps: [Float] = []        // [T]
        public var entryOffsets: [Int] = [0]       // [T+1]
        public var entryIDs: [Int32] = []          // [E]
        public var entryLogProbs: [Float] = []     // [E]
        public var sampleOffsets: [Int] = [0]      // [T+1]
        public var sampleIDs: [Int32] = []         // [S]
        public var sampleDraws: [UInt32] = []      // [S]
        public var count: Int { inputIDs.count }

        /// An empty sequence of a document, filled by appending to its arrays.
        public init(documentKey: DocumentHash, documentOffset: Int) {
            self.documentKey = documentKey
            self.documentOffset = documentOffset
        }
    }

    public init(vocabularySize: Int, k: Int, seed: UInt64, draws: Int = 0, topP: Double = 1) {
        self.vocabularySize = max(2, vocabularySize); self.k = min(k, max(2, vocabularySize)); self.seed = seed
        self.draws = draws; self.topP = topP
        let V = self.vocabularySize
        var rng = SplitMix64(seed: seed ^ 0x5EED_0F_CAC4E)
        var perm = (0..<V).map { Int32($0) }
        for i in stride(from: V - 1, to: 0, by: -1) { perm.swapAt(i, Int(rng.next() % UInt64(i + 1))) }
        rankToID = perm
        func cdf(_ s: Double) -> [Double] {
            var c = [Double](repeating: 0, count: V), acc = 0.0
            for r in 0..<V { acc += pow(Double(r + 1), -s); c[r] = acc }
            return c.map { $0 / acc }
        }
        zipfCDF = cdf(1.0); topicCDF = cdf(0.6)
        var lf = [Float](repeating: 0, count: V)
        for r in 0..<V { lf[Int(perm[r])] = Float(log((zipfCDF[r] - (r > 0 ? zipfCDF[r - 1] : 0)) )) }
        logFreq = lf
    }

    /// Sequence `index` of `length` tokens: document `index / 4`, window `index % 4`.
    public func sequence(_ index: Int, length: Int) -> Sequence {
        var rng = SplitMix64(seed: seed &+ UInt64(index) &* SplitMix64.increment)
        let doc = index / 4
        var s = Sequence(documentKey: DocumentHash(high: seed, low: UInt64(doc) &* 0xD1B5_4A32_D192_ED03 ^ 0xABCD),
                         documentOffset: (index % 4) * length)
        let V = vocabularySize
        func draw(_ cdf: [Double]) -> Int32 {
            let u = rng.unit()
            var lo = 0, hi = V - 1
            while lo < hi { let m = (lo + hi) / 2; if cdf[m] < u { lo = m + 1 } else { hi = m } }
            return rankToID[lo]
        }
        let topic = (0..<256).map { _ in draw(topicCDF) }
        var input = draw(zipfCDF)
        var recent: [Int32] = []
        var cand: [(id: Int32, score: Float)] = []
        var seen = Set<Int32>()
        var w = [Double](repeating: 0, count: k)
        for _ in 0..<length {
            s.inputIDs.append(input)
            recent.append(input); if recent.count > 64 { recent.removeFirst() }
            // Candidates and their ranking scores.
            cand.removeAll(keepingCapacity: true); seen.removeAll(keepingCapacity: true)
            let want = k + k / 4 + 1
            var tries = 0
            while cand.count < min(want, V) && tries < 20 * want {
                tries += 1
                let u = rng.unit()
                let id: Int32, bonus: Float
                if u < 0.4 { id = draw(zipfCDF); bonus = 0 }
                else if u < 0.7 { id = topic[Int(rng.next() % 256)]; bonus = 1.5 }
                else if u < 0.9 { id = recent[Int(rng.next() % UInt64(recent.count))]; bonus = 2 }
                else { id = Int32(rng.next() % UInt64(V)); bonus = -1 }
                if !seen.insert(id).inserted { continue }
                let g = -log(-log(max(rng.unit(), 1e-12)))
                cand.append((id, 0.5 * logFreq[Int(id)] + bonus + Float(1.5 * g)))
            }
            cand.sort { $0.score > $1.score || ($0.score == $1.score && $0.id < $1.id) }
            let n = min(k, cand.count)
            // Heavy-tailed probabilities by rank.
            let beta = 0.6 + 1.6 * rng.unit()
            var sum = 0.0
            for r in 0..<n { w[r] = pow(Double(r + 1), -beta) * exp(0.3 * rng.normal()); sum += w[r] }
            w[0..<n].sort(by: >)
            let mass = 1 - 0.3 * pow(rng.unit(), 2)
            var keep = n
            if topP < 1 {
                var acc = 0.0
                for r in 0..<n { acc += w[r] / sum * mass; if acc >= topP { keep = r + 1; break } }
            }
            for r in 0..<keep {
                s.entryIDs.append(cand[r].id)
                s.entryLogProbs.append(Float(log(w[r] / sum * mass)))
            }
            s.entryOffsets.append(s.entryIDs.count)
            s.logSumExps.append(Float(12 + 3 * rng.normal()))
            let floorLP = n > 0 ? log(w[n - 1] / sum * mass) : -5.0
            func pick() -> (Int32, Double) {
                if rng.unit() < mass && n > 0 {
                    var u = rng.unit() * sum, r = 0
                    while r < n - 1 && u > w[r] { u -= w[r]; r += 1 }
                    return (cand[r].id, log(w[r] / sum * mass))
                }
                return (draw(zipfCDF), floorLP - 1 - 3 * -log(max(rng.unit(), 1e-12)))
            }
            let (next, nlp) = pick()
            s.nextTokenLogProbs.append(Float(nlp))
            if draws > 0 {
                var counts: [Int32: UInt32] = [:]
                for _ in 0..<draws { counts[pick().0, default: 0] += 1 }
                for (id, c) in counts.sorted(by: { $0.value > $1.value || ($0.value == $1.value && $0.key < $1.key) }) {
                    s.sampleIDs.append(id); s.sampleDraws.append(c)
                }
            }
            s.sampleOffsets.append(s.sampleIDs.count)
            input = next
        }
        return s
    }
}

extension CacheWriter {
    /// Appends a whole generated sequence.
    public func append(_ s: TeacherLikeGenerator.Sequence) throws {
        try beginSequence(documentKey: s.documentKey, documentOffset: s.documentOffset)
        for t in 0..<s.count {
            let e = s.entryOffsets[t]..<s.entryOffsets[t + 1], q = s.sampleOffsets[t]..<s.sampleOffsets[t + 1]
            try appendToken(inputID: s.inputIDs[t], nextTokenLogProb: s.nextTokenLogProbs[t], logSumExp: s.logSumExps[t],
                            entryIDs: s.entryIDs[e], entryLogProbs: s.entryLogProbs[e],
                            sampleIDs: s.sampleIDs[q], sampleDraws: s.sampleDraws[q])
        }
        try endSequence()
    }
}
