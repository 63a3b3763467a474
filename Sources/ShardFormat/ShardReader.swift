import Foundation

/// One shard file, memory-mapped, with its footer validated. Immutable after init, so it can
/// be shared by any number of threads; several processes may map the same file.
final class ShardReader: @unchecked Sendable {
    // Sendable because every stored property is immutable after init.
    let path: String
    let map: MappedShard
    let layout: ShardLayout
    /// The footer's XXH3, as the trailer records it.
    let footerChecksum: UInt64
    var bytes: UnsafeRawBufferPointer { map.bytes }

    /// Maps `path` and checks magic, versions, trailer, footer checksum and every footer field.
    init(path: String) throws {
        self.path = path
        map = try MappedShard(path: path)
        let b = map.bytes
        guard b.count < 56 || Array(b[0..<8]) == shardMagic else {
            throw ShardFormatError.malformed(file: path, chunk: nil, reason: "bad magic at offset 0 (not a LogitCache shard)")
        }
        (layout, footerChecksum) = try ShardReader.footer(tail: b, fileSize: b.count, path: path)
    }

    /// Parses and checks the trailer and footer of a shard of `fileSize` bytes from `tail`, its
    /// last `tail.count` bytes (the whole file, or at least the footer and the 40-byte trailer).
    /// Returns the validated layout and the footer checksum the trailer records.
    static func footer(tail b: UnsafeRawBufferPointer, fileSize s: Int, path: String) throws -> (ShardLayout, UInt64) {
        func bad(_ r: String) -> ShardFormatError { .malformed(file: path, chunk: nil, reason: r) }
        guard s >= 56 else { throw bad("file of \(s) bytes is shorter than header and trailer (56)") }
        guard b.count >= 40, b.count <= s else { throw bad("\(b.count) bytes of its end given, need 40...\(s)") }
        let base = s - b.count   // file offset of b[0]
        func u32(_ o: Int) -> UInt32 { b.loadUnaligned(fromByteOffset: o - base, as: UInt32.self).littleEndian }
        func u64(_ o: Int) -> UInt64 { b.loadUnaligned(fromByteOffset: o - base, as: UInt64.self).littleEndian }
        guard Array(b[(b.count - 8)...]) == shardMagic else { throw bad("bad magic at the end (truncated or damaged trailer)") }
        guard u32(s - 16) == 1 else { throw bad("format version \(u32(s - 16)) is not 1") }
        guard u32(s - 12) == 0 else { throw bad("non-zero reserved flags") }
        if base <= 8 {
            guard u32(8) == 1 else { throw bad("format version \(u32(8)) is not 1") }
            guard u32(12) == 0 else { throw bad("non-zero reserved flags") }
        }
        let fo = u64(s - 40), fl = u64(s - 32), want = u64(s - 24)
        guard fo >= 16, fl <= UInt64(s), fo <= UInt64(s) - fl, Int(fo) + Int(fl) == s - 40 else {
            throw bad("footer offset \(fo) + length \(fl) does not end at the trailer (\(s - 40))")
        }
        guard Int(fo) >= base else { throw bad("footer starts at \(fo), before the \(b.count) end bytes given") }
        let footer = UnsafeRawBufferPointer(rebasing: b[(Int(fo) - base)..<(Int(fo) - base + Int(fl))])
        let got = Checksum.xxh3(footer)
        guard got == want else { throw ShardFormatError.checksumMismatch(file: path, chunk: "footer", expected: want, actual: got) }
        let json: FooterJSON
        do { _ = try StrictJSON.check(Array(footer), realPaths: []) } catch { throw bad("footer: \(error)") }
        do { json = try JSONDecoder().decode(FooterJSON.self, from: Data(footer)) } catch {
            throw bad("footer JSON: \(error)")
        }
        return (try ShardLayout(json, file: path, chunkEnd: Int(fo)), want)
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
        // Links point into band 0, which is then decoded whatever k was asked for; sample
        // references into any rank, so with them every band's ids are decoded (their log-probs
        // only as far as k and the links need).
        let sampleRefs = samples ? L.sampleRefs : nil
        let mLP = min(linked ? max(bandCount, 1) : bandCount, L.entryIDs.count)
        let m = sampleRefs != nil ? L.entryIDs.count : mLP
        if let dd = L.entryIDDict, m > 0 {
            try load(dd, "entry_id_dict", out.idDict); try checkIDs(out.idDict, "entry_id_dict")
        }
        var referenced = false   // some decoded band has entry references
        for j in 0..<m {
            let lo = layout.bands[j], hi = layout.bands[j + 1]
            var expect = 0
            for t in 0..<n { let c = Int(out.entryCount[t]); if c > lo { expect += min(c, hi) - lo } }
            guard L.entryLogProbs[j].count == expect else {
                throw ShardFormatError.malformed(file: path, chunk: name("entry_logprobs.\(j)"), reason: "count \(L.entryLogProbs[j].count), entry counts imply \(expect)")
            }
            // With references the stored ids are those no reference names; resolveBlock fills the band.
            let ids = L.entryRefs[j] == nil ? out.bandIDs[j] : out.storedBandIDs[j]
            try load(L.entryIDs[j], "entry_ids.\(j)", ids)
            if L.entryIDDict != nil {
                try applyDictionary(out.idDict, to: ids, chunk: name("entry_ids.\(j)"))
            } else {
                try checkIDs(ids, "entry_ids.\(j)")
            }
            if let r = L.entryRefs[j] { try load(r, "entry_refs.\(j)", out.bandRefs[j]); referenced = true }
            if j < mLP { try load(L.entryLogProbs[j], "entry_logprobs.\(j)", out.bandLogProbs[j]) }
        }
        out.bandsDecoded = mLP
        if case .quantized(let bits, let mult) = layout.logProbs, mLP > 0 {
            // h = mult·2^-bits has at most 8 significant bits: exact in float32.
            try dequantize(out, bands: mLP, step: Float(mult) / Float(1 << bits), block: b)
        }
        if let ld = L.nextLink, let dd = L.nextLogProbDelta {
            try load(ld, "next_link", out.nextLink)
            try load(dd, "next_logprob_delta", out.nextLogProbDelta)
            try checkLinks(out, block: b)
        }
        if linked || referenced { try resolveBlock(out, bands: m, block: b) }
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
            try load(sd, "sample_draws", out.sampleDraws)
            var minDraws = UInt32.max
            for i in 0..<out.sampleDraws.count { minDraws = min(minDraws, out.sampleDraws[i]) }
            guard minDraws >= 1 else { throw ShardFormatError.malformed(file: path, chunk: name("sample_draws"), reason: "a draw count of 0") }
            if let sr = sampleRefs {
                try load(sr, "sample_refs", out.sampleRefs)
                try load(si, "sample_ids", out.storedSampleIDs); try checkIDs(out.storedSampleIDs, "sample_ids")
                try resolveSamples(out, block: b)
            } else {
                try load(si, "sample_ids", out.sampleIDs); try checkIDs(out.sampleIDs, "sample_ids")
            }
            out.hasSamples = true
        }
    }

    /// Checks a block's next-token links (FORMAT.md section 4) before ``resolveBlock``: each
    /// names one of its position's band-0 entries, none is at the block's last position, there
    /// is one delta per link, and the stored columns hold the unlinked values exactly.
    private func checkLinks(_ out: DecodedBlock, block b: Int) throws {
        let n = out.tokens, e1 = UInt32(layout.bands[1]), link = out.nextLink
        func bad(_ r: String) -> ShardFormatError { .malformed(file: path, chunk: "block \(b) column next_link", reason: r) }
        var linkCount = 0
        for t in 0..<n where link[t] > 0 {
            let c0 = min(out.entryCount[t], e1)
            guard link[t] <= c0 else { throw bad("link to rank \(link[t] - 1) at token \(t), which has \(c0) band-0 entries") }
            guard t < n - 1 else { throw bad("a link at the block's last token") }
            linkCount += 1
        }
        guard linkCount == out.nextLogProbDelta.count, out.storedInputIDs.count == n - linkCount,
              out.storedNextLogProb.count == n - linkCount else {
            throw bad("\(linkCount) links, but \(out.nextLogProbDelta.count) next log-prob deltas")
        }
    }

    /// Rebuilds, position by position, what next-token links and entry references (FORMAT.md
    /// section 4) leave implicit: a linked position's successor's input id (from its band 0),
    /// its next log-prob (a delta from the linked entry's decoded log-prob), and the ids of
    /// referencing bands (by index into the reference position's entries, or the next stored
    /// id). In block order, everything a position needs is known when it is reached.
    private func resolveBlock(_ out: DecodedBlock, bands m: Int, block b: Int) throws {
        let n = out.tokens, edges = layout.bands, L = layout.blocks[b]
        func bad(_ col: String, _ r: String) -> ShardFormatError { .malformed(file: path, chunk: "block \(b) column \(col)", reason: r) }
        let linked = L.nextLink != nil
        let refBands = (0..<m).filter { L.entryRefs[$0] != nil }
        // Raw views of the columns, taken once: the loop below runs per entry.
        func view(_ c: DecodedColumn) -> UnsafePointer<UInt32> { UnsafePointer(c.mutablePointer) }
        let count = view(out.entryCount)                                   // [n]
        // Bands used: band 0 (links) and every band up to the last referencing one.
        let used = max(linked ? 1 : 0, (refBands.last ?? -1) + 1)
        let S = n + 1
        let start = bandStarts(out, bands: used)                           // [used][n+1] band offset of each position
        var ids: [UnsafeMutablePointer<UInt32>] = []                       // [used] resolved band ids
        for j in 0..<used { ids.append(L.entryRefs[j] != nil ? out.bandIDs[j].owned(Int(start[j * S + n])) : out.bandIDs[j].mutablePointer) }
        let refs = refBands.map { view(out.bandRefs[$0]) }, refCount = refBands.map { out.bandRefs[$0].count }
        let stored = refBands.map { view(out.storedBandIDs[$0]) }, storedCount = refBands.map { out.storedBandIDs[$0].count }
        var refAt = [Int](repeating: 0, count: refBands.count), storedAt = refAt
        var rankBand = [Int](repeating: 0, count: edges[used])             // [e_used] band of each rank
        for j in 0..<used { for r in edges[j]..<edges[j + 1] { rankBand[r] = j } }
        let finder = out.finder
        finder.reset(tokens: n)
        let inp = linked ? out.inputIDs.owned(n) : out.inputIDs.mutablePointer   // [n]
        let next = linked ? out.nextLogProb.owned(n) : nil                       // [n]
        let link = linked ? view(out.nextLink) : nil, delta = linked ? view(out.nextLogProbDelta) : nil
        let storedInputs = linked ? view(out.storedInputIDs) : nil, storedNexts = linked ? view(out.storedNextLogProb) : nil
        let lp0 = m > 0 ? view(out.bandLogProbs[0]) : nil
        var si = 0, sn = 0, sd = 0  // read positions in input_ids, next_logprob, next_logprob_delta
        for t in 0..<n {
            let c = Int(count[t])
            if let link, let storedInputs {
                // Safe: checkLinks bounded every link by its position's band-0 count and the
                // stored columns by the number of links.
                if t > 0, link[t - 1] > 0 {
                    inp[t] = ids[0][Int(start[t - 1]) + Int(link[t - 1]) - 1]
                } else {
                    inp[t] = storedInputs[si]; si += 1
                }
            }
            if !refBands.isEmpty {
                let u = finder.next(inp[t])
                let cu = u >= 0 ? Int(count[u]) : 0
                for x in 0..<refBands.count {
                    let j = refBands[x], lo = edges[j], hi = edges[j + 1]
                    if c <= lo { continue }
                    let end = min(c, hi), dst = ids[j] + Int(start[j * S + t]) - lo   // dst[r]: rank r of t
                    let rp = refs[x], sp = stored[x]
                    var ra = refAt[x], sa = storedAt[x]
                    if u < 0 {
                        guard sa + end - lo <= storedCount[x] else { throw bad("entry_ids.\(j)", "\(storedCount[x]) ids, fewer than the entries no reference names") }
                        (dst + lo).update(from: sp + sa, count: end - lo); sa += end - lo
                    } else {
                        guard ra + end - lo <= refCount[x] else { throw bad("entry_refs.\(j)", "\(refCount[x]) references, fewer than the entries with a reference position") }
                        let limit = min(cu, hi), storedN = storedCount[x], last = max(storedN - 1, 0)
                        let own = ids[j] + Int(start[j * S + u]) - lo   // own[i]: u's rank i, for i in this band
                        for r in lo..<end {
                            let z = rp[ra]; ra += 1
                            if z == 0 {
                                // Clamped (a column holds at least one value's room); the count is checked below.
                                dst[r] = sp[min(sa, last)]; sa += 1
                                continue
                            }
                            let i = r + Int(unzigzag(z - 1))
                            if i >= lo && i < limit {
                                dst[r] = own[i]
                            } else {
                                guard i >= 0, i < limit else { throw bad("entry_refs.\(j)", "token \(t) rank \(r) refers to index \(i) of token \(u), which has \(limit) there") }
                                // Safe: i < e_j, so its band jb < j is resolved for u < t.
                                let jb = rankBand[i]
                                dst[r] = ids[jb][Int(start[jb * S + u]) + i - edges[jb]]
                            }
                        }
                        guard sa <= storedN else { throw bad("entry_ids.\(j)", "\(storedN) ids, fewer than the entries no reference names") }
                    }
                    refAt[x] = ra; storedAt[x] = sa
                }
            }
            if let next, let link, let delta, let storedNexts, let lp0 {
                let l = link[t]
                if l == 0 {
                    next[t] = storedNexts[sn]; sn += 1
                } else {
                    next[t] = UInt32(bitPattern: Int32(bitPattern: lp0[Int(start[t]) + Int(l) - 1]) &+ unzigzag(delta[sd])); sd += 1
                }
            }
        }
        for (x, j) in refBands.enumerated() {
            guard storedAt[x] == storedCount[x] else { throw bad("entry_ids.\(j)", "\(storedCount[x]) ids, \(storedAt[x]) used") }
            guard refAt[x] == refCount[x] else { throw bad("entry_refs.\(j)", "\(refCount[x]) references, \(refAt[x]) used") }
        }
    }

    /// Each position's offset into each of the first `bands` bands of the decoded block, in the
    /// block's scratch: [bands][n + 1], band j's row at `j * (n + 1)`.
    private func bandStarts(_ out: DecodedBlock, bands: Int) -> UnsafeMutablePointer<Int32> {
        let n = out.tokens, S = n + 1, edges = layout.bands
        let count = UnsafePointer(out.entryCount.mutablePointer)            // [n] entries per position
        let start = out.scratchStarts(bands * S)
        for j in 0..<bands {
            let lo = UInt32(edges[j]), hi = UInt32(edges[j + 1]), sj = start + j * S
            sj[0] = 0
            for t in 0..<n { let c = count[t]; sj[t + 1] = sj[t] + Int32(c > lo ? min(c, hi) - lo : 0) }
        }
        return start
    }

    /// Rebuilds the sampled ids of a block with sample references (FORMAT.md section 4.7): in
    /// each position, a run of samples with equal draw counts names ranks of the position's
    /// entries in ascending order, each reference the step from the previous one (from -1 at
    /// the run's start); a reference of 0 takes the next stored id instead.
    private func resolveSamples(_ out: DecodedBlock, block b: Int) throws {
        let n = out.tokens, edges = layout.bands, bands = edges.count - 1
        func bad(_ col: String, _ r: String) -> ShardFormatError { .malformed(file: path, chunk: "block \(b) column \(col)", reason: r) }
        let count = UnsafePointer(out.entryCount.mutablePointer)            // [n] entries per position
        let S = n + 1
        let start = bandStarts(out, bands: bands)                           // [bands][n+1] band offset of each position
        var rankBand = [Int](repeating: 0, count: edges[bands])            // [K] band of each rank
        for j in 0..<bands { for r in edges[j]..<edges[j + 1] { rankBand[r] = j } }
        let ids = (0..<bands).map { UnsafePointer(out.bandIDs[$0].mutablePointer) }   // [bands] resolved band ids
        let refs = UnsafePointer(out.sampleRefs.mutablePointer), draws = UnsafePointer(out.sampleDraws.mutablePointer)
        let stored = UnsafePointer(out.storedSampleIDs.mutablePointer), storedCount = out.storedSampleIDs.count
        let s = out.sampleRefs.count
        let dst = out.sampleIDs.owned(s)                                    // [s] resolved sampled ids
        var i = 0, sa = 0
        for t in 0..<n {
            let c = Int(count[t]), first = i, end = i + Int(out.sampleCount[t])
            var base = -1
            while i < end {
                if i > first && draws[i] != draws[i - 1] { base = -1 }
                let z = refs[i]
                if z == 0 {
                    guard sa < storedCount else { throw bad("sample_ids", "\(storedCount) ids, fewer than the samples no reference names") }
                    dst[i] = stored[sa]; sa += 1
                } else {
                    let r = base + Int(z)
                    guard r < c else { throw bad("sample_refs", "token \(t) sample \(i) names rank \(r), the position has \(c) entries") }
                    let j = rankBand[r]
                    // Safe: r < c_t, so rank r of t lies in band j at this offset (start was built from the counts).
                    dst[i] = ids[j][Int(start[j * S + t]) + r - edges[j]]
                    base = r
                }
                i += 1
            }
        }
        guard sa == storedCount else { throw bad("sample_ids", "\(storedCount) ids, \(sa) used") }
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
    /// Format 1.3 entry references: per band, the references and the stored (unreferenced) ids.
    var bandRefs: [DecodedColumn] = [], storedBandIDs: [DecodedColumn] = []
    /// Scratch of the reader's block resolution (format 1.3).
    let finder = ReferenceFinder()
    private var starts: UnsafeMutablePointer<Int32>?, startsCapacity = 0
    /// Scratch for `n` Int32 values (each block's band offsets).
    func scratchStarts(_ n: Int) -> UnsafeMutablePointer<Int32> {
        if n > startsCapacity { starts?.deallocate(); starts = .allocate(capacity: n); startsCapacity = n }
        // Safe because starts was allocated just above when too small or missing.
        return starts!
    }
    deinit { starts?.deallocate() }
    let sampleCount = DecodedColumn(), sampleIDs = DecodedColumn(), sampleDraws = DecodedColumn()
    /// Format 1.4 sample references and the sampled ids they leave stored.
    let sampleRefs = DecodedColumn(), storedSampleIDs = DecodedColumn()
    var hasSamples = false

    func reset(shard s: ShardReader, block b: Int, tokens n: Int) {
        shard = s; block = b; tokens = n; bandsDecoded = 0; hasSamples = false
        let m = s.layout.bands.count - 1
        while bandIDs.count < m { bandIDs.append(DecodedColumn()); bandLogProbs.append(DecodedColumn()) }
        while bandRefs.count < m { bandRefs.append(DecodedColumn()); storedBandIDs.append(DecodedColumn()) }
        for j in 0..<m { bandRefs[j].clear(); storedBandIDs[j].clear() }
        for c in [inputIDs, nextLogProb, logSumExp, entryCount, idDict, sampleCount, sampleIDs, sampleDraws,
                  sampleRefs, storedSampleIDs, nextLink, nextLogProbDelta, storedInputIDs, storedNextLogProb] { c.clear() }
    }
}
