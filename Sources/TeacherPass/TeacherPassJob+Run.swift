import Capture
import Corpus
import Foundation
import Kernels
import Models
import ShardFormat

/// One batch of windows on its way from the compute loop to the writer thread. Two of these
/// are reused for the whole pass, so a batch allocates nothing once the first two are sized.
final class PassBatch {
    /// Consecutive windows of equal length T (only the corpus's last window is short).
    var windows: [Window] = []
    /// inputs, nexts (B·T): the tokens fed to the model and the real next tokens.
    var inputs: [Int32] = [], nexts: [Int32] = []
    /// The captured targets of the B·T positions in consecutive row ranges, one per capture
    /// chunk: read part after part they are the positions in order.
    var parts: [CapturedTargets]

    init(parts: Int) { self.parts = Array(repeating: CapturedTargets(), count: max(1, parts)) }

    /// T, the length of every window of the batch.
    var length: Int { windows.first?.length ?? 0 }
}

/// The LM head's outputs of the batch being computed, reused across batches (sized for the
/// largest batch). ids, logits (B·T, K); logsumexp, targetLogits (B·T); full (B·T, V) only
/// for policies that need whole rows.
struct HeadBuffers {
    var ids: [Int32] = [], logits: [Float] = [], logsumexp: [Float] = [], targetLogits: [Float] = []
    var full: [Float] = []

    mutating func size(rows N: Int, k K: Int, vocabulary V: Int, fullRows: Bool) {
        if fullRows {
            if full.count != N * V { full = [Float](repeating: 0, count: N * V) }
        } else if ids.count != N * K {
            ids = [Int32](repeating: 0, count: N * K); logits = [Float](repeating: 0, count: N * K)
            logsumexp = [Float](repeating: 0, count: N); targetLogits = [Float](repeating: 0, count: N)
        }
    }
}

/// What the writer thread has written so far (guarded by the hand-off's lock).
final class WrittenSoFar: @unchecked Sendable {
    var windows = 0, tokens = 0
    var capturedMass = 0.0
}

extension TeacherPassJob {
    /// Fills `b` with the consecutive windows from `w` of equal length, at most
    /// `windowsPerBatch`, inside this partition, and their tokens.
    func fill(_ b: PassBatch, startingAt w: Int) {
        let first = stream.window(w, context: options.context)
        b.windows.removeAll(keepingCapacity: true)
        b.windows.append(first)
        while b.windows.count < options.windowsPerBatch, w + b.windows.count < windows.upperBound {
            let next = stream.window(w + b.windows.count, context: options.context)
            guard next.length == first.length else { break }
            b.windows.append(next)
        }
        let T = first.length
        b.inputs.removeAll(keepingCapacity: true); b.nexts.removeAll(keepingCapacity: true)
        for win in b.windows {
            b.inputs += stream.ids[win.firstToken ..< win.firstToken + T]
            b.nexts += stream.ids[win.firstToken + 1 ..< win.firstToken + T + 1]
        }
    }

    /// Activations for batches of B windows of T tokens, kept for the next batch of that shape.
    func activations(batch B: Int, length T: Int) -> ForwardActivations {
        if let a = activationCache, a.batch == B, a.length == T { return a }
        let a = model.makeActivations(batch: B, length: T)
        activationCache = a
        return a
    }

    /// Wall seconds of the forward pass alone — embedding, blocks, final norm and the plain LM
    /// head writing full (B·T, V) logits — over this job's windows in the pass's batches,
    /// with its buffers allocated once as the pass does: the baseline of `bench teacher`.
    public func forwardOnlySeconds() throws -> Double {
        let V = model.config.vocabSize
        let b = PassBatch(parts: 1)
        let started = Date()
        var w = windows.lowerBound
        while w < windows.upperBound {
            fill(b, startingAt: w)
            let B = b.windows.count, T = b.length
            let a = activations(batch: B, length: T)
            // Safe because a batch holds at least one window of at least one token.
            try b.inputs.withUnsafeBufferPointer { try model.forwardHidden(tokens: $0.baseAddress!, activations: a, pool: pool) }
            if forwardLogits.count != B * T * V { forwardLogits = [Float](repeating: 0, count: B * T * V) }
            try forwardLogits.withUnsafeMutableBufferPointer { try model.headLogits(activations: a, out: $0, pool: pool) }
            w += B
        }
        return Date().timeIntervalSince(started)
    }

    /// Runs the model on batch `b` and captures its targets into `b.parts`: the forward, the
    /// LM head (fused top-K, or full rows for sampling policies), then the capture of the
    /// B·T positions split over the pool (each position alone, so the split changes nothing).
    func computeTargets(_ b: PassBatch, head: inout HeadBuffers, capturers: inout [Capturer]) throws {
        let o = options
        let B = b.windows.count, T = b.length, N = B * T
        let V = model.config.vocabSize, K = o.policy.maxEntries
        let a = activations(batch: B, length: T)
        // Safe because a batch holds at least one window of at least one token.
        try b.inputs.withUnsafeBufferPointer { try model.forwardHidden(tokens: $0.baseAddress!, activations: a, pool: pool) }
        head.size(rows: N, k: K, vocabulary: V, fullRows: o.policy.needsFullRow)
        if o.policy.needsFullRow {
            try head.full.withUnsafeMutableBufferPointer { try model.headLogits(activations: a, out: $0, pool: pool) }
            let starts = b.windows.map(\.firstToken)
            try head.full.withUnsafeBufferPointer { rows in
                try b.nexts.withUnsafeBufferPointer { nexts in
                    try captureInParallel(b, rows: N, capturers: &capturers) { capturer, r, out in
                        let row = UnsafeBufferPointer(rebasing: rows[r * V ..< (r + 1) * V])
                        try capturer.capture(row: row, nextToken: nexts[r], position: UInt64(starts[r / T] + r % T), into: &out)
                    }
                }
            }
        } else {
            try model.topK(activations: a, k: K, scale: 1 / o.temperature, ids: &head.ids, logits: &head.logits,
                           logsumexp: &head.logsumexp, targets: b.nexts, targetLogits: &head.targetLogits, pool: pool)
            try head.ids.withUnsafeBufferPointer { ids in
                try head.logits.withUnsafeBufferPointer { logits in
                    try head.logsumexp.withUnsafeBufferPointer { lse in
                        try head.targetLogits.withUnsafeBufferPointer { tl in
                            try captureInParallel(b, rows: N, capturers: &capturers) { capturer, r, out in
                                try capturer.capture(topIDs: UnsafeBufferPointer(rebasing: ids[r * K ..< (r + 1) * K]),
                                                     topLogits: UnsafeBufferPointer(rebasing: logits[r * K ..< (r + 1) * K]),
                                                     logSumExp: lse[r], nextTokenLogit: tl[r], into: &out)
                            }
                        }
                    }
                }
            }
        }
    }

    /// Captures rows 0..<N into `b.parts`, part c holding the rows of chunk c of the pool's
    /// split, each chunk with its own capturer.
    func captureInParallel(_ b: PassBatch, rows N: Int, capturers: inout [Capturer],
                           _ one: (inout Capturer, Int, inout CapturedTargets) throws -> Void) throws {
        let parts = b.parts.count
        precondition(capturers.count == parts, "one capturer per part")
        var failures = [Error?](repeating: nil, count: parts)
        capturers.withUnsafeMutableBufferPointer { cap in
            b.parts.withUnsafeMutableBufferPointer { out in
                failures.withUnsafeMutableBufferPointer { failed in
                    // Safe because chunk c alone touches cap[c], out[c] and failed[c].
                    pool.parallelFor(parts) { chunks in
                        for c in chunks {
                            out[c].removeAll()
                            do {
                                for r in ThreadPool.chunkRange(c, of: parts, count: N) { try one(&cap[c], r, &out[c]) }
                            } catch { failed[c] = error }
                        }
                    }
                }
            }
        }
        if let e = failures.lazy.compactMap({ $0 }).first { throw e }
    }

    /// Appends batch `b`'s windows to the cache; returns the tokens written and the sum of
    /// their captured mass.
    func write(_ b: PassBatch, to writer: CacheWriter) throws -> (tokens: Int, mass: Double) {
        let T = b.length
        var r = 0, mass = 0.0
        for part in b.parts {
            for q in 0..<part.count {
                if r % T == 0 {
                    let doc = stream.document(at: b.windows[r / T].firstToken)
                    try writer.beginSequence(documentKey: doc.key, documentOffset: doc.offset)
                }
                let e = part.entries(q), s = part.samples(q)
                try writer.appendToken(inputID: b.inputs[r], nextTokenLogProb: part.nextTokenLogProb[q],
                                       logSumExp: part.logSumExp[q], entryIDs: e.ids, entryLogProbs: e.logProbs,
                                       sampleIDs: s.ids, sampleDraws: s.counts)
                mass += Double(part.capturedMass[q])
                r += 1
                if r % T == 0 { try writer.endSequence() }
            }
        }
        return (r, mass)
    }

    /// Runs (or resumes) the pass and returns this partition's manifest.
    ///
    /// The compute loop (forward, head and capture on the pool) runs on the calling thread;
    /// appending, compressing and publishing shards runs on one writer thread, at most two
    /// batches behind, in batch order — so the shards are the same bytes whatever the thread
    /// count, and a kill leaves only whole published shards, as before.
    ///
    /// - Parameter progress: called on the calling thread after every batch handed to the
    ///   writer (counting what the writer has finished) and once at the end.
    public func run(progress: (TeacherPassProgress) -> Void = { _ in }) throws -> CacheManifest {
        let o = options
        let writer = try CacheWriter(directory: o.output, description: description, options: o.writer,
                                     partition: o.partition.index, partitionCount: o.partition.count)
        let V = model.config.vocabSize
        let tokensTotal = windows.reduce(0) { $0 + stream.window($1, context: o.context).length }
        let first = windows.lowerBound + min(writer.resumedSequences, windows.count)
        let tokensResumed = (windows.lowerBound..<first).reduce(0) { $0 + stream.window($1, context: o.context).length }
        let started = Date()
        let secondsBefore = writer.teacherCost.seconds

        let parts = pool.chunkCount
        let slots = [PassBatch(parts: parts), PassBatch(parts: parts)]
        var capturers = try (0..<parts).map { _ in
            try Capturer(policy: o.policy, temperature: o.temperature, seed: o.seed, vocabularySize: V)
        }
        var head = HeadBuffers()
        let handoff = BatchHandoff(slots: slots.count)
        let written = WrittenSoFar()
        let model = self.model
        let writerDone = DispatchSemaphore(value: 0)
        let writerThread = Thread { [self] in
            defer { writerDone.signal() }
            while let i = handoff.next() {
                let b = slots[i]
                do {
                    let (tokens, mass) = try write(b, to: writer)
                    writer.teacherCost.tokens += tokens
                    writer.teacherCost.flops += model.forwardFLOPs(batch: b.windows.count, length: b.length)
                    writer.teacherCost.seconds = secondsBefore + Date().timeIntervalSince(started)
                    handoff.locked { written.windows += b.windows.count; written.tokens += tokens; written.capturedMass += mass }
                    handoff.release(i)
                } catch {
                    handoff.fail(error)
                    return
                }
            }
        }
        writerThread.name = "logitcache-writer"
        writerThread.start()

        func report() {
            let (w, t, m) = handoff.locked { (written.windows, written.tokens, written.capturedMass) }
            progress(TeacherPassProgress(windowsDone: first - windows.lowerBound + w, windowsTotal: windows.count,
                                         tokensDone: tokensResumed + t, tokensTotal: tokensTotal, tokensResumed: tokensResumed,
                                         seconds: Date().timeIntervalSince(started), meanCapturedMass: t > 0 ? m / Double(t) : 0))
        }
        var computeError: Error?
        var w = first
        while w < windows.upperBound {
            guard let i = handoff.acquire() else { break }  // the writer stopped with an error
            let b = slots[i]
            do {
                fill(b, startingAt: w)
                try computeTargets(b, head: &head, capturers: &capturers)
            } catch {
                computeError = error
                handoff.release(i)
                break
            }
            w += b.windows.count
            handoff.submit(i)
            report()
        }
        handoff.close()
        writerDone.wait()
        if let computeError { throw computeError }
        if let e = handoff.consumerError { throw e }
        report()
        return try writer.finish()
    }
}
