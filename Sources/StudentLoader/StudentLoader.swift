import Foundation
import ShardFormat

/// One batch of loss-ready student inputs and teacher targets (B windows of T tokens, k slots).
///
/// Layouts match `DistillationTargets` (`Sources/Kernels/Losses.swift`): pass `labels` as the
/// labels, `targetIDs`/`targetWeights` (and `tailMass` for ``TargetMode/tail``) as the targets,
/// kind `.sparse` for ``TargetMode/renormalized`` and ``TargetMode/sampled``, `.sparseWithTail`
/// for ``TargetMode/tail``. Slot (b, t, j) is valid iff `j < entryCounts[b, t]`, equivalently
/// `targetIDs[b, t, j] >= 0`. Reused by ``StudentLoader/next(into:)`` to avoid allocations.
public final class Batch {
    public private(set) var batchSize = 0, contextLength = 0, k = 0
    /// Epoch and index inside the epoch (this rank's batches) of this batch.
    public internal(set) var epoch = 0, index = 0
    /// [B] window index in the loader's ``WindowTable`` per row, −1 for a padding window.
    public internal(set) var windows: [Int32] = []
    /// [B, T] input ids; 0 where padded.
    public internal(set) var inputIDs: [Int32] = []
    /// [B, T] next-token ids; −1 where padded and at each sequence's last token (the cache does
    /// not store the id following a sequence).
    public internal(set) var labels: [Int32] = []
    /// [B, T, k] teacher ids, −1 in unused slots.
    public internal(set) var targetIDs: [Int32] = []
    /// [B, T, k] weights: renormalised probabilities, exact probabilities (tail mode) or
    /// count/N (sampled); 0 in unused slots.
    public internal(set) var targetWeights: [Float] = []
    /// [B, T] uncovered mass per token (tail mode; 0 otherwise and where padded).
    public internal(set) var tailMass: [Float] = []
    /// [B, T] valid slots per token.
    public internal(set) var entryCounts: [Int32] = []
    /// Real (unpadded) tokens in the batch.
    public internal(set) var tokenCount = 0

    public init() {}

    /// FNV-1a 64 over the little-endian bytes of every array, for comparing loaders and runs.
    public var digest: UInt64 {
        var bytes: [UInt8] = []
        func eat<E>(_ a: [E]) { a.withUnsafeBytes { bytes += $0 } }
        eat(windows); eat(inputIDs); eat(labels); eat(targetIDs); eat(targetWeights); eat(tailMass); eat(entryCounts)
        return fnv1a(bytes)
    }

    func shape(B: Int, T: Int, k: Int) {
        if batchSize != B || contextLength != T || self.k != k {
            batchSize = B; contextLength = T; self.k = k
            windows = .init(repeating: -1, count: B)
            inputIDs = .init(repeating: 0, count: B * T); labels = .init(repeating: -1, count: B * T)
            targetIDs = .init(repeating: -1, count: B * T * k); targetWeights = .init(repeating: 0, count: B * T * k)
            tailMass = .init(repeating: 0, count: B * T); entryCounts = .init(repeating: 0, count: B * T)
        }
        tokenCount = 0
    }

    /// Copies `r` into row b (tokens 0..<n) and pads tokens n..<T; `nil` pads the whole row.
    func put(_ r: WindowRows?, row b: Int, window: Int32) {
        let T = contextLength, K = k, n = r?.n ?? 0
        windows[b] = window
        tokenCount += n
        func copy<E>(_ dst: inout [E], _ src: UnsafeMutablePointer<E>?, at o: Int, width: Int, pad: E) {
            dst.withUnsafeMutableBufferPointer { d in
                // Safe because row b spans T·width values of dst and src holds n·width <= T·width.
                if let src { (d.baseAddress! + o).update(from: src, count: n * width) }
                (d.baseAddress! + o + n * width).update(repeating: pad, count: (T - n) * width)
            }
        }
        copy(&inputIDs, r?.inputIDs, at: b * T, width: 1, pad: 0)
        copy(&labels, r?.labels, at: b * T, width: 1, pad: -1)
        copy(&targetIDs, r?.ids, at: b * T * K, width: K, pad: -1)
        copy(&targetWeights, r?.weights, at: b * T * K, width: K, pad: 0)
        copy(&tailMass, r?.tail, at: b * T, width: 1, pad: 0)
        copy(&entryCounts, r?.counts, at: b * T, width: 1, pad: 0)
    }
}

/// Streams a cache as shuffled, resumable, rank-partitioned batches.
///
/// The order of every epoch is ``EpochOrder`` (a pure function of manifest, seed, epoch and the
/// configuration): blocks shuffled, then a bounded shuffle buffer. Decoding and target
/// conversion run on ``LoaderConfiguration/decodeThreads`` worker threads, at most
/// ``LoaderConfiguration/prefetchBlocks`` blocks ahead; decoded windows wait in memory only
/// until their turn, so memory is bounded by the prefetch depth and the shuffle buffer, not by
/// the cache. Epochs follow each other without end; ``state`` after any batch restores the
/// exact position. Not thread-safe: one consumer.
public final class StudentLoader {
    public let reader: CacheReader
    public let configuration: LoaderConfiguration
    public let table: WindowTable
    private let unitOf: [Int32]
    private let cacheID: String
    private let converter: TargetConverter
    /// Epoch and batch index of the next batch.
    public private(set) var epoch = 0, batchIndex = 0
    private var order: [Int32] = []
    private var pipeline: Pipeline?
    /// Window rows kept across epochs and seeks, so a new epoch does not fault in fresh memory.
    private let rowPool: RowPool

    /// Opens `directory` and checks it against the student and the configuration.
    /// - Throws: ``LoaderError`` (tokenizer or vocabulary mismatch, k above the cache's K, no
    ///   samples for sampled mode, bad configuration) or ``ShardFormatError`` from opening.
    public convenience init(cache directory: String, configuration: LoaderConfiguration, student: StudentVocabulary?) throws {
        try configuration.validate()
        if let s = student {
            let m = try CacheManifest.load(directory: directory)
            try Self.check(m, directory: directory, student: s)
        }
        try self.init(reader: CacheReader(directory: directory), configuration: configuration, student: student)
    }

    /// Uses an open reader (shared between loaders in one process).
    public init(reader: CacheReader, configuration c: LoaderConfiguration, student: StudentVocabulary?) throws {
        try c.validate()
        let dir = reader.directory
        if let s = student { try Self.check(reader.manifest, directory: dir, student: s) }
        if c.mode == .sampled {
            guard reader.maxSamples > 0 else { throw LoaderError.unsupported(cache: dir, reason: "sampled targets asked for, but the cache stores no samples") }
            guard reader.manifest.capture.policy != "head-tail" else {
                throw LoaderError.unsupported(cache: dir, reason: "a head-tail cache draws its samples from the mass outside the head; the sampled estimator needs draws from the whole distribution (capture with --policy sampled or top-k+sampled)")
            }
            guard c.k >= reader.maxSamples else {
                throw LoaderError.unsupported(cache: dir, reason: "k = \(c.k) slots cannot hold up to \(reader.maxSamples) sampled ids per token; use k >= \(reader.maxSamples)")
            }
        } else if c.k > reader.maxEntries {
            throw LoaderError.unsupported(cache: dir, reason: "k = \(c.k) exceeds the cache's K = \(reader.maxEntries)")
        }
        self.reader = reader; configuration = c
        table = try WindowTable(reader: reader, contextLength: c.contextLength)
        unitOf = table.unitOfWindow()
        cacheID = reader.manifest.checksum
        converter = TargetConverter(k: c.k, mode: c.mode, invTau: 1 / c.temperature)
        rowPool = RowPool(capacity: c.contextLength, k: c.k)
        try seek(epoch: 0, batch: 0)
        guard !order.isEmpty else {
            throw LoaderError.unsupported(cache: dir, reason: "\(table.windows.count) windows of \(c.contextLength) tokens give rank \(c.rank) of \(c.worldSize) no batch of \(c.batchSize)")
        }
    }

    deinit { pipeline?.stop() }

    private static func check(_ m: CacheManifest, directory: String, student s: StudentVocabulary) throws {
        guard m.fingerprints.tokenizer == s.tokenizerFingerprint else {
            throw LoaderError.tokenizerMismatch(cache: directory, cacheFingerprint: m.fingerprints.tokenizer, student: s.tokenizerFingerprint)
        }
        guard m.vocabularySize == s.vocabularySize else {
            throw LoaderError.vocabularyMismatch(cache: directory, cacheSize: m.vocabularySize, student: s.vocabularySize)
        }
    }

    /// This rank's batches in the current epoch (equal for all ranks of an epoch).
    public var batchesInEpoch: Int { order.count / configuration.batchSize }

    /// The position as a small serialisable value; ``resume(from:)`` continues from it.
    public var state: LoaderState {
        LoaderState(epoch: epoch, batch: batchIndex, configuration: configuration.fingerprint, cache: cacheID)
    }

    /// Continues exactly where `state` was taken.
    /// - Throws: ``LoaderError/stateMismatch(_:)`` if the state belongs to another
    ///   configuration or cache, or points past its epoch.
    public func resume(from s: LoaderState) throws {
        guard s.version == 1 else { throw LoaderError.stateMismatch("version \(s.version) is not 1") }
        guard s.configuration == configuration.fingerprint else {
            throw LoaderError.stateMismatch("made for configuration \(s.configuration), this loader has \(configuration.fingerprint) (batch, T, k, mode, τ, seed, rank, world size, buffer or remainder differ)")
        }
        guard s.cache == cacheID else { throw LoaderError.stateMismatch("made for cache \(s.cache), this cache is \(cacheID)") }
        try seek(epoch: s.epoch, batch: s.batch)
    }

    /// Moves to batch `batch` of epoch `epoch` (0 ..< its batch count; the count itself means
    /// the start of the next epoch).
    public func seek(epoch e: Int, batch b: Int) throws {
        guard e >= 0 else { throw LoaderError.stateMismatch("epoch \(e) < 0") }
        let c = configuration
        let o = EpochOrder.windows(table: table, seed: c.seed, epoch: e, rank: c.rank, worldSize: c.worldSize,
                                   shuffleBuffer: c.shuffleBuffer, batchSize: c.batchSize, remainder: c.remainder)
        guard (0...(o.count / c.batchSize)).contains(b) else {
            throw LoaderError.stateMismatch("batch \(b) outside epoch \(e)'s 0...\(o.count / c.batchSize)")
        }
        pipeline?.stop()
        epoch = e; batchIndex = b; order = o
        pipeline = Pipeline(loader: self, order: o, from: b * c.batchSize, pool: rowPool)
    }

    /// The next batch (epochs follow each other without end), written into `batch`.
    /// - Throws: ``LoaderError/cache(_:)`` naming shard and chunk when the cache is damaged.
    public func next(into batch: Batch) throws {
        let B = configuration.batchSize
        if batchIndex >= batchesInEpoch { try seek(epoch: epoch + 1, batch: 0) }
        guard let p = pipeline else { throw LoaderError.stateMismatch("no pipeline") }
        batch.shape(B: B, T: configuration.contextLength, k: configuration.k)
        batch.epoch = epoch; batch.index = batchIndex
        let ws = order[(batchIndex * B)..<(batchIndex * B + B)]
        let rows = try p.take(ws)
        for (b, w) in ws.enumerated() { batch.put(w >= 0 ? rows[b] : nil, row: b, window: w) }
        p.recycle(rows)
        batchIndex += 1
    }

    /// The next batch in a fresh ``Batch``.
    public func next() throws -> Batch {
        let b = Batch()
        try next(into: b)
        return b
    }

    /// Decodes one unit's needed windows into `out` (one per window; runs on a worker thread).
    fileprivate func decode(_ windows: [Int32], into tb: TargetBatch, rows out: [WindowRows]) throws {
        var lo = Int.max, hi = 0
        for w in windows {
            let x = table.windows[Int(w)]
            lo = min(lo, x.firstToken)
            let end = x.firstToken + x.length
            hi = max(hi, end < x.sequenceEnd ? end + 1 : end)
        }
        let sampled = configuration.mode == .sampled
        do { try reader.decode(tokens: lo..<hi, k: sampled ? 0 : configuration.k, samples: sampled, into: tb) }
        catch let e as ShardFormatError { throw LoaderError.cache(e) }
        for (w, r) in zip(windows, out) { converter.rows(table.windows[Int(w)], from: tb, base: lo, into: r) }
    }

    fileprivate func unit(of w: Int32) -> Int { Int(unitOf[Int(w)]) }
}

/// Background decoding of one epoch's remaining units in the order they are first needed.
///
/// Workers claim units in that order, at most `prefetchBlocks` beyond the last unit the consumer
/// has needed, and convert each window into a ``WindowRows`` from a free list; the consumer
/// takes a batch's windows under one lock, copies them into its ``Batch`` and hands the rows
/// back. Rows in flight are bounded by the prefetch depth and the shuffle buffer.
private final class Pipeline: @unchecked Sendable {
    // Sendable because every mutable field is guarded by `cond`.
    private let cond = NSCondition()
    private var jobs: [[Int32]] = []       // [jobs] windows needed from each unit, in need order
    private var jobOfWindow: [Int32]           // [windows] job holding each window, −1 if none
    private var ready: [Int32: WindowRows] = [:]   // converted windows not yet taken
    private var failures: [Int: Error] = [:]
    private var claimed = 0, needed = 0, stopped = false   // needed: jobs the consumer has reached
    private let pool: RowPool
    private let depth: Int

    init(loader: StudentLoader, order: [Int32], from start: Int, pool: RowPool) {
        let c = loader.configuration
        depth = c.prefetchBlocks; self.pool = pool
        var jobOfUnit: [Int: Int] = [:]
        jobOfWindow = .init(repeating: -1, count: loader.table.windows.count)
        for w in order[start...] where w >= 0 {
            let u = loader.unit(of: w)
            let j: Int
            if let i = jobOfUnit[u] { j = i; jobs[j].append(w) } else { j = jobs.count; jobOfUnit[u] = j; jobs.append([w]) }
            jobOfWindow[Int(w)] = Int32(j)
        }
        for _ in 0..<c.decodeThreads {
            // The thread holds the loader weakly (strongly only while decoding a unit), so
            // dropping the loader runs its deinit, which stops the work.
            let t = Thread { [weak loader, self] in self.work { loader } }
            t.stackSize = 1 << 20
            t.start()
        }
    }

    /// Stops the workers (each finishes its unit) and hands the rows not taken back to the pool.
    func stop() {
        cond.lock()
        stopped = true
        let rows = Array(ready.values)
        ready.removeAll()
        cond.broadcast(); cond.unlock()
        pool.put(rows)
    }

    private func work(_ loader: () -> StudentLoader?) {
        let tb = TargetBatch()
        while true {
            cond.lock()
            while !stopped && claimed < jobs.count && claimed >= needed + depth { cond.wait() }
            if stopped || claimed >= jobs.count { cond.unlock(); return }
            let j = claimed
            claimed += 1
            let ws = jobs[j]
            cond.unlock()
            let rows = pool.take(ws.count)
            do {
                guard let l = loader() else { return }
                try l.decode(ws, into: tb, rows: rows)
                cond.lock()
                for (w, r) in zip(ws, rows) { ready[w] = r }
            } catch {
                pool.put(rows)
                cond.lock()
                failures[j] = error
            }
            cond.broadcast(); cond.unlock()
        }
    }

    /// The rows of windows `ws` (−1: padding, gets no rows), waiting for their units if needed.
    /// - Throws: the error of the first failed unit the consumer reaches.
    func take(_ ws: ArraySlice<Int32>) throws -> [WindowRows?] {
        cond.lock()
        defer { cond.unlock() }
        var out: [WindowRows?] = []
        out.reserveCapacity(ws.count)
        for w in ws {
            if w < 0 { out.append(nil); continue }
            let j = Int(jobOfWindow[Int(w)])
            guard j >= 0 else { throw LoaderError.stateMismatch("window \(w) was not planned") }
            if j >= needed { needed = j + 1; cond.broadcast() }
            while ready[w] == nil {
                // After a failure the workers stop: units never claimed will not come. Rows
                // already taken go back, so a retry of this batch finds them.
                if let e = failures[j] ?? (stopped && j >= claimed ? failures.min { $0.key < $1.key }?.value : nil) {
                    stopped = true; cond.broadcast()
                    for (v, r) in zip(ws, out) { if let r { ready[v] = r } }
                    throw e
                }
                cond.wait()
            }
            // Safe because the loop above waited for this key.
            out.append(ready.removeValue(forKey: w)!)
        }
        return out
    }

    /// Hands rows back once their contents were copied out.
    func recycle(_ rows: [WindowRows?]) { pool.put(rows.compactMap { $0 }) }
}

/// Free ``WindowRows`` of one shape (T tokens, k slots), shared by a loader's pipelines.
/// Holds at most as many rows as were ever in flight at once.
private final class RowPool: @unchecked Sendable {
    // Sendable because `free` is only touched under `lock`.
    private let lock = NSLock()
    private var free: [WindowRows] = []
    private let T: Int, k: Int

    init(capacity T: Int, k: Int) { self.T = T; self.k = k }

    /// n rows, reused where possible, new otherwise.
    func take(_ n: Int) -> [WindowRows] {
        lock.lock()
        let reuse = min(n, free.count)
        var rows = Array(free.suffix(reuse))
        free.removeLast(reuse)
        lock.unlock()
        while rows.count < n { rows.append(WindowRows(capacity: T, k: k)) }
        return rows
    }

    func put(_ rows: [WindowRows]) { lock.lock(); free += rows; lock.unlock() }
}
