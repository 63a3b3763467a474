import ShardFormat

/// One training window: at most T consecutive tokens of one cache sequence.
public struct Window: Sendable, Equatable {
    /// Global index of the first token (``CacheReader`` token order).
    public var firstToken: Int
    /// Tokens in the window, 1...T.
    public var length: Int
    /// Global index one past the last token of the window's sequence: the label of the last
    /// token is the next input id only when `firstToken + length < sequenceEnd`.
    public var sequenceEnd: Int
}

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
public enum EpochOrder {
    public static func permutationSeed(seed: UInt64, epoch: Int) -> UInt64 {
        mix(mix(seed, UInt64(truncatingIfNeeded: epoch)), 0x5045_524D)
    }
    public static func bufferSeed(seed: UInt64, epoch: Int, rank: Int) -> UInt64 {
        mix(mix(seed, UInt64(truncatingIfNeeded: epoch)), 0x4255_4600 &+ UInt64(truncatingIfNeeded: rank))
    }
    /// One SplitMix64 output of `a` perturbed by `b`.
    static func mix(_ a: UInt64, _ b: UInt64) -> UInt64 {
        var r = SplitMix(a ^ (b &* 0x9E37_79B9_7F4A_7C15))
        return r.next()
    }

    /// Window indices of this rank's epoch in order, −1 for padding; its length is a multiple
    /// of `batchSize`. O(windows) time and 4 bytes per window.
    public static func windows(table: WindowTable, seed: UInt64, epoch: Int, rank: Int, worldSize n: Int,
                               shuffleBuffer S: Int, batchSize B: Int, remainder: RemainderPolicy) -> [Int32] {
        let U = table.unitCount
        var perm = Array(0..<U)
        var rng = SplitMix(permutationSeed(seed: seed, epoch: epoch))
        if U > 1 {
            for i in stride(from: U - 1, to: 0, by: -1) {
                let j = Int(rng.next() % UInt64(i + 1))
                perm.swapAt(i, j)
            }
        }
        var counts = [Int](repeating: 0, count: n)
        for (p, u) in perm.enumerated() { counts[p % n] += table.unitStarts[u + 1] - table.unitStarts[u] }
        var out: [Int32] = []
        out.reserveCapacity(counts[rank] + B)
        var buf: [Int32] = []
        buf.reserveCapacity(S)
        var brng = SplitMix(bufferSeed(seed: seed, epoch: epoch, rank: rank))
        for p in stride(from: rank, to: U, by: n) {
            let u = perm[p]
            for w in table.unitStarts[u]..<table.unitStarts[u + 1] {
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
}
