import Truncation
import Foundation
import SyntheticData
import Testing
import TestSupport
import ShardFormat
@testable import StudentLoader
import Random

/// A small cache of generated sequences of mixed lengths (0, 1, shorter and longer than T) over
/// several shards and many small blocks; returns the directory and the sequences as written.
func smallCache(_ tag: String, sequences n: Int = 23, samples: Int = 0, k: Int = 8) throws -> (String, [TeacherLikeGenerator.Sequence]) {
    let dir = freshDirectory(tag)
    let g = TeacherLikeGenerator(vocabularySize: 500, k: k, seed: 11, draws: samples)
    var rng = SplitMix64(seed: 5)
    let seqs = (0..<n).map { i in g.sequence(i, length: i == 3 ? 0 : i == 4 ? 1 : Int(rng.next() % 70)) }
    let desc = CacheDescription(vocabularySize: 500, fingerprints: Fingerprints(teacher: "t", tokenizer: "tok-a", corpus: "c"),
                                capture: CaptureSettings(policy: samples > 0 ? .topKAndSampled(k: k, draws: samples) : .topK(k: k)))
    let w = try CacheWriter(directory: dir, description: desc,
                            options: WriterOptions(logProbs: .float32, blockTokens: 32, targetShardBytes: 4096))
    for s in seqs { try w.append(s) }
    _ = try w.finish()
    return (dir, seqs)
}

func config(B: Int = 3, T: Int = 16, k: Int = 4, mode: TargetMode = .renormalized, seed: UInt64 = 1, rank: Int = 0, world: Int = 1,
            buffer: Int = 5, remainder: RemainderPolicy = .pad, threads: Int = 1, prefetch: Int = 2) -> LoaderConfiguration {
    LoaderConfiguration(batchSize: B, contextLength: T, k: k, mode: mode, seed: seed, rank: rank, worldSize: world,
                        shuffleBuffer: buffer, remainder: remainder, decodeThreads: threads, prefetchBlocks: prefetch)
}

/// Every array of a batch, copied, for exact comparisons.
struct Snapshot: Equatable {
    var epoch: Int, index: Int, windows: [Int32], input: [Int32], labels: [Int32], ids: [Int32], w: [Float], tail: [Float], counts: [Int32]
    init(_ b: Batch) {
        epoch = b.epoch; index = b.index; windows = b.windows; input = b.inputIDs; labels = b.labels
        ids = b.targetIDs; w = b.targetWeights; tail = b.tailMass; counts = b.entryCounts
    }
}

func epochWindows(_ l: StudentLoader) throws -> [Int32] {
    var out: [Int32] = []
    let b = Batch()
    for _ in 0..<l.batchesInEpoch { try l.next(into: b); out += b.windows }
    return out
}

@Suite struct OrderTests {
    @Test func everyWindowExactlyOncePerEpochWithItsTokensAndLabels() throws {
        let (dir, seqs) = try smallCache("once")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let l = try StudentLoader(cache: dir, configuration: config(), student: nil)
        // Independent picture of the cache: tokens in write order and each token's label.
        var flat: [Int32] = [], label: [Int32] = []
        for s in seqs { flat += s.inputIDs; label += s.inputIDs.indices.map { $0 + 1 < s.count ? s.inputIDs[$0 + 1] : -1 } }
        #expect(l.table.windows.reduce(0) { $0 + $1.length } == flat.count)
        let b = Batch()
        var seen: [Int32] = []
        for _ in 0..<l.batchesInEpoch {
            try l.next(into: b)
            for r in 0..<b.batchSize {
                let w = b.windows[r]
                if w < 0 { #expect(b.labels[(r * 16)..<(r * 16 + 16)].allSatisfy { $0 == -1 }); continue }
                seen.append(w)
                let x = l.table.windows[Int(w)]
                for t in 0..<16 {
                    let i = r * 16 + t
                    if t < x.length {
                        #expect(b.inputIDs[i] == flat[x.firstToken + t])
                        #expect(b.labels[i] == label[x.firstToken + t])
                    } else {
                        #expect(b.labels[i] == -1 && b.entryCounts[i] == 0 && b.targetIDs[(i * 4)..<(i * 4 + 4)].allSatisfy { $0 == -1 })
                    }
                }
            }
        }
        #expect(seen.sorted() == (0..<Int32(l.table.windows.count)).map { $0 })
    }

    @Test func epochsDifferAndSeedsRepeat() throws {
        let (dir, _) = try smallCache("epochs")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let a = try StudentLoader(cache: dir, configuration: config(), student: nil)
        let e0 = try epochWindows(a), e1 = try epochWindows(a)
        #expect(e0 != e1)
        #expect(e0.filter { $0 >= 0 }.sorted() == e1.filter { $0 >= 0 }.sorted())
        // Same seed, other thread count and prefetch depth: identical batches, bit for bit.
        let b = try StudentLoader(cache: dir, configuration: config(threads: 2, prefetch: 1), student: nil)
        let c = try StudentLoader(cache: dir, configuration: config(threads: 1, prefetch: 7), student: nil)
        let x = Batch(), y = Batch()
        for _ in 0..<(2 * b.batchesInEpoch) {
            try b.next(into: x); try c.next(into: y)
            #expect(Snapshot(x) == Snapshot(y))
        }
        let d = try StudentLoader(cache: dir, configuration: config(seed: 2), student: nil)
        #expect(try epochWindows(d) != e0)
    }

    @Test func resumeAfterEveryStepEqualsTheUninterruptedRun() throws {
        let (dir, _) = try smallCache("resume")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let c = config(mode: .tail)
        let l = try StudentLoader(cache: dir, configuration: c, student: nil)
        var states: [Data] = [], snaps: [Snapshot] = []
        let steps = 2 * l.batchesInEpoch + 2
        for _ in 0..<steps {
            states.append(try JSONEncoder().encode(l.state))
            snaps.append(Snapshot(try l.next()))
        }
        #expect(states.allSatisfy { $0.count < 300 })
        for s in 0..<steps {
            let r = try StudentLoader(cache: dir, configuration: c, student: nil)
            try r.resume(from: JSONDecoder().decode(LoaderState.self, from: states[s]))
            for t in s..<min(steps, s + 4) { #expect(Snapshot(try r.next()) == snaps[t]) }
        }
        var other = c; other.seed = 9
        let o = try StudentLoader(cache: dir, configuration: other, student: nil)
        #expect(throws: LoaderError.self) { try o.resume(from: JSONDecoder().decode(LoaderState.self, from: states[1])) }
    }

    /// Worker threads must not keep a dropped loader (and its decoded rows) alive mid-epoch.
    @Test func aDroppedLoaderIsReleasedMidEpoch() throws {
        let (dir, _) = try smallCache("drop")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        weak var weakLoader: StudentLoader?
        do {
            let l = try StudentLoader(cache: dir, configuration: config(threads: 2, prefetch: 2), student: nil)
            _ = try l.next()
            weakLoader = l
        }
        // A worker holds it strongly only while decoding one unit.
        for _ in 0..<200 where weakLoader != nil { usleep(10_000) }
        #expect(weakLoader == nil)
    }

    @Test(arguments: [RemainderPolicy.pad, .drop])
    func ranksAreDisjointCompleteAndEqual(remainder: RemainderPolicy) throws {
        let (dir, _) = try smallCache("ranks", sequences: 40)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let n = 3
        var all: [Int32] = [], counts: [Int] = []
        for r in 0..<n {
            let l = try StudentLoader(cache: dir, configuration: config(B: 2, rank: r, world: n, remainder: remainder), student: nil)
            let ws = try epochWindows(l)
            counts.append(ws.count)
            all += ws.filter { $0 >= 0 }
        }
        let W = try StudentLoader(cache: dir, configuration: config(), student: nil).table.windows.count
        #expect(Set(counts).count == 1)
        #expect(Set(all).count == all.count)   // disjoint
        if remainder == .pad { #expect(all.count == W) } else { #expect(all.count <= W && all.count > W - n * 2 - 3 * 4 * n) }
    }
}

@Suite struct TargetTests {
    /// One sequence of two tokens whose entries are exact float32 log-probs.
    func handCache(_ tag: String, samples: Bool = false) throws -> String {
        let dir = freshDirectory(tag)
        let desc = CacheDescription(vocabularySize: 50, fingerprints: Fingerprints(teacher: "t", tokenizer: "tok-a", corpus: "c"),
                                    capture: CaptureSettings(policy: samples ? .topKAndSampled(k: 3, draws: 4) : .topK(k: 3)))
        let w = try CacheWriter(directory: dir, description: desc, options: WriterOptions(logProbs: .float32))
        try w.beginSequence(documentKey: DocumentHash(high: 1, low: 2), documentOffset: 0)
        let lp: [Float] = [log(0.5), log(0.25), log(0.125)]
        try w.appendToken(inputID: 7, nextTokenLogProb: -1, logSumExp: 3, entryIDs: [4, 9, 2][...], entryLogProbs: lp[...],
                          sampleIDs: (samples ? [9, 4] : [])[...], sampleDraws: (samples ? [3, 1] : [])[...])
        try w.appendToken(inputID: 8, nextTokenLogProb: -1, logSumExp: 3, entryIDs: [][...], entryLogProbs: [][...],
                          sampleIDs: [][...], sampleDraws: [][...])
        try w.endSequence()
        _ = try w.finish()
        return dir
    }

    func first(_ dir: String, k: Int, mode: TargetMode, tau: Double = 1) throws -> Batch {
        var c = config(B: 1, T: 4, k: k, mode: mode, buffer: 1)
        c.temperature = tau
        return try StudentLoader(cache: dir, configuration: c, student: nil).next()
    }

    @Test func renormalisedTailAndTemperatureByHand() throws {
        let dir = try handCache("hand")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // Renormalised top-2 of (1/2, 1/4, 1/8): (2/3, 1/3); ids padded with −1.
        var b = try first(dir, k: 2, mode: .renormalized)
        #expect(b.inputIDs[0..<2] == [7, 8] && b.labels[0..<2] == [8, -1])
        #expect(b.targetIDs[0..<2] == [4, 9] && b.entryCounts[0..<2] == [2, 0] && b.targetIDs[2..<4] == [-1, -1])
        #expect(abs(b.targetWeights[0] - 2.0 / 3) < 1e-6 && abs(b.targetWeights[1] - 1.0 / 3) < 1e-6)
        // Tail bucket: exact probabilities and 1 − Σp; a row without entries has tail 1.
        b = try first(dir, k: 2, mode: .tail)
        #expect(b.targetWeights[0..<2] == [0.5, 0.25] && abs(b.tailMass[0] - 0.25) < 1e-7 && b.tailMass[1] == 1)
        b = try first(dir, k: 3, mode: .tail)
        #expect(b.targetIDs[0..<3] == [4, 9, 2] && abs(b.tailMass[0] - 0.125) < 1e-7)
        // τ = 2 renormalised: √p_i / Σ√p_j, exact for the truncated distribution.
        b = try first(dir, k: 2, mode: .renormalized, tau: 2)
        let r2 = 0.5.squareRoot() / (0.5.squareRoot() + 0.5)
        #expect(abs(Double(b.targetWeights[0]) - r2) < 1e-6 && abs(Double(b.targetWeights[1]) - (1 - r2)) < 1e-6)
        // τ = 2 tail: the uncovered 1/4 counted as (1/4)/(1/4) = 1 id of p_min = 1/4, so its
        // tempered mass is √(1/4) = 1/2; Z = √(1/2) + 1/2 + 1/2.
        b = try first(dir, k: 2, mode: .tail, tau: 2)
        let z = 0.5.squareRoot() + 1
        #expect(abs(Double(b.targetWeights[0]) - 0.5.squareRoot() / z) < 1e-6)
        #expect(abs(Double(b.targetWeights[1]) - 0.5 / z) < 1e-6 && abs(Double(b.tailMass[0]) - 0.5 / z) < 1e-6)
    }

    /// A head-tail cache's samples come from the mass outside the head: the sampled
    /// estimator would be biased, so sampled mode is refused with the reason.
    @Test func headTailSamplesAreRefusedForTheSampledEstimator() throws {
        let dir = freshDirectory("headtail")
        let desc = CacheDescription(vocabularySize: 50, fingerprints: Fingerprints(teacher: "t", tokenizer: "tok-a", corpus: "c"),
                                    capture: CaptureSettings(policy: .headTail(k: 3, draws: 4)))
        let w = try CacheWriter(directory: dir, description: desc, options: WriterOptions(logProbs: .float32))
        try w.beginSequence(documentKey: DocumentHash(high: 1, low: 2), documentOffset: 0)
        for id: Int32 in [7, 8] {
            try w.appendToken(inputID: id, nextTokenLogProb: -1, logSumExp: 3, entryIDs: [4][...], entryLogProbs: [-0.5][...],
                              sampleIDs: [9][...], sampleDraws: [4][...])
        }
        try w.endSequence()
        _ = try w.finish()
        #expect(throws: LoaderError.self) { try first(dir, k: 4, mode: .sampled) }
        _ = try first(dir, k: 1, mode: .renormalized)
    }

    @Test func sampledWeightsAreCountsOverDraws() throws {
        let dir = try handCache("sampled", samples: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let b = try first(dir, k: 4, mode: .sampled)
        #expect(b.targetIDs[0..<4] == [9, 4, -1, -1] && b.targetWeights[0..<4] == [0.75, 0.25, 0, 0] && b.entryCounts[0..<2] == [2, 0])
        #expect(throws: LoaderError.self) { try first(dir, k: 3, mode: .sampled) }   // fewer slots than maxSamples
        #expect(throws: LoaderError.self) { try first(dir, k: 4, mode: .sampled, tau: 2) }
    }

    @Test func temperatureMatchesADoubleReferenceOnGeneratedRows() throws {
        let (dir, seqs) = try smallCache("tau")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var lps: [[Float]] = []   // stored entries per global token
        for s in seqs { for t in 0..<s.count { lps.append(Array(s.entryLogProbs[s.entryOffsets[t]..<s.entryOffsets[t + 1]])) } }
        for (mode, tau) in [(TargetMode.renormalized, 0.7), (.tail, 1.0), (.tail, 1.6)] {
            var c = config(B: 2, k: 5, mode: mode); c.temperature = tau
            let l = try StudentLoader(cache: dir, configuration: c, student: nil)
            let b = try l.next()
            for r in 0..<2 where b.windows[r] >= 0 {
                let x = l.table.windows[Int(b.windows[r])]
                for t in 0..<x.length {
                    let e = lps[x.firstToken + t].prefix(5).map(Double.init), i = r * 16 + t
                    if e.isEmpty { continue }
                    let a = e.map { exp($0 / tau) }
                    var z = a.reduce(0, +), tail = 0.0
                    if mode == .tail {
                        let m = max(0, 1 - e.map { exp($0) }.reduce(0, +))
                        tail = m * pow(exp(e[e.count - 1]), 1 / tau - 1)
                        z += tail
                    }
                    for j in 0..<e.count { #expect(abs(Double(b.targetWeights[i * 5 + j]) - a[j] / z) < 2e-6) }
                    #expect(abs(Double(b.tailMass[i]) - tail / z) < 2e-6)
                }
            }
        }
    }
}

@Suite struct CheckTests {
    @Test func refusesAnotherTokenizerOrVocabulary() throws {
        let (dir, _) = try smallCache("refuse")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(throws: LoaderError.tokenizerMismatch(cache: dir, cacheFingerprint: "tok-a", student: "tok-b")) {
            try StudentLoader(cache: dir, configuration: config(), student: StudentVocabulary(tokenizerFingerprint: "tok-b", vocabularySize: 500))
        }
        #expect(throws: LoaderError.vocabularyMismatch(cache: dir, cacheSize: 500, student: 501)) {
            try StudentLoader(cache: dir, configuration: config(), student: StudentVocabulary(tokenizerFingerprint: "tok-a", vocabularySize: 501))
        }
        _ = try StudentLoader(cache: dir, configuration: config(), student: StudentVocabulary(tokenizerFingerprint: "tok-a", vocabularySize: 500))
        #expect(throws: LoaderError.self) { try StudentLoader(cache: dir, configuration: config(k: 9), student: nil) }
        #expect(throws: LoaderError.self) { try StudentLoader(cache: dir, configuration: config(rank: 2, world: 2), student: nil) }
    }

    @Test func aDamagedChunkStopsTheRunNamingShardAndChunk() throws {
        let (dir, _) = try smallCache("damage")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let m = try CacheManifest.load(directory: dir)
        let shard = dir + "/" + m.shards[0].file
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: shard)))
        bytes[20] ^= 0xFF   // inside block 0's first chunk
        try Data(bytes).write(to: URL(fileURLWithPath: shard))
        let l = try StudentLoader(cache: dir, configuration: config(), student: nil)
        var message = ""
        do { for _ in 0..<l.batchesInEpoch { _ = try l.next() } } catch { message = "\(error)" }
        #expect(message.contains(m.shards[0].file) && message.contains("block 0"))
        // Asking again gives the same error (the batch's other windows are kept), not a hang.
        var again = ""
        do { _ = try l.next() } catch { again = "\(error)" }
        #expect(again == message)
    }
}
