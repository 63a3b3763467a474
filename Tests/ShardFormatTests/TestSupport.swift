import Foundation
import Truncation
import SyntheticData
import Testing
@testable import ShardFormat
import TestSupport
import Random


/// Random sequences of arbitrary shape (uniform ids, variable entry counts incl. 0, empty and
/// one-token sequences), in the generator's CSR layout so writer and checks share it.
func randomSequences(_ rng: inout SplitMix64, count: Int, vocab V: Int, k K: Int, samples S: Int, maxLength: Int) -> [TeacherLikeGenerator.Sequence] {
    (0..<count).map { i in
        var s = TeacherLikeGenerator.Sequence(documentKey: DocumentHash(high: rng.next(), low: rng.next()), documentOffset: Int(rng.next() % 100_000))
        let T = i == 0 ? 0 : i == 1 ? 1 : Int(rng.next() % UInt64(maxLength + 1))
        for t in 0..<T {
            // Like a real teacher's rows, the input id is often one of the previous position's
            // entries (any rank, so also ranks past band 0), and then the previous position's
            // next log-prob is often exactly that entry's: the cases format 1.3 links.
            let prev = t > 0 ? s.entryOffsets[t - 1]..<s.entryOffsets[t] : 0..<0
            if !prev.isEmpty && rng.next() % 2 == 0 {
                let e = prev.lowerBound + Int(rng.next() % UInt64(prev.count))
                s.inputIDs.append(s.entryIDs[e])
                if rng.next() % 2 == 0 { s.nextTokenLogProbs[t - 1] = s.entryLogProbs[e] }
            } else {
                s.inputIDs.append(Int32(rng.next() % UInt64(V)))
            }
            s.nextTokenLogProbs.append(rng.next() % 50 == 0 ? -.infinity : Float(-30 * rng.unit()))
            s.logSumExps.append(Float(20 * rng.normal()))
            // Ids within a position are distinct (FORMAT.md section 4), so at most V of them.
            func distinctID(_ used: inout Set<Int32>) -> Int32 {
                while true { let id = Int32(rng.next() % UInt64(V)); if used.insert(id).inserted { return id } }
            }
            let c = min(Int(rng.next() % UInt64(K + 1)), V)
            // Starting at or below −log(c + 1) keeps the row's probability below 1 (section 4).
            var l = Float(-rng.unit() - log(Double(c + 1)))
            var used = Set<Int32>()
            for _ in 0..<c {
                s.entryIDs.append(distinctID(&used))
                s.entryLogProbs.append(l)
                l -= Float(rng.unit() * (rng.next() % 8 == 0 ? 40 : 0.5))
            }
            s.entryOffsets.append(s.entryIDs.count)
            if S > 0 {
                let n = min(Int(rng.next() % UInt64(S + 1)), V)
                used.removeAll()
                for _ in 0..<n { s.sampleIDs.append(distinctID(&used)); s.sampleDraws.append(UInt32(1 + rng.next() % 50)) }
            }
            s.sampleOffsets.append(s.sampleIDs.count)
        }
        return s
    }
}

func description(vocab: Int, k: Int, samples: Int = 0, tokenizer: String = "tok") -> CacheDescription {
    CacheDescription(vocabularySize: vocab, fingerprints: Fingerprints(teacher: "t", tokenizer: tokenizer, corpus: "c"),
                     capture: CaptureSettings(policy: samples > 0 ? (k > 0 ? .headTail(k: k, draws: samples) : .sampled(draws: samples)) : .topK(k: k)))
}

/// Writes `seqs` as a one-partition cache.
@discardableResult
func writeCache(_ dir: String, _ seqs: [TeacherLikeGenerator.Sequence], vocab: Int, k: Int, samples: Int = 0,
                options: WriterOptions = WriterOptions()) throws -> CacheManifest {
    let w = try CacheWriter(directory: dir, description: description(vocab: vocab, k: k, samples: samples), options: options)
    for s in seqs { try w.append(s) }
    return try w.finish()
}

/// The quantiser of FORMAT.md section 5 as an independent reference: Q is the integer nearest
/// to N/m (N = -l·2^b, exact in double), ties away from zero, found by comparing the exact
/// distances |q·m - N| instead of dividing; the decoded value is float32(-Q·m·2^-b).
func referenceQuantized(_ l: Float, stepLog2 b: Int, multiplier m: Int = 1) -> Double {
    let n = -Double(l) * Double(1 << b), md = Double(m)
    let q: Double
    if n >= 16_777_215 * md { q = 16_777_215 }
    else if n <= 0 { q = 0 }
    else {
        // Safe: q·m and n are exact doubles (q < 2^24, m < 2^8), and so are their differences here.
        var best = (n / md).rounded(.down) - 1
        for c in [best + 1, best + 2] where abs(c * md - n) <= abs(best * md - n) { best = c }
        q = Swift.min(best, 16_777_215)
    }
    return Double(Float(-q * md / Double(1 << b)))
}

/// The cache's files in `dir`: everything but the writers' lock files (`.lock.*`), which
/// hold no data and stay after a writer ends.
func cacheFiles(_ dir: String) throws -> [String] {
    try FileManager.default.contentsOfDirectory(atPath: dir).filter { !$0.hasPrefix(".lock.") }.sorted()
}

/// Every cache file in `dir` as bytes, by name.
func snapshot(_ dir: String) throws -> [String: [UInt8]] {
    var out: [String: [UInt8]] = [:]
    for n in try cacheFiles(dir) {
        out[n] = Array(try Data(contentsOf: URL(fileURLWithPath: dir + "/" + n)))
    }
    return out
}

/// Applies each forgery to a copy of the one-shard cache `base`; the reader must refuse it with
/// an error naming the shard and containing the forgery's message, and verify must find it.
func expectForgeriesRefused(_ base: String, _ forgeries: [(String, ShardRewrite, String)]) throws {
    let shard = CacheWriter.shardName(partition: 0, index: 0)
    for (what, rewrite, message) in forgeries {
        let dir = freshDirectory("forged")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for n in try FileManager.default.contentsOfDirectory(atPath: base) {
            try FileManager.default.copyItem(atPath: base + "/" + n, toPath: dir + "/" + n)
        }
        try rewriteCache(dir, rewrite)
        do { try FaultTests.readAll(dir); Issue.record("reader accepted \(what)") } catch let e as ShardFormatError {
            #expect("\(e)".contains(shard) && "\(e)".contains(message), "\(what): \(e)")
        }
        let rep = CacheVerifier.verify(directory: dir)
        #expect(!rep.isSound && rep.problems.contains { $0.contains(shard) }, "\(what): \(rep.problems)")
    }
}
