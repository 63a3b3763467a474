import Foundation

/// One shard file, memory-mapped, with its footer validated. Immutable after init, so it can
/// be shared by any number of threads; several processes may map the same file.
final class ShardReader: @unchecked Sendable {
    // Sendable because every stored property is immutable after init.
    let path: String
    let map: MappedShard
    let layout: ShardLayout
    var bytes: UnsafeRawBufferPointer { map.bytes }

    /// Maps `path` and checks magic, versions, trailer, footer checksum and every footer field.
    init(path: String) throws {
        self.path = path
        map = try MappedShard(path: path)
        let b = map.bytes, s = b.count
        func bad(_ r: String) -> ShardFormatError { .malformed(file: path, chunk: nil, reason: r) }
        guard s >= 56 else { throw bad("file of \(s) bytes is shorter than header and trailer (56)") }
        func u32(_ o: Int) -> UInt32 { b.loadUnaligned(fromByteOffset: o, as: UInt32.self).littleEndian }
        func u64(_ o: Int) -> UInt64 { b.loadUnaligned(fromByteOffset: o, as: UInt64.self).littleEndian }
        guard Array(b[0..<8]) == shardMagic else { throw bad("bad magic at offset 0 (not a LogitCache shard)") }
        guard Array(b[(s - 8)...]) == shardMagic else { throw bad("bad magic at the end (truncated or damaged trailer)") }
        guard u32(8) == 1, u32(s - 16) == 1 else { throw bad("format version \(u32(8)) / \(u32(s - 16)) is not 1") }
        guard u32(12) == 0, u32(s - 12) == 0 else { throw bad("non-zero reserved flags") }
        let fo = u64(s - 40), fl = u64(s - 32), want = u64(s - 24)
        guard fo >= 16, fl <= UInt64(s), fo <= UInt64(s) - fl, Int(fo) + Int(fl) == s - 40 else {
            throw bad("footer offset \(fo) + length \(fl) does not end at the trailer (\(s - 40))")
        }
        let footer = UnsafeRawBufferPointer(rebasing: b[Int(fo)..<(Int(fo) + Int(fl))])
        let got = Checksum.xxh3(footer)
        guard got == want else { throw ShardFormatError.checksumMismatch(file: path, chunk: "footer", expected: want, actual: got) }
        let json: FooterJSON
        do { json = try JSONDecoder().decode(FooterJSON.self, from: Data(footer)) } catch {
            throw bad("footer JSON: \(error)")
        }
        layout = try ShardLayout(json, file: path, chunkEnd: Int(fo))
    }

    /// The stored bytes of a chunk after checking its checksum (bounds were checked at init).
    func chunk(_ d: ChunkDescriptor, _ name: @autoclosure () -> String) throws -> UnsafeRawBufferPointer {
        let c = UnsafeRawBufferPointer(rebasing: bytes[d.offset..<(d.offset + d.size)])
        let got = Checksum.xxh3(c)
        guard got == d.xxh3 else { throw ShardFormatError.checksumMismatch(file: path, chunk: name(), expected: d.xxh3, actual: got) }
        return c
    }

    /// Decodes block `b`'s per-token columns, its first `bandCount` entry bands and (if asked)
    /// its samples into `out`, checking every value against the footer's limits.
    func decodeBlock(_ b: Int, bandCount: Int, samples: Bool, into out: DecodedBlock, decoder: ChunkDecoder) throws {
        let L = layout.blocks[b], n = L.tokens
        let name = { (c: String) in "block \(b) column \(c)" }
        out.reset(shard: self, block: b, tokens: n)
        func load(_ d: ChunkDescriptor, _ col: String, _ c: DecodedColumn) throws {
            let stored = try chunk(d, name(col))
            if d.codec == .none, d.filter == .raw, d.width == 4, d.count > 0 {
                // Zero copy: the mapping outlives `out` because `out` holds this reader.
                guard stored.count == d.count * 4 else { throw ShardFormatError.malformed(file: path, chunk: name(col), reason: "stored size \(stored.count) != \(d.count * 4)") }
                c.setMapped(stored.baseAddress!, count: d.count)
            } else {
                try decoder.decode(stored, d, file: path, chunk: name(col), into: c.owned(d.count))
            }
        }
        func checkIDs(_ c: DecodedColumn, _ col: String) throws {
            let v = UInt32(layout.vocabularySize)
            var m: UInt32 = 0
            for i in 0..<c.count { m = max(m, c[i]) }
            guard c.count == 0 || m < v else { throw ShardFormatError.malformed(file: path, chunk: name(col), reason: "id \(m) >= vocabulary size \(v)") }
        }
        // With next-token links the stored columns hold only the unlinked values; the block's
        // columns are rebuilt from them and band 0 below.
        let linked = L.nextLink != nil
        let inputs = linked ? out.storedInputIDs : out.inputIDs, nexts = linked ? out.storedNextLogProb : out.nextLogProb
        try load(L.inputIDs, "input_ids", inputs); try checkIDs(inputs, "input_ids")
        try load(L.nextLogProb, "next_logprob", nexts)
        try load(L.logSumExp, "logsumexp", out.logSumExp)
        try load(L.entryCount, "entry_count", out.entryCount)
        let K = UInt32(layout.maxEntries)
        var total = 0
        for t in 0..<n {
            let c = out.entryCount[t]
            guard c <= K else { throw ShardFormatError.malformed(file: path, chunk: name("entry_count"), reason: "count \(c) at token \(t) exceeds maxEntries \(K)") }
            total += Int(c)
        }
        guard total == L.entries else { throw ShardFormatError.malformed(file: path, chunk: name("entry_count"), reason: "counts sum to \(total), block has \(L.entries) entries") }
        // Links point into band 0, which is then decoded whatever k was asked for.
        let m = min(linked ? max(bandCount, 1) : bandCount, L.entryIDs.count)
        if let dd = L.entryIDDict, m > 0 {
            try load(dd, "entry_id_dict", out.idDict); try checkIDs(out.idDict, "entry_id_dict")
        }
        for j in 0..<m {
            let lo = layout.bands[j], hi = layout.bands[j + 1]
            var expect = 0
            for t in 0..<n { let c = Int(out.entryCount[t]); if c > lo { expect += min(c, hi) - lo } }
            guard L.entryIDs[j].count == expect else {
                throw ShardFormatError.malformed(file: path, chunk: name("entry_ids.\(j)"), reason: "count \(L.entryIDs[j].count), entry counts imply \(expect)")
            }
            try load(L.entryIDs[j], "entry_ids.\(j)", out.bandIDs[j])
            if L.entryIDDict != nil {
                try applyDictionary(out.idDict, to: out.bandIDs[j], chunk: name("entry_ids.\(j)"))
            } else {
                try checkIDs(out.bandIDs[j], "entry_ids.\(j)")
            }
            try load(L.entryLogProbs[j], "entry_logprobs.\(j)", out.bandLogProbs[j])
        }
        out.bandsDecoded = m
        if case .quantized(let bits, let mult) = layout.logProbs, m > 0 {
            // h = mult·2^-bits has at most 8 significant bits: exact in float32.
            try dequantize(out, bands: m, step: Float(mult) / Float(1 << bits), block: b)
        }
        if let ld = L.nextLink, let dd = L.nextLogProbDelta {
            try load(ld, "next_link", out.nextLink)
            try load(dd, "next_logprob_delta", out.nextLogProbDelta)
            try resolveLinks(out, block: b)
        }
        if samples, let sc = L.sampleCount, let si = L.sampleIDs, let sd = L.sampleDraws {
            try load(sc, "sample_count", out.sampleCount)
            var s = 0
            let S = UInt32(layout.maxSamples)
            for t in 0..<n {
                let c = out.sampleCount[t]
                guard c <= S else { throw ShardFormatError.malformed(file: path, chunk: name("sample_count"), reason: "count \(c) exceeds maxSamples \(S)") }
                s += Int(c)
            }
            guard s == L.samples else { throw ShardFormatError.malformed(file: path, chunk: name("sample_count"), reason: "counts sum to \(s), block has \(L.samples) samples") }
            try load(si, "sample_ids", out.sampleIDs); try checkIDs(out.sampleIDs, "sample_ids")
            try load(sd, "sample_draws", out.sampleDraws)
            var minDraws = UInt32.max
            for i in 0..<out.sampleDraws.count { minDraws = min(minDraws, out.sampleDraws[i]) }
            guard minDraws >= 1 else { throw ShardFormatError.malformed(file: path, chunk: name("sample_draws"), reason: "a draw count of 0") }
            out.hasSamples = true
        }
    }

    /// Rebuilds `input_ids` and `next_logprob` of a block with next-token links (FORMAT.md
    /// section 4) from their stored unlinked values, the links, the deltas and band 0 (decoded
    /// and dequantised). A link must name one of its position's band-0 entries and must not
    /// be the block's last position, and there must be one delta per link; the footer already
    /// checked that the stored columns hold n - (number of deltas) values each.
    private func resolveLinks(_ out: DecodedBlock, block b: Int) throws {
        let n = out.tokens, e1 = UInt32(layout.bands[1])
        func bad(_ col: String, _ r: String) -> ShardFormatError { .malformed(file: path, chunk: "block \(b) column \(col)", reason: r) }
        let link = out.nextLink, delta = out.nextLogProbDelta
        let ins = out.storedInputIDs, nexts = out.storedNextLogProb
        var linkCount = 0
        for t in 0..<n where link[t] > 0 {
            let c0 = min(out.entryCount[t], e1)
            guard link[t] <= c0 else { throw bad("next_link", "link to rank \(link[t] - 1) at token \(t), which has \(c0) band-0 entries") }
            guard t < n - 1 else { throw bad("next_link", "a link at the block's last token") }
            linkCount += 1
        }
        guard linkCount == delta.count, ins.count == n - linkCount, nexts.count == n - linkCount else {
            throw bad("next_link", "\(linkCount) links, but \(delta.count) next log-prob deltas")
        }
        let ids0 = out.bandIDs[0], lp0 = out.bandLogProbs[0]
        let inp = out.inputIDs.owned(n), next = out.nextLogProb.owned(n)   // [n] each
        var off = 0, prevOff = 0    // band-0 offset of position t and of t - 1
        var si = 0, sn = 0, sd = 0  // read positions in input_ids, next_logprob, next_logprob_delta
        // Every index below is in range: the counts were checked just above, and a link's rank
        // is below its position's band-0 count.
        for t in 0..<n {
            if t > 0, link[t - 1] > 0 {
                inp[t] = ids0[prevOff + Int(link[t - 1]) - 1]
            } else {
                inp[t] = ins[si]; si += 1
            }
            let l = link[t]
            if l == 0 {
                next[t] = nexts[sn]; sn += 1
            } else {
                let z = delta[sd]; sd += 1
                let d = Int32(bitPattern: (z >> 1) ^ (0 &- (z & 1)))   // un-zigzag
                next[t] = UInt32(bitPattern: Int32(bitPattern: lp0[off + Int(l) - 1]) &+ d)
            }
            prevOff = off; off += Int(min(out.entryCount[t], e1))
        }
    }

    /// Replaces ranks by the dictionary's ids, refusing ranks past its end.
    private func applyDictionary(_ dict: DecodedColumn, to c: DecodedColumn, chunk: String) throws {
        let n = c.count, D = dict.count
        if n == 0 { return }
        guard D > 0 else { throw ShardFormatError.malformed(file: path, chunk: chunk, reason: "ranks without a dictionary") }
        let p = c.mutablePointer
        var maxRank: UInt32 = 0
        for i in 0..<n { maxRank = max(maxRank, p[i]) }
        guard Int(maxRank) < D else { throw ShardFormatError.malformed(file: path, chunk: chunk, reason: "rank \(maxRank) >= dictionary size \(D)") }
        let d = dict.mutablePointer   // owned and aligned; ranks were checked below D just above
        for i in 0..<n { p[i] = d[Int(p[i])] }
    }

    /// Turns the decoded deltas of bands 0..<m into float32 log-probs in place (FORMAT.md section 5).
    /// The decoded value of FORMAT.md section 5 is float32(-Q·h), one rounding of the exact
    /// product. Q < 2^24 and h are exact float32 values, and an IEEE multiplication rounds the
    /// exact product once, so `-Float(Q) * h` is that value, the same in every reader.
    private func dequantize(_ out: DecodedBlock, bands m: Int, step h: Float, block b: Int) throws {
        let n = out.tokens
        var pos = [Int](repeating: 0, count: m)   // [m] read position in each band
        var bad = false
        let bandPtrs = (0..<m).map { out.bandLogProbs[$0].mutablePointer }
        let edges = layout.bands
        for t in 0..<n {
            let c = Int(out.entryCount[t])
            var q: UInt64 = 0
            for j in 0..<m {
                let lo = edges[j]
                if c <= lo { break }
                let cnt = min(c, edges[j + 1]) - lo
                let p = bandPtrs[j] + pos[j]
                for r in 0..<cnt {
                    q &+= UInt64(p[r])
                    p[r] = (-Float(UInt32(truncatingIfNeeded: q)) * h).bitPattern
                }
                if q > 16_777_215 { bad = true }
                pos[j] += cnt
            }
        }
        guard !bad else { throw ShardFormatError.malformed(file: path, chunk: "block \(b) column entry_logprobs", reason: "quantised log-prob sum exceeds 2^24 - 1") }
    }
}

/// One decoded column of a block: `count` u32 values, owned or (zero copy) in the mapping.
final class DecodedColumn {
    private var storage: UnsafeMutablePointer<UInt32>?
    private var capacity = 0
    private(set) var base: UnsafeRawPointer?
    private(set) var count = 0
    private var isMapped = false

    deinit { storage?.deallocate() }

    /// Owned storage for `n` values; the column then reads from it.
    func owned(_ n: Int) -> UnsafeMutablePointer<UInt32> {
        if n > capacity || storage == nil {
            storage?.deallocate()
            capacity = max(n, 1)
            storage = .allocate(capacity: capacity)
        }
        // Safe because storage was allocated just above when missing.
        base = UnsafeRawPointer(storage!); count = n; isMapped = false
        return storage!
    }
    func setMapped(_ p: UnsafeRawPointer, count n: Int) { base = p; count = n; isMapped = true }
    func clear() { count = 0; base = nil; isMapped = false }

    /// Writable values; copies mapped bytes into owned storage first (mappings are read-only).
    var mutablePointer: UnsafeMutablePointer<UInt32> {
        if isMapped, let b = base {
            let n = count
            let p = owned(n)
            // Safe because the mapped range holds n*4 bytes (checked when mapped).
            UnsafeMutableRawPointer(p).copyMemory(from: b, byteCount: n * 4)
            return p
        }
        return storage ?? owned(0)
    }

    @inline(__always) subscript(i: Int) -> UInt32 {
        // Safe because callers index below count, which the footer checks bounded.
        base!.loadUnaligned(fromByteOffset: i &* 4, as: UInt32.self)
    }
}

/// The decoded columns of one block (reused across blocks to avoid allocations).
final class DecodedBlock: @unchecked Sendable {
    // Sendable because a block in the shared cache is never mutated after it is published.
    private(set) var shard: ShardReader?
    private(set) var block = -1
    private(set) var tokens = 0
    let inputIDs = DecodedColumn(), nextLogProb = DecodedColumn(), logSumExp = DecodedColumn(), entryCount = DecodedColumn()
    var bandIDs: [DecodedColumn] = [], bandLogProbs: [DecodedColumn] = []
    var bandsDecoded = 0
    let idDict = DecodedColumn()
    /// Format 1.3 next-token links: [n] links, [L] deltas, and the stored unlinked values.
    let nextLink = DecodedColumn(), nextLogProbDelta = DecodedColumn()
    let storedInputIDs = DecodedColumn(), storedNextLogProb = DecodedColumn()
    let sampleCount = DecodedColumn(), sampleIDs = DecodedColumn(), sampleDraws = DecodedColumn()
    var hasSamples = false

    func reset(shard s: ShardReader, block b: Int, tokens n: Int) {
        shard = s; block = b; tokens = n; bandsDecoded = 0; hasSamples = false
        let m = s.layout.bands.count - 1
        while bandIDs.count < m { bandIDs.append(DecodedColumn()); bandLogProbs.append(DecodedColumn()) }
        for c in [inputIDs, nextLogProb, logSumExp, entryCount, idDict, sampleCount, sampleIDs, sampleDraws,
                  nextLink, nextLogProbDelta, storedInputIDs, storedNextLogProb] { c.clear() }
    }
}
