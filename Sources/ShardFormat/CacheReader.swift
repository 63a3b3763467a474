import Foundation

/// Per-thread decoding state (a zstd context and a reusable block workspace). Create one per
/// thread that decodes; never share one between threads at the same time.
public final class DecodeScratch {
    let decoder = ChunkDecoder()
    let block = DecodedBlock()
    public init() {}
}

/// Loss-ready teacher targets of a token range, reused across calls to avoid allocations.
///
/// After ``CacheReader/decode(tokens:k:samples:into:)`` with T tokens and prefix k:
/// - `inputIDs` [T], `nextTokenLogProbs` [T], `logSumExps` [T];
/// - `entryCounts` [T]: valid entries per row, `min(c_t, k)`;
/// - `entryIDs` [T, k] row-major, padded with id 0; `entryLogProbs` [T, k] in nats, padded with
///   `-infinity` (probability 0), so `exp` of a padded row sums to the stored mass;
/// - with samples: `sampleOffsets` [T+1], `sampleIDs` [S], `sampleDraws` [S] (CSR).
/// Not thread-safe; one batch per thread.
public final class TargetBatch {
    public private(set) var tokenCount = 0
    public private(set) var k = 0
    public var inputIDs: [Int32] = []
    public var nextTokenLogProbs: [Float] = []
    public var logSumExps: [Float] = []
    public var entryCounts: [Int32] = []
    public var entryIDs: [Int32] = []
    public var entryLogProbs: [Float] = []
    public var sampleOffsets: [Int] = [0]
    public var sampleIDs: [Int32] = []
    public var sampleDraws: [UInt32] = []
    public let scratch = DecodeScratch()
    public init() {}

    func shape(tokens T: Int, k: Int) {
        tokenCount = T; self.k = k
        if inputIDs.count != T {
            inputIDs = .init(repeating: 0, count: T); nextTokenLogProbs = .init(repeating: 0, count: T)
            logSumExps = .init(repeating: 0, count: T); entryCounts = .init(repeating: 0, count: T)
        }
        if entryIDs.count != T * k {
            entryIDs = .init(repeating: 0, count: T * k); entryLogProbs = .init(repeating: 0, count: T * k)
        }
        sampleOffsets.removeAll(keepingCapacity: true); sampleOffsets.append(0)
        sampleIDs.removeAll(keepingCapacity: true); sampleDraws.removeAll(keepingCapacity: true)
    }
}

/// Where one sequence lives and where it came from.
public struct SequenceInfo: Sendable, Equatable {
    /// Content hash of the source document.
    public var documentKey: DocumentHash
    /// Offset of the window's first token inside its document.
    public var documentOffset: Int
    /// Tokens in the sequence (may be 0).
    public var length: Int
    /// Global index of its first token (``CacheReader/decode(tokens:k:samples:into:)`` takes
    /// `firstToken ..< firstToken + length`).
    public var firstToken: Int
}

/// Memory-mapped reader of a whole cache directory.
///
/// Opening checks the manifest checksum, that every shard name stays inside the directory,
/// every shard's size, trailer, footer checksum and footer fields, and that the footers agree
/// with the manifest. Chunks are checked (XXH3) and decoded lazily when read; partially read
/// blocks are kept in a small LRU cache. Thread-safe: share one reader; give each thread its
/// own ``TargetBatch``. Several processes may read the same cache at once (read-only mappings).
///
/// A reader opened with a ``ShardSource`` reads only the shards' footers at open and maps a
/// shard when a read first needs it (see ``init(directory:source:openShards:tokenizerFingerprint:cacheBlocks:)``).
public final class CacheReader: @unchecked Sendable {
    // Sendable because all stored state is immutable except the block cache, guarded by `lock`,
    // and the slots' mappings, guarded by `shardLock`.
    public let directory: String
    public let manifest: CacheManifest
    let slots: [ShardSlot]
    let tokenStarts: [Int]      // [shards + 1] global token index of each shard
    let sequenceStarts: [Int]   // [shards + 1] global sequence index of each shard
    private let lock = NSLock()
    private var cache: [(key: Int, tick: Int, block: DecodedBlock)] = []
    private var tick = 0
    private let cacheBlocks: Int
    let source: ShardSource?
    let openShards: Int
    let shardLock = NSLock()
    var shardTick = 0
    var openingCount = 0   // shards being fetched and mapped now (guarded by shardLock)

    /// Tokens in the cache.
    public var tokenCount: Int { tokenStarts.last ?? 0 }
    /// Sequences in the cache.
    public var sequenceCount: Int { sequenceStarts.last ?? 0 }
    /// Vocabulary size V.
    public var vocabularySize: Int { manifest.vocabularySize }
    /// K: most entries any position has; any `k <= K` is a prefix read.
    public var maxEntries: Int { manifest.capture.k }
    /// Most distinct sampled ids per position (0: the cache has no samples).
    public var maxSamples: Int { slots.first?.layout.maxSamples ?? manifest.capture.samples }

    /// Opens `directory/manifest.json` and every shard it names.
    /// - Parameters:
    ///   - tokenizerFingerprint: if given, the cache's tokenizer fingerprint must equal it.
    ///   - cacheBlocks: decoded blocks kept for partial-block reads.
    /// - Throws: ``ShardFormatError`` naming the file and what is wrong (checksum, unsafe
    ///   shard name, size, footer field, mismatch with the manifest).
    public convenience init(directory: String, tokenizerFingerprint: String? = nil, cacheBlocks: Int = 8) throws {
        try self.init(directory: directory, source: nil, openShards: Int.max, tokenizerFingerprint: tokenizerFingerprint,
                      cacheBlocks: cacheBlocks)
    }

    /// Opens `directory/manifest.json`; with a `source`, the shards need not be in `directory`.
    ///
    /// With `source` nil every shard is mapped and checked now, as ``init(directory:tokenizerFingerprint:cacheBlocks:)``
    /// does. With a source, only each shard's end is read now (``ShardSource/tail(shard:name:size:)``),
    /// and its footer checked against the manifest; a shard is fetched
    /// (``ShardSource/fetch(shard:name:)``) and mapped when a read first needs it, its footer must
    /// then equal the one read at open, and at most `openShards` shards stay mapped (the least
    /// recently read is released first, ``ShardSource/release(shard:name:)``).
    /// - Throws: ``ShardFormatError`` as the other initialiser; errors the source throws.
    public init(directory: String, source: ShardSource?, openShards: Int, tokenizerFingerprint: String? = nil,
                cacheBlocks: Int = 8) throws {
        self.directory = directory
        self.cacheBlocks = max(1, cacheBlocks)
        self.source = source
        self.openShards = max(1, openShards)
        let mfile = directory + "/" + CacheManifest.fileName
        let m = try CacheManifest.load(directory: directory)
        if let want = tokenizerFingerprint, want != m.fingerprints.tokenizer {
            throw ShardFormatError.mismatch(file: mfile, reason: "tokenizer fingerprint \(m.fingerprints.tokenizer) differs from the expected \(want)")
        }
        manifest = m
        var slots: [ShardSlot] = [], ts = [0], ss = [0]
        var files = Set<String>()
        for (i, e) in m.shards.enumerated() {
            let slot: ShardSlot
            if let source {
                let path = try CacheManifest.plainShardPath(directory: directory, name: e.file, manifestFile: mfile)
                guard files.insert(e.file).inserted else {
                    throw ShardFormatError.mismatch(file: mfile, reason: "shard \(e.file) is listed twice")
                }
                let tail = try source.tail(shard: i, name: e.file, size: e.bytes)
                let (layout, checksum) = try tail.withUnsafeBytes { try ShardReader.footer(tail: $0, fileSize: e.bytes, path: path) }
                slot = ShardSlot(index: i, name: e.file, path: path, layout: layout, footerChecksum: checksum)
            } else {
                let path = try CacheManifest.shardPath(directory: directory, name: e.file, manifestFile: mfile)
                guard files.insert(resolvedPath(path) ?? path).inserted else {
                    throw ShardFormatError.mismatch(file: mfile, reason: "shard \(e.file) is the same file as an earlier shard")
                }
                let r = try ShardReader(path: path)
                guard r.bytes.count == e.bytes else { throw ShardFormatError.mismatch(file: path, reason: "size \(r.bytes.count) bytes, manifest says \(e.bytes)") }
                slot = ShardSlot(index: i, name: e.file, path: path, layout: r.layout, footerChecksum: r.footerChecksum)
                slot.reader = r
            }
            let L = slot.layout, path = slot.path
            guard L.tokens == e.tokens, L.sequences == e.sequences, L.entries == e.entries, L.samples == e.samples else {
                throw ShardFormatError.mismatch(file: path, reason: "footer totals differ from the manifest's")
            }
            guard L.vocabularySize == m.vocabularySize, L.maxEntries == m.capture.k else {
                throw ShardFormatError.mismatch(file: path, reason: "vocabulary size \(L.vocabularySize) / K \(L.maxEntries) differ from the manifest's \(m.vocabularySize) / \(m.capture.k)")
            }
            guard L.maxSamples == (slots.first?.layout.maxSamples ?? L.maxSamples) else {
                throw ShardFormatError.mismatch(file: path, reason: "maxSamples differs from the first shard's")
            }
            slots.append(slot); ts.append(ts.last! + L.tokens); ss.append(ss.last! + L.sequences)
        }
        self.slots = slots; tokenStarts = ts; sequenceStarts = ss
    }

    deinit {
        guard let source else { return }
        for s in slots where s.reader != nil { source.release(shard: s.index, name: s.name) }
    }

    /// Shard holding global index `i` of `starts` (binary search; O(log shards)).
    private func shardIndex(_ i: Int, _ starts: [Int]) -> Int {
        var lo = 0, hi = starts.count - 2
        while lo < hi { let mid = (lo + hi + 1) / 2; if starts[mid] <= i { lo = mid } else { hi = mid - 1 } }
        return lo
    }

    /// Sequence `i` (0 ..< sequenceCount). O(1) within its shard.
    public func sequence(_ i: Int) throws -> SequenceInfo {
        guard (0..<sequenceCount).contains(i) else { throw ShardFormatError.invalidInput("sequence \(i) outside 0..<\(sequenceCount)") }
        let s = shardIndex(i, sequenceStarts), L = slots[s].layout, j = i - sequenceStarts[s]
        return SequenceInfo(documentKey: L.documentKeys[j], documentOffset: L.documentOffsets[j], length: L.lengths[j],
                            firstToken: tokenStarts[s] + L.sequenceStarts[j])
    }

    /// Decodes tokens `range` (global indices) with the first `k` entries of each position into
    /// `batch` (see ``TargetBatch`` for shapes). Only the bands holding ranks below `k` are
    /// decompressed. Cost O(range + blocks touched). With `samples` on a cache without sampled
    /// entries (``maxSamples`` 0), every row gets zero samples.
    /// - Throws: ``ShardFormatError`` for bad ranges or damaged chunks (naming file and chunk).
    public func decode(tokens range: Range<Int>, k: Int, samples wanted: Bool = false, into batch: TargetBatch) throws {
        let samples = wanted && maxSamples > 0
        guard range.lowerBound >= 0, range.upperBound <= tokenCount else {
            throw ShardFormatError.invalidInput("tokens \(range) outside 0..<\(tokenCount)")
        }
        guard k >= 0, k <= maxEntries else { throw ShardFormatError.invalidInput("k = \(k) outside 0...\(maxEntries)") }
        batch.shape(tokens: range.count, k: k)
        if wanted && !samples { batch.sampleOffsets.append(contentsOf: repeatElement(0, count: range.count)) }
        var t = range.lowerBound
        while t < range.upperBound {
            let s = shardIndex(t, tokenStarts), r = try shard(s), L = r.layout
            let local = t - tokenStarts[s]
            let b = local / L.blockTokens, bl = L.blocks[b]
            let lo = local - bl.firstToken
            let hi = min(bl.tokens, range.upperBound - tokenStarts[s] - bl.firstToken)
            let bands = L.bands.dropLast().filter { $0 < k }.count
            let block: DecodedBlock
            if lo == 0 && hi == bl.tokens {
                block = batch.scratch.block
                try r.decodeBlock(b, bandCount: bands, samples: samples, into: block, decoder: batch.scratch.decoder)
            } else {
                block = try cachedBlock(shard: s, block: b, bands: bands, samples: samples, decoder: batch.scratch.decoder)
            }
            scatter(block, layout: L, from: lo, to: hi, k: k, samples: samples, into: batch, at: t - range.lowerBound)
            t += hi - lo
        }
    }

    /// Appends `count` values read from `p` (any alignment) to `array`.
    private func appendBytes<T: FixedWidthInteger>(of p: UnsafeRawPointer, count: Int, to array: inout [T]) {
        let old = array.count, size = MemoryLayout<T>.stride
        array.append(contentsOf: repeatElement(0, count: count))
        // Safe because the array now has `count` more elements after `old`.
        array.withUnsafeMutableBytes { $0.baseAddress!.advanced(by: size * old).copyMemory(from: p, byteCount: size * count) }
    }

    private func cachedBlock(shard s: Int, block b: Int, bands: Int, samples: Bool, decoder: ChunkDecoder) throws -> DecodedBlock {
        let key = s << 32 | b
        lock.lock()
        tick += 1
        if let i = cache.firstIndex(where: { $0.key == key }), cache[i].block.bandsDecoded >= bands, cache[i].block.hasSamples || !samples {
            cache[i].tick = tick
            let blk = cache[i].block
            lock.unlock()
            return blk
        }
        lock.unlock()
        let blk = DecodedBlock()
        try shard(s).decodeBlock(b, bandCount: bands, samples: samples, into: blk, decoder: decoder)
        lock.lock()
        cache.removeAll { $0.key == key }
        if cache.count >= cacheBlocks, let old = cache.indices.min(by: { cache[$0].tick < cache[$1].tick }) { cache.remove(at: old) }
        cache.append((key, tick, blk))
        lock.unlock()
        return blk
    }

    /// Copies tokens `lo..<hi` of a decoded block into batch rows starting at `row`.
    private func scatter(_ d: DecodedBlock, layout L: ShardLayout, from lo: Int, to hi: Int, k: Int, samples: Bool,
                         into batch: TargetBatch, at row: Int) {
        let edges = L.bands
        let m = d.bandsDecoded
        let hasSamples = samples && d.hasSamples   // a block decoded without them has no sample columns
        var pos = [Int](repeating: 0, count: m)   // [m] read position of token lo in each band
        var spos = 0
        for t in 0..<lo {
            let c = Int(d.entryCount[t])
            for j in 0..<m where c > edges[j] { pos[j] += min(c, edges[j + 1]) - edges[j] }
            if hasSamples { spos += Int(d.sampleCount[t]) }
        }
        let n = hi - lo
        batch.inputIDs.withUnsafeMutableBufferPointer { p in
            // Safe because p has T >= row + n rows and the column n >= hi values (checked at decode).
            UnsafeMutableRawPointer(p.baseAddress! + row).copyMemory(from: d.inputIDs.base! + 4 * lo, byteCount: 4 * n)
        }
        batch.nextTokenLogProbs.withUnsafeMutableBufferPointer { p in
            UnsafeMutableRawPointer(p.baseAddress! + row).copyMemory(from: d.nextLogProb.base! + 4 * lo, byteCount: 4 * n)
        }
        batch.logSumExps.withUnsafeMutableBufferPointer { p in
            UnsafeMutableRawPointer(p.baseAddress! + row).copyMemory(from: d.logSumExp.base! + 4 * lo, byteCount: 4 * n)
        }
        let idBases = (0..<m).map { d.bandIDs[$0].base }, lpBases = (0..<m).map { d.bandLogProbs[$0].base }
        batch.entryCounts.withUnsafeMutableBufferPointer { counts in
        batch.entryIDs.withUnsafeMutableBufferPointer { ids in
        batch.entryLogProbs.withUnsafeMutableBufferPointer { lps in
            for i in 0..<n {
                let t = lo + i
                let c = Int(d.entryCount[t]), ck = min(c, k)
                counts[row + i] = Int32(ck)
                if k == 0 { continue }
                // Safe because rows are k wide and row + i < T.
                let oid = UnsafeMutableRawPointer(ids.baseAddress! + (row + i) * k)
                let olp = UnsafeMutableRawPointer(lps.baseAddress! + (row + i) * k)
                for j in 0..<m {
                    let e0 = edges[j]
                    if c <= e0 { break }
                    let full = min(c, edges[j + 1]) - e0
                    if ck > e0 {
                        let take = min(ck, edges[j + 1]) - e0
                        // Safe because band j holds pos[j] + full <= its count values (checked at decode).
                        (oid + 4 * e0).copyMemory(from: idBases[j]! + 4 * pos[j], byteCount: 4 * take)
                        (olp + 4 * e0).copyMemory(from: lpBases[j]! + 4 * pos[j], byteCount: 4 * take)
                    }
                    pos[j] += full
                }
                if ck < k {
                    let pi = ids.baseAddress! + (row + i) * k, pl = lps.baseAddress! + (row + i) * k
                    for r in ck..<k { pi[r] = 0; pl[r] = -.infinity }
                }
            }
        }}}
        if samples {
            let first = spos, at = batch.sampleIDs.count
            for i in 0..<n {
                spos += hasSamples ? Int(d.sampleCount[lo + i]) : 0
                batch.sampleOffsets.append(at + spos - first)
            }
            if spos > first, let ids = d.sampleIDs.base, let draws = d.sampleDraws.base {
                // Byte copies: a zero-copy column may sit unaligned in the mapping. Ids are u32
                // below V, so their bits are the Int32 ids.
                appendBytes(of: ids + 4 * first, count: spos - first, to: &batch.sampleIDs)
                appendBytes(of: draws + 4 * first, count: spos - first, to: &batch.sampleDraws)
            }
        }
    }
}

/// Stored size of one column over a whole cache (bands of a column added together).
public struct ColumnStatistics: Sendable, Equatable {
    /// Column name without its band suffix (`entry_ids`, `input_ids`, …).
    public var column: String
    /// Values stored.
    public var values: Int
    /// Bytes in the files.
    public var storedBytes: Int
    /// Bytes as plain 32-bit values (`values * 4`).
    public var plainBytes: Int
}

extension CacheReader {
    /// Per-column stored sizes, from the footers (no chunk is decoded).
    public func columnStatistics() -> [ColumnStatistics] {
        var acc: [String: ColumnStatistics] = [:], order: [String] = []
        for s in slots {
            for b in s.layout.json.blocks {
                for c in b.chunks {
                    let name = c.column.split(separator: ".").first.map(String.init) ?? c.column
                    if acc[name] == nil { acc[name] = ColumnStatistics(column: name, values: 0, storedBytes: 0, plainBytes: 0); order.append(name) }
                    acc[name]!.values += c.count; acc[name]!.storedBytes += c.size; acc[name]!.plainBytes += c.count * 4
                }
            }
        }
        return order.compactMap { acc[$0] }
    }

    /// Log-prob encoding of the first shard (all shards of one writer share it).
    public var logProbEncoding: LogProbEncoding { slots.first?.layout.logProbs ?? .default }
}
