import Foundation
import SyntheticData
import Testing
import TestSupport
import ShardFormat
import Truncation
@testable import StudentLoader

/// Runs `world` loaders of one layout for `batches` each, returning the windows they handed out
/// and the segment that records it.
private func runLayout(_ dir: String, world: Int, B: Int, buffer: Int, batches: Int, epoch: Int,
                       after earlier: [EpochSegment]) throws -> (windows: [Int32], segment: EpochSegment) {
    var out: [Int32] = [], consumed: [Int] = []
    var order = ""
    for r in 0..<world {
        let l = try StudentLoader(cache: dir, configuration: config(B: B, rank: r, world: world, buffer: buffer), student: nil)
        try l.resume(from: LoaderState(epoch: epoch, batch: 0, configuration: l.configuration.fingerprint, cache: l.reader.manifest.checksum,
                                       segments: earlier))
        let n = min(batches, l.batchesInEpoch)
        let b = Batch()
        for _ in 0..<n { try l.next(into: b); out += b.windows }
        consumed.append(n * B)
        order = l.configuration.orderFingerprint
    }
    return (out, EpochSegment(worldSize: world, batchSize: B, shuffleBuffer: buffer, remainder: .pad, consumed: consumed, order: order))
}

@Suite struct ElasticResumeTests {
    @Test(arguments: [[4, 2], [2, 3, 1], [3, 5], [1, 4]])
    func everyWindowOnceAcrossWorldSizes(worlds: [Int]) throws {
        let (dir, _) = try smallCache("elastic", sequences: 40)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let total = try StudentLoader(cache: dir, configuration: config(), student: nil).table.windows.count
        var segments: [EpochSegment] = [], seen: [Int32] = []
        for (i, w) in worlds.enumerated() {
            // Earlier layouts stop after two batches per rank; the last one runs to the end.
            let last = i == worlds.count - 1
            let (ws, g) = try runLayout(dir, world: w, B: 2 + i, buffer: 3 + i, batches: last ? Int.max : 2, epoch: 1, after: segments)
            seen += ws.filter { $0 >= 0 }
            segments.append(g)
        }
        #expect(seen.count == total)
        #expect(Set(seen).count == total)
    }

    @Test func withoutSegmentsTheOrderIsTheOriginalOne() throws {
        let (dir, _) = try smallCache("elastic-same", sequences: 30)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let l = try StudentLoader(cache: dir, configuration: config(rank: 1, world: 3), student: nil)
        let plain = EpochOrder.windows(table: l.table, seed: 1, epoch: 2, rank: 1, worldSize: 3, shuffleBuffer: 5, batchSize: 3, remainder: .pad)
        let none = try EpochOrder.seen(table: l.table, seed: 1, epoch: 2, segments: [])
        let same = EpochOrder.windows(table: l.table, seed: 1, epoch: 2, rank: 1, worldSize: 3, shuffleBuffer: 5, batchSize: 3,
                                      remainder: .pad, seen: none)
        #expect(plain == same)
        #expect(!plain.isEmpty)
    }

    @Test func resumeStateRoundTripsWithSegments() throws {
        let (dir, _) = try smallCache("elastic-state", sequences: 30)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (_, g) = try runLayout(dir, world: 2, B: 2, buffer: 4, batches: 1, epoch: 0, after: [])
        let l = try StudentLoader(cache: dir, configuration: config(), student: nil)
        let s = LoaderState(epoch: 0, batch: 0, configuration: l.configuration.fingerprint, cache: l.reader.manifest.checksum, segments: [g])
        try l.resume(from: s)
        _ = try l.next()
        let saved = try JSONDecoder().decode(LoaderState.self, from: JSONEncoder().encode(l.state))
        #expect(saved.segments == [g])
        #expect(saved.batch == 1)
        let m = try StudentLoader(cache: dir, configuration: config(), student: nil)
        try m.resume(from: saved)
        let x = try l.next(), y = try m.next()
        #expect(Snapshot(x) == Snapshot(y))
        // A finished epoch forgets its segments.
        while l.batchIndex < l.batchesInEpoch { _ = try l.next() }
        _ = try l.next()
        #expect(l.state.segments == nil && l.state.epoch == 1)
    }

    @Test func refusesSegmentsOfAnotherOrderOrImpossibleCounts() throws {
        let (dir, _) = try smallCache("elastic-bad", sequences: 20)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let l = try StudentLoader(cache: dir, configuration: config(), student: nil)
        func state(_ g: EpochSegment) -> LoaderState {
            LoaderState(epoch: 0, batch: 0, configuration: l.configuration.fingerprint, cache: l.reader.manifest.checksum, segments: [g])
        }
        let own = l.configuration.orderFingerprint
        let other = EpochSegment(worldSize: 1, batchSize: 2, shuffleBuffer: 4, remainder: .pad, consumed: [2], order: "0123456789abcdef")
        #expect(throws: LoaderError.self) { try l.resume(from: state(other)) }
        let tooMany = EpochSegment(worldSize: 2, batchSize: 2, shuffleBuffer: 4, remainder: .pad, consumed: [2, 1_000_000], order: own)
        #expect(throws: LoaderError.self) { try l.resume(from: state(tooMany)) }
        let ragged = EpochSegment(worldSize: 3, batchSize: 2, shuffleBuffer: 4, remainder: .pad, consumed: [2], order: own)
        #expect(throws: LoaderError.self) { try l.resume(from: state(ragged)) }
    }
}

@Suite struct CaptureTemperatureTests {
    /// A cache captured at τ_c.
    private func cache(_ tag: String, temperature: Double, samples: Int = 0) throws -> String {
        let dir = freshDirectory(tag)
        let g = TeacherLikeGenerator(vocabularySize: 300, k: 4, seed: 3, draws: samples)
        let desc = CacheDescription(vocabularySize: 300, fingerprints: Fingerprints(teacher: "t", tokenizer: "tok", corpus: "c"),
                                    capture: CaptureSettings(policy: samples > 0 ? .topKAndSampled(k: 4, draws: samples) : .topK(k: 4),
                                                             temperature: temperature))
        let w = try CacheWriter(directory: dir, description: desc, options: WriterOptions(logProbs: .float32, blockTokens: 16))
        for i in 0..<6 { try w.append(g.sequence(i, length: 20)) }
        _ = try w.finish()
        return dir
    }

    @Test func aTemperedCacheIsReadAtItsTemperatureOnly() throws {
        let dir = try cache("tau2", temperature: 2)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(throws: LoaderError.self) { _ = try StudentLoader(cache: dir, configuration: config(), student: nil) }
        var c = config(); c.temperature = 2
        let l = try StudentLoader(cache: dir, configuration: c, student: nil)
        // At τ = τ_c the stored log-probs are used as they are: weights are their renormalised exponentials.
        let b = try l.next()
        let rows = TargetBatch()
        for r in 0..<b.batchSize where b.windows[r] >= 0 {
            let x = l.table.windows[Int(b.windows[r])]
            try l.reader.decode(tokens: x.firstToken..<(x.firstToken + 1), k: 4, into: rows)
            let e = (0..<Int(rows.entryCounts[0])).map { exp(Double(rows.entryLogProbs[$0])) }
            let z = e.reduce(0, +)
            for j in e.indices { #expect(abs(Double(b.targetWeights[r * 16 * 4 + j]) - e[j] / z) < 1e-6) }
        }
    }

    @Test func sampledTargetsNeedTheCaptureTemperature() throws {
        let dir = try cache("tau1-sampled", temperature: 1, samples: 5)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var c = config(k: 5, mode: .sampled); c.temperature = 2
        #expect(throws: LoaderError.self) { _ = try StudentLoader(cache: dir, configuration: c, student: nil) }
        c.temperature = 1
        _ = try StudentLoader(cache: dir, configuration: c, student: nil)
        // Re-tempering a τ_c = 1 cache stays allowed for exact targets.
        var t = config(); t.temperature = 2
        _ = try StudentLoader(cache: dir, configuration: t, student: nil)
    }
}

@Suite struct LoaderLifetimeTests {
    /// Threads of this process (Linux); nil where /proc is absent.
    private static func threads() -> Int? { (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task"))?.count }

    /// A loader dropped while its workers still decode ahead releases them: a worker holding the
    /// last reference once deadlocked in the loader's deinit (found by the C ABI fuzzer).
    @Test func droppingALoaderMidPrefetchLeavesNoThreadBehind() throws {
        let (dir, _) = try smallCache("lifetime", sequences: 60)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let before = try #require(Self.threads())
        for _ in 0..<60 {
            let l = try StudentLoader(cache: dir, configuration: config(B: 2, threads: 2, prefetch: 4), student: nil)
            _ = try l.next()
        }
        // Workers finish their unit and exit; give them a moment.
        let deadline = Date().addingTimeInterval(10)
        while (Self.threads() ?? 0) > before + 4 && Date() < deadline { usleep(10_000) }
        #expect((Self.threads() ?? 0) <= before + 4, "threads \(before) -> \(Self.threads() ?? -1)")
    }
}
