import ShardFormat
import Random

/// Every window of a cache for a context length T, grouped into decode units.
///
/// Sequences are cut, in cache order, into windows of T tokens (the last one shorter); empty
/// sequences give none. A unit is the run of windows whose first tokens lie in one block of one
/// shard (`blockTokens` of the manifest's encoding), the grain of shuffling and decoding.
/// Memory: 24 bytes per window, like the sequence tables the reader already holds.
public struct WindowTable: Sendable {
    public let windows: [Window]
    /// [units + 1]: unit u holds windows `unitStarts[u] ..< unitStarts[u + 1]`.
    public let unitStarts: [Int]
    public var unitCount: Int { unitStarts.count - 1 }

    public init(reader: CacheReader, contextLength T: Int) throws {
        let m = reader.manifest
        let blockTokens = max(1, m.encoding.blockTokens)
        var shardStarts = [0]
        for s in m.shards { shardStarts.append(shardStarts[shardStarts.count - 1] + s.tokens) }
        var ws: [Window] = [], starts: [Int] = []
        var shard = 0, lastKey = (-1, -1)
        for i in 0..<reader.sequenceCount {
            let q = try reader.sequence(i)
            let end = q.firstToken + q.length
            var t = q.firstToken
            while t < end {
                while shard + 1 < shardStarts.count - 1 && shardStarts[shard + 1] <= t { shard += 1 }
                let key = (shard, (t - shardStarts[shard]) / blockTokens)
                if key != lastKey { starts.append(ws.count); lastKey = key }
                ws.append(Window(firstToken: t, length: min(T, end - t), sequenceEnd: end))
                t += T
            }
        }
        starts.append(ws.count)
        windows = ws; unitStarts = starts
    }

    /// Unit of each window ([windows]).
    func unitOfWindow() -> [Int32] {
        var u = [Int32](repeating: 0, count: windows.count)
        for j in 0..<unitCount { for w in unitStarts[j]..<unitStarts[j + 1] { u[w] = Int32(j) } }
        return u
    }
}

/// The order of one epoch for one rank: a pure function of (window table, seed, epoch, rank,
/// world size, shuffle buffer, remainder policy).
///
/// 1. The units are permuted (Fisher–Yates, SplitMix64 seeded by ``permutationSeed(seed:epoch:)``).
/// 2. Rank r takes the units at permuted positions p with `p % worldSize == r`, so ranks are
///    disjoint, complete, and each decodes only its own blocks.
/// 3. Its windows, unit by unit in ascending order, stream through a shuffle buffer of S windows
///    (SplitMix64 seeded by ``bufferSeed(seed:epoch:rank:)``): while it is full, a uniformly
///    drawn slot is emitted and replaced by the incoming window; at the end the rest are
///    emitted by drawing a slot, emitting it and moving the last slot into it.
/// 4. ``RemainderPolicy/pad`` pads every rank to the largest rank's count and to whole batches
///    with −1 (empty windows); ``RemainderPolicy/drop`` truncates every rank to the smallest
///    count, rounded down to whole batches.
/// Draws are `next() % n` (the modulo bias, below 2^-40 for these sizes, is part of the definition).
///
/// **Elastic resume.** When an epoch was partly consumed under other layouts (``EpochSegment``s:
/// another world size, batch size or buffer), the windows those layouts handed out are *seen*,
/// and the rule above runs on what is left: step 2 counts positions p among the *live* units
/// only (units in permuted order that still hold an unseen window), step 3 skips seen windows,
/// and step 4 counts unseen windows. With nothing seen every unit is live, so this is the rule
/// above exactly. The seen set is built segment by segment: segment i's ranks take their orders
/// over what segments before i left, and each rank's first `consumed[r]` windows become seen.
/// Every window of the epoch is thus handed out exactly once across all layouts (padding aside).
public enum EpochOrder {
    public static func permutationSeed(seed: UInt64, epoch: Int) -> UInt64 {
        mix(mix(seed, UInt64(truncatingIfNeeded: epoch)), 0x5045_524D)
    }
    public static func bufferSeed(seed: UInt64, epoch: Int, rank: Int) -> UInt64 {
        mix(mix(seed, UInt64(truncatingIfNeeded: epoch)), 0x4255_4600 &+ UInt64(truncatingIfNeeded: rank))
    }
    /// One SplitMix64 output of `a` perturbed by `b`.
    static func mix(_ a: UInt64, _ b: UInt64) -> UInt64 {
        var r = SplitMix64(seed: a ^ (b &* SplitMix64.increment))
        return r.next()
    }

    /// Window indices of this rank's epoch in order, −1 for padding; its length is a multiple
    /// of `batchSize`. O(windows) time and 4 bytes per window.
    public static func windows(table: WindowTable, seed: UInt64, epoch: Int, rank: Int, worldSize n: Int,
                               shuffleBuffer S: Int, batchSize B: Int, remainder: RemainderPolicy,
                               seen: [Bool]? = nil) -> [Int32] {
        var live = permutation(units: table.unitCount, seed: seed, epoch: epoch)
        let unseen = { (w: Int) -> Bool in seen.map { !$0[w] } ?? true }
        if seen != nil { live.removeAll { u in !(table.unitStarts[u]..<table.unitStarts[u + 1]).contains(where: unseen) } }
        var counts = [Int](repeating: 0, count: n)
        for (p, u) in live.enumerated() {
            counts[p % n] += (table.unitStarts[u]..<table.unitStarts[u + 1]).lazy.filter(unseen).count
        }
        var out: [Int32] = []
        out.reserveCapacity(counts[rank] + B)
        var buf: [Int32] = []
        buf.reserveCapacity(S)
        var brng = SplitMix64(seed: bufferSeed(seed: seed, epoch: epoch, rank: rank))
        for p in stride(from: rank, to: live.count, by: n) {
            let u = live[p]
            for w in table.unitStarts[u]..<table.unitStarts[u + 1] where unseen(w) {
                if buf.count < S { buf.append(Int32(w)); continue }
                let j = Int(brng.next() % UInt64(S))
                out.append(buf[j]); buf[j] = Int32(w)
            }
        }
        while !buf.isEmpty {
            let j = Int(brng.next() % UInt64(buf.count))
            out.append(buf[j]); buf[j] = buf[buf.count - 1]; buf.removeLast()
        }
        switch remainder {
        case .pad:
            let L = counts.max() ?? 0
            let total = (L + B - 1) / B * B
            out += [Int32](repeating: -1, count: total - out.count)
        case .drop:
            let L = (counts.min() ?? 0) / B * B
            out.removeLast(out.count - L)
        }
        return out
    }

    /// The units in epoch `epoch`'s permuted order (Fisher–Yates, step 1).
    static func permutation(units U: Int, seed: UInt64, epoch: Int) -> [Int] {
        var perm = Array(0..<U)
        var rng = SplitMix64(seed: permutationSeed(seed: seed, epoch: epoch))
        if U > 1 {
            for i in stride(from: U - 1, to: 0, by: -1) {
                let j = Int(rng.next() % UInt64(i + 1))
                perm.swapAt(i, j)
            }
        }
        return perm
    }

    /// [windows] whether a window was handed out by `segments` (earlier layouts of the epoch).
    /// - Throws: ``LoaderError/stateMismatch(_:)`` for a segment that is not a valid layout or
    ///   claims more windows than its rank had.
    public static func seen(table: WindowTable, seed: UInt64, epoch: Int, segments: [EpochSegment]) throws -> [Bool] {
        var seen = [Bool](repeating: false, count: table.windows.count)
        for (i, g) in segments.enumerated() {
            guard g.worldSize >= 1, g.worldSize <= 1 << 20, g.consumed.count == g.worldSize, g.batchSize >= 1, g.shuffleBuffer >= 1 else {
                throw LoaderError.stateMismatch("segment \(i): world size \(g.worldSize) with \(g.consumed.count) consumed counts, batch \(g.batchSize), buffer \(g.shuffleBuffer)")
            }
            var next = seen
            for r in 0..<g.worldSize {
                let o = windows(table: table, seed: seed, epoch: epoch, rank: r, worldSize: g.worldSize, shuffleBuffer: g.shuffleBuffer,
                                batchSize: g.batchSize, remainder: g.remainder, seen: i == 0 ? nil : seen)
                guard (0...o.count).contains(g.consumed[r]) else {
                    throw LoaderError.stateMismatch("segment \(i): rank \(r) consumed \(g.consumed[r]) windows of its \(o.count)")
                }
                for w in o[..<g.consumed[r]] where w >= 0 { next[Int(w)] = true }
            }
            seen = next
        }
        return seen
    }
}

/// A layout that consumed part of an epoch before the loader was resumed under another one
/// (``EpochOrder``'s elastic resume). A "rank" here is one loader stream: a data-parallel rank,
/// or one data-loading worker of a rank.
public struct EpochSegment: Sendable, Codable, Equatable {
    /// Streams of that layout.
    public var worldSize: Int
    public var batchSize: Int
    public var shuffleBuffer: Int
    public var remainder: RemainderPolicy
    /// [worldSize] windows (padding included) each stream had taken: whole batches times B.
    public var consumed: [Int]
    /// ``LoaderConfiguration/orderFingerprint`` of that layout's loaders (T and seed), which
    /// the resuming loader must share.
    public var order: String

    public init(worldSize: Int, batchSize: Int, shuffleBuffer: Int, remainder: RemainderPolicy, consumed: [Int], order: String) {
        self.worldSize = worldSize; self.batchSize = batchSize; self.shuffleBuffer = shuffleBuffer
        self.remainder = remainder; self.consumed = consumed; self.order = order
    }
}
