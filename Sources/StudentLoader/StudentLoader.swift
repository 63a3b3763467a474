import Foundation
import ShardFormat
import Truncation

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

    /// Runs `body` with buffers over this batch's arrays (shaped for B, T, k).
    func withBuffers<R>(_ body: (BatchBuffers) throws -> R) rethrows -> R {
        try windows.withUnsafeMutableBufferPointer { w in
        try inputIDs.withUnsafeMutableBufferPointer { x in
        try labels.withUnsafeMutableBufferPointer { y in
        try targetIDs.withUnsafeMutableBufferPointer { ids in
        try targetWeights.withUnsafeMutableBufferPointer { wt in
        try tailMass.withUnsafeMutableBufferPointer { tl in
        try entryCounts.withUnsafeMutableBufferPointer { ec in
            // Safe because shape(B:T:k:) sized every array (none is empty: B, T >= 1).
            try body(BatchBuffers(windows: w.baseAddress!, inputIDs: x.baseAddress!, labels: y.baseAddress!,
                                  targetIDs: ids.baseAddress ?? UnsafeMutablePointer(bitPattern: 8)!,
                                  targetWeights: wt.baseAddress ?? UnsafeMutablePointer(bitPattern: 8)!,
                                  tailMass: tl.baseAddress!, entryCounts: ec.baseAddress!))
        }}}}}}}
    }
}

/// Caller-owned destination of one batch, in ``Batch``'s layouts: windows [B], inputIDs,
/// labels, tailMass, entryCounts [B, T], targetIDs and targetWeights [B, T, k].
public struct BatchBuffers {
    public var windows: UnsafeMutablePointer<Int32>
    public var inputIDs: UnsafeMutablePointer<Int32>
    public var labels: UnsafeMutablePointer<Int32>
    public var targetIDs: UnsafeMutablePointer<Int32>
    public var targetWeights: UnsafeMutablePointer<Float>
    public var tailMass: UnsafeMutablePointer<Float>
    public var entryCounts: UnsafeMutablePointer<Int32>

    public init(windows: UnsafeMutablePointer<Int32>, inputIDs: UnsafeMutablePointer<Int32>, labels: UnsafeMutablePointer<Int32>,
                targetIDs: UnsafeMutablePointer<Int32>, targetWeights: UnsafeMutablePointer<Float>,
                tailMass: UnsafeMutablePointer<Float>, entryCounts: UnsafeMutablePointer<Int32>) {
        self.windows = windows; self.inputIDs = inputIDs; self.labels = labels; self.targetIDs = targetIDs
        self.targetWeights = targetWeights; self.tailMass = tailMass; self.entryCounts = entryCounts
    }

    /// Copies `r` into row b (tokens 0..<n) and pads tokens n..<T; `nil` pads the whole row.
    /// Returns n.
    func put(_ r: WindowRows?, row b: Int, window: Int32, T: Int, k K: Int) -> Int {
        let n = r?.n ?? 0
        windows[b] = window
        func copy<E>(_ dst: UnsafeMutablePointer<E>, _ src: UnsafeMutablePointer<E>?, width: Int, pad: E) {
            // Safe because row b spans T·width values of dst and src holds n·width <= T·width.
            let d = dst + b * T * width
            if let src { d.update(from: src, count: n * width) }
            (d + n * width).update(repeating: pad, count: (T - n) * width)
        }
        copy(inputIDs, r?.inputIDs, width: 1, pad: 0)
        copy(labels, r?.labels, width: 1, pad: -1)
        copy(targetIDs, r?.ids, width: K, pad: -1)
        copy(targetWeights, r?.weights, width: K, pad: 0)
        copy(tailMass, r?.tail, width: 1, pad: 0)
        copy(entryCounts, r?.counts, width: 1, pad: 0)
        return n
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
    /// Earlier layouts of the current epoch (elastic resume), empty otherwise.
    private var segments: [EpochSegment] = []
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
            if case .headTail = reader.manifest.capture.policy {
                throw LoaderError.unsupported(cache: dir, reason: "a head-tail cache draws its samples from the mass outside the head; the sampled estimator needs draws from the whole distribution (capture with --policy sampled or top-k+sampled)")
            }
            guard c.k >= reader.maxSamples else {
                throw LoaderError.unsupported(cache: dir, reason: "k = \(c.k) slots cannot hold up to \(reader.maxSamples) sampled ids per token; use k >= \(reader.maxSamples)")
            }
        } else if c.k > reader.maxEntries {
            throw LoaderError.unsupported(cache: dir, reason: "k = \(c.k) exceeds the cache's K = \(reader.maxEntries)")
        }
        let captured = reader.manifest.capture.temperature
        if c.temperature != captured && (captured != 1 || c.mode == .sampled) {
            let why = c.mode == .sampled ? "sampled draws were taken at the capture temperature" : "the logits are gone, so stored log-probs cannot be re-tempered exactly"
            throw LoaderError.unsupported(cache: dir, reason: "temperature \(c.temperature) differs from the capture temperature \(captured) (\(why)); use temperature \(captured)")
        }
        self.reader = reader; configuration = c
        table = try WindowTable(reader: reader, contextLength: c.contextLength)
        unitOf = table.unitOfWindow()
        cacheID = reader.manifest.checksum
        // Stored log-probs are at τ_c; re-tempering applies only to a τ_c = 1 cache (checked above).
        converter = TargetConverter(k: c.k, mode: c.mode, invTau: captured == 1 ? 1 / c.temperature : 1)
        rowPool = RowPool(capacity: c.contextLength, k: c.k)
        try seek(epoch: 0, batch: 0)
        guard !order.isEmpty else {
            throw LoaderError.unsupported(cache: dir, reason: "\(table.windows.count) windows of \(c.contextLength) tokens give rank \(c.rank) of \(c.worldSize) no batch of \(c.batchSize)")
        }
    }

    deinit { pipeline?.stop() }

    /// Stops the decode threads and waits until each has finished the unit it was decoding, so
    /// that when the caller drops the loader afterwards nothing of it lives on in other threads
    /// (the cache reader included). ``seek(epoch:batch:)`` starts decoding again; ``next(into:)``
    /// before that throws.
    public func close() {
        pipeline?.stopAndWait()
        pipeline = nil
    }

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
        LoaderState(epoch: epoch, batch: batchIndex, configuration: configuration.fingerprint, cache: cacheID,
                    segments: segments.isEmpty ? nil : segments)
    }

    /// Continues exactly where `state` was taken. A state with ``LoaderState/segments`` resumes
    /// an epoch begun under other layouts (elastic resume): this loader's order then holds only
    /// the windows those layouts did not hand out, and `batch` counts from the resume.
    /// - Throws: ``LoaderError/stateMismatch(_:)`` if the state belongs to another
    ///   configuration or cache, or points past its epoch.
    public func resume(from s: LoaderState) throws {
        guard s.version == 1 else { throw LoaderError.stateMismatch("version \(s.version) is not 1") }
        guard s.configuration == configuration.fingerprint else {
            throw LoaderError.stateMismatch("made for configuration \(s.configuration), this loader has \(configuration.fingerprint) (batch, T, k, mode, τ, seed, rank, world size, buffer or remainder differ)")
        }
        guard s.cache == cacheID else { throw LoaderError.stateMismatch("made for cache \(s.cache), this cache is \(cacheID)") }
        let own = configuration.orderFingerprint
        if let g = s.segments?.first(where: { $0.order != own }) {
            throw LoaderError.stateMismatch("a segment was made with order \(g.order) (context length and seed), this loader has \(own)")
        }
        try seek(epoch: s.epoch, batch: s.batch, after: s.segments ?? [])
    }

    /// Moves to batch `batch` of epoch `epoch` (0 ..< its batch count; the count itself means
    /// the start of the next epoch).
    public func seek(epoch e: Int, batch b: Int) throws { try seek(epoch: e, batch: b, after: []) }

    private func seek(epoch e: Int, batch b: Int, after earlier: [EpochSegment]) throws {
        guard (0...Int(Int32.max)).contains(e) else { throw LoaderError.stateMismatch("epoch \(e) outside 0...\(Int32.max)") }
        let c = configuration
        let seen = earlier.isEmpty ? nil : try EpochOrder.seen(table: table, seed: c.seed, epoch: e, segments: earlier)
        let o = EpochOrder.windows(table: table, seed: c.seed, epoch: e, rank: c.rank, worldSize: c.worldSize,
                                   shuffleBuffer: c.shuffleBuffer, batchSize: c.batchSize, remainder: c.remainder, seen: seen)
        guard (0...(o.count / c.batchSize)).contains(b) else {
            throw LoaderError.stateMismatch("batch \(b) outside epoch \(e)'s 0...\(o.count / c.batchSize)")
        }
        pipeline?.stop()
        epoch = e; batchIndex = b; order = o; segments = earlier
        pipeline = Pipeline(loader: self, order: o, from: b * c.batchSize, pool: rowPool)
    }

    /// The next batch (epochs follow each other without end), written into `batch`.
    /// - Throws: ``LoaderError/cache(_:)`` naming shard and chunk when the cache is damaged.
    public func next(into batch: Batch) throws {
        let c = configuration
        batch.shape(B: c.batchSize, T: c.contextLength, k: c.k)
        let (e, i, n) = try batch.withBuffers { try next(into: $0) }
        batch.epoch = e; batch.index = i; batch.tokenCount = n
    }

    /// The next batch written into caller-owned buffers (shapes of ``Batch``; the C ABI's path).
    /// - Returns: its epoch, index inside the epoch and real (unpadded) tokens.
    /// - Throws: ``LoaderError/cache(_:)`` naming shard and chunk when the cache is damaged.
    public func next(into out: BatchBuffers) throws -> (epoch: Int, index: Int, tokens: Int) {
        let c = configuration, B = c.batchSize
        if batchIndex >= batchesInEpoch { try seek(epoch: epoch + 1, batch: 0) }
        guard let p = pipeline else { throw LoaderError.stateMismatch("the loader is closed (seek to start it again)") }
        let ws = order[(batchIndex * B)..<(batchIndex * B + B)]
        let rows = try p.take(ws)
        var tokens = 0
        for (b, w) in ws.enumerated() { tokens += out.put(w >= 0 ? rows[b] : nil, row: b, window: w, T: c.contextLength, k: c.k) }
        p.recycle(rows)
        let position = (epoch, batchIndex, tokens)
        batchIndex += 1
        return position
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
    private var alive = 0   // worker threads not yet returned
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
        alive = c.decodeThreads
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

    /// ``stop()``, then waits for every worker to return. Never call it from a worker thread.
    func stopAndWait() {
        stop()
        cond.lock()
        while alive > 0 { cond.wait() }
        cond.unlock()
    }

    private func work(_ loader: () -> StudentLoader?) {
        defer {
            cond.lock()
            alive -= 1
            cond.broadcast()
            cond.unlock()
        }
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
            // The loader is held strongly only inside the `if`, and released before `cond` is
            // taken: when the consumer has closed the loader meanwhile, this is the last
            // reference, and the loader's deinit calls stop(), which takes `cond` itself.
            var outcome: Result<Void, Error>?
            if let l = loader() { outcome = Result { try l.decode(ws, into: tb, rows: rows) } }
            guard let outcome else { pool.put(rows); return }
            if case .failure(let error) = outcome {
                pool.put(rows)
                cond.lock()
                failures[j] = error
            } else {
                cond.lock()
                for (w, r) in zip(ws, rows) { ready[w] = r }
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
