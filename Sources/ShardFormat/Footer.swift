/// JSON shapes of the shard footer (FORMAT.md section 4, `Schemas/footer.schema.json`) and
/// their validation into a bounds-checked layout.

struct FooterJSON: Codable, Equatable {
    struct LogProbs: Codable, Equatable {
        var encoding: String
        var stepLog2: Int?
        /// Format 1.2 and later: the step is `stepMultiplier · 2^-stepLog2`; absent means 1.
        var stepMultiplier: Int? = nil
    }
    struct SequenceTable: Codable, Equatable {
        var documentKeys: [String]
        var documentOffsets: [Int]
        var lengths: [Int]
    }
    struct Chunk: Codable, Equatable {
        var column: String
        var offset: Int
        var size: Int
        var count: Int
        var width: Int
        var filter: String
        var codec: String
        var xxh3: String
    }
    struct Block: Codable, Equatable {
        var tokens: Int
        var entries: Int
        var samples: Int
        var chunks: [Chunk]
    }
    var formatVersion: Int
    /// Format 1.1 and later (FORMAT.md section 9); absent means 0.
    var formatMinorVersion: Int?
    var vocabularySize: Int
    var maxEntries: Int
    var maxSamples: Int
    var blockTokens: Int
    var entryBands: [Int]
    var logProbs: LogProbs
    var tokens: Int
    var sequences: Int
    var entries: Int
    var samples: Int
    var sequenceTable: SequenceTable
    var blocks: [Block]
}

/// A chunk descriptor after validation: the bytes `[offset, offset+size)` lie inside the
/// chunk area of the file.
struct ChunkDescriptor: Sendable {
    var offset: Int
    var size: Int
    var count: Int
    var width: Int
    var filter: ChunkFilter
    var codec: Codec
    var xxh3: UInt64
}

/// One block of a shard after validation.
struct BlockLayout: Sendable {
    var firstToken: Int
    var tokens: Int
    var entries: Int
    var samples: Int
    var inputIDs: ChunkDescriptor
    var nextLogProb: ChunkDescriptor
    var logSumExp: ChunkDescriptor
    var entryCount: ChunkDescriptor
    var entryIDDict: ChunkDescriptor?    // when present, entry_ids.j hold ranks into it
    /// Format 1.3 next-token links (both or neither): [n] links, [L] next log-prob deltas;
    /// with them `input_ids` and `next_logprob` hold only the n - L unlinked values.
    var nextLink: ChunkDescriptor?
    var nextLogProbDelta: ChunkDescriptor?
    var entryIDs: [ChunkDescriptor]      // [bands]
    var entryLogProbs: [ChunkDescriptor] // [bands]
    /// Format 1.3 entry references per band (nil: the band's ids are all in entry_ids.j).
    var entryRefs: [ChunkDescriptor?]    // [bands]
    var sampleCount: ChunkDescriptor?
    /// With ``sampleRefs``: only the sampled ids no reference names.
    var sampleIDs: ChunkDescriptor?
    var sampleDraws: ChunkDescriptor?
    /// Format 1.4 sample references: [s] per sample, 0 or a rank step into its position's entries.
    var sampleRefs: ChunkDescriptor?
}

/// How a shard stores entry log-probabilities (FORMAT.md section 5).
public enum LogProbEncoding: Sendable, Equatable, Hashable, CustomStringConvertible {
    /// Quantised to steps of `h = multiplier · 2^-stepLog2` nats (stepLog2 in 0...20,
    /// multiplier in 1...255; a multiplier other than 1 needs format 1.2); worst-case error
    /// `h/2` per entry, plus float32 rounding of the decoded value (FORMAT.md section 5).
    case quantized(stepLog2: Int, multiplier: Int = 1)
    /// Exact float32 (lossless).
    case float32

    /// The default: steps of 5/256 = 0.01953125 nat, worst-case error 5/512 = 0.009765625
    /// nats plus float32 rounding, below 0.01 for every log-prob above -1900 nats.
    public static let `default` = LogProbEncoding.quantized(stepLog2: 8, multiplier: 5)

    /// The quantisation step h in nats (0 for float32).
    public var step: Double {
        if case .quantized(let b, let m) = self { return Double(m) / Double(1 << b) }
        return 0
    }
    /// Largest absolute quantisation error per entry, `h/2` nats (0 for float32).
    public var maxError: Double { step / 2 }
    /// The `stepMultiplier` a footer or manifest records: nil for float32 and for m = 1, so
    /// files without a multiplier stay byte-identical to format 1.1 ones.
    var recordedStepMultiplier: Int? {
        if case .quantized(_, let m) = self, m != 1 { return m }
        return nil
    }
    /// Lowest format minor revision that can store this encoding.
    public var minimumMinorVersion: Int { recordedStepMultiplier == nil ? 0 : 2 }
    public var description: String {
        switch self {
        case .quantized(let b, 1): return "quantized(step=2^-\(b))"
        case .quantized(let b, let m): return "quantized(step=\(m)·2^-\(b))"
        case .float32: return "float32"
        }
    }
}

/// 128-bit content hash of a document (for example XXH3-128 of its bytes).
public struct DocumentHash: Hashable, Sendable, CustomStringConvertible {
    public var high: UInt64
    public var low: UInt64
    public init(high: UInt64, low: UInt64) { self.high = high; self.low = low }
    /// 32 lowercase hex digits, high word first (the footer's rendering).
    public var description: String { hex16(high) + hex16(low) }
    /// Parses 32 lowercase hex digits.
    public init?(hex: String) {
        let u = Array(hex.utf8)
        guard u.count == 32, let h = parseHex16(String(decoding: u[0..<16], as: UTF8.self)),
              let l = parseHex16(String(decoding: u[16..<32], as: UTF8.self)) else { return nil }
        self.init(high: h, low: l)
    }
}

/// A shard's footer after every count, offset and length was checked.
struct ShardLayout: Sendable {
    var vocabularySize: Int
    var maxEntries: Int
    var maxSamples: Int
    var blockTokens: Int
    var bands: [Int]             // [m+1] edges
    var logProbs: LogProbEncoding
    var tokens: Int
    var entries: Int
    var samples: Int
    var documentKeys: [DocumentHash]   // [sequences]
    var documentOffsets: [Int]         // [sequences]
    var lengths: [Int]                 // [sequences]
    var sequenceStarts: [Int]          // [sequences + 1] shard token index
    var blocks: [BlockLayout]
    var json: FooterJSON

    var sequences: Int { lengths.count }

    /// Validates a decoded footer of a file whose chunk area is `[16, chunkEnd)`.
    /// The most bytes one block may decode into (4 GiB): blocks of the writer's default 8192
    /// tokens stay below up to K = 16384, while a forged footer promising a trillion entries
    /// from a few kilobytes of zstd is refused before anything is allocated.
    static let maxDecodedBlockBytes = 1 << 32

    init(_ f: FooterJSON, file: String, chunkEnd: Int) throws {
        func bad(_ r: String, _ chunk: String? = nil) -> ShardFormatError { .malformed(file: file, chunk: chunk, reason: "footer: " + r) }
        guard f.formatVersion == 1 else { throw bad("formatVersion \(f.formatVersion) is not 1") }
        let minor = f.formatMinorVersion ?? 0
        guard (0...ShardFormatVersion.minor).contains(minor) else {
            throw bad("formatMinorVersion \(minor) is newer than this reader's 1.\(ShardFormatVersion.minor)")
        }
        guard (1...(1 << 24)).contains(f.vocabularySize) else { throw bad("vocabularySize \(f.vocabularySize) outside 1...16777216") }
        guard (0...65535).contains(f.maxEntries) else { throw bad("maxEntries \(f.maxEntries) outside 0...65535") }
        guard (0...(1 << 20)).contains(f.maxSamples) else { throw bad("maxSamples \(f.maxSamples) outside 0...1048576") }
        guard f.blockTokens >= 1, f.blockTokens <= 1 << 24 else { throw bad("blockTokens \(f.blockTokens) outside 1...16777216") }
        let e = f.entryBands
        guard e.first == 0, e.last == f.maxEntries, zip(e, e.dropFirst()).allSatisfy({ $0 < $1 }),
              (f.maxEntries == 0) == (e.count == 1) else {
            throw bad("entryBands \(e) must rise strictly from 0 to maxEntries \(f.maxEntries)")
        }
        switch (f.logProbs.encoding, f.logProbs.stepLog2, f.logProbs.stepMultiplier ?? 1) {
        case ("float32", _, _): logProbs = .float32
        case ("quantized", .some(let b), let m) where (0...20).contains(b) && (1...255).contains(m):
            logProbs = .quantized(stepLog2: b, multiplier: m)
            guard minor >= logProbs.minimumMinorVersion else {
                throw bad("logProbs stepMultiplier \(m) needs format 1.\(logProbs.minimumMinorVersion), footer says 1.\(minor)")
            }
        default:
            throw bad("logProbs \(f.logProbs.encoding) stepLog2 \(f.logProbs.stepLog2.map(String.init) ?? "missing") "
                      + "stepMultiplier \(f.logProbs.stepMultiplier.map(String.init) ?? "missing") not valid")
        }
        let limit = CacheManifest.maxCount
        guard [f.tokens, f.entries, f.samples, f.sequences].allSatisfy({ (0...limit).contains($0) }) else {
            throw bad("tokens, sequences, entries or samples outside 0...2^50")
        }
        let st = f.sequenceTable
        guard st.lengths.count == f.sequences, st.documentKeys.count == f.sequences, st.documentOffsets.count == f.sequences else {
            throw bad("sequenceTable arrays must each have \(f.sequences) elements")
        }
        var starts = [0]; starts.reserveCapacity(f.sequences + 1)
        for (i, n) in st.lengths.enumerated() {
            guard n >= 0, n <= f.tokens, st.documentOffsets[i] >= 0 else { throw bad("sequence \(i): bad length \(n) or offset \(st.documentOffsets[i])") }
            starts.append(starts[i] + n)
            guard starts[i + 1] <= f.tokens else { throw bad("sequence lengths exceed tokens \(f.tokens)") }
        }
        guard starts.last == f.tokens else { throw bad("sequence lengths sum to \(starts.last ?? 0), not tokens \(f.tokens)") }
        var keys: [DocumentHash] = []; keys.reserveCapacity(f.sequences)
        for (i, k) in st.documentKeys.enumerated() {
            guard let h = DocumentHash(hex: k) else { throw bad("sequence \(i): document key \"\(k.prefix(40))\" is not 32 hex digits") }
            keys.append(h)
        }
        let nBlocks = (f.tokens + f.blockTokens - 1) / f.blockTokens
        guard f.blocks.count == nBlocks else { throw bad("\(f.blocks.count) blocks, expected \(nBlocks) for \(f.tokens) tokens") }
        let m = e.count - 1
        var blocks: [BlockLayout] = []; blocks.reserveCapacity(nBlocks)
        var sumE = 0, sumS = 0
        var spans: [(offset: Int, end: Int, block: Int, column: String)] = []   // non-empty chunks
        for (b, bj) in f.blocks.enumerated() {
            let first = b * f.blockTokens
            let n = min(f.blockTokens, f.tokens - first)
            guard bj.tokens == n else { throw bad("block \(b) has \(bj.tokens) tokens, expected \(n)") }
            guard bj.entries >= 0, bj.entries <= n * f.maxEntries else { throw bad("block \(b): entries \(bj.entries) outside 0...\(n * f.maxEntries)") }
            guard bj.samples >= 0, bj.samples <= n * f.maxSamples else { throw bad("block \(b): samples \(bj.samples) outside 0...\(n * f.maxSamples)") }
            sumE += bj.entries; sumS += bj.samples
            var byName: [String: ChunkDescriptor] = [:]
            var decodedBytes = 0   // what decoding this block allocates, bounded before any allocation
            for c in bj.chunks {
                let where_ = "block \(b) column \(c.column)"
                guard byName[c.column] == nil else { throw bad("duplicate column", where_) }
                guard c.offset >= 16, c.size >= 0, c.offset <= chunkEnd, c.size <= chunkEnd - c.offset else {
                    throw bad("chunk bytes [\(c.offset), +\(c.size)) outside the chunk area [16, \(chunkEnd))", where_)
                }
                guard (1...4).contains(c.width), c.count >= 0, c.count <= (1 << 40) else { throw bad("width \(c.width) or count \(c.count) invalid", where_) }
                guard let filter = ChunkFilter(rawValue: c.filter) else { throw bad("unknown filter \(c.filter)", where_) }
                guard filter.minorVersion <= minor else { throw bad("filter \(c.filter) needs format 1.\(filter.minorVersion), footer says 1.\(minor)", where_) }
                let codec: Codec
                switch c.codec { case "none": codec = .none; case "lz4": codec = .lz4; case "zstd": codec = .zstd(level: 0)
                default: throw bad("unknown codec \(c.codec)", where_) }
                guard let sum = parseHex16(c.xxh3) else { throw bad("xxh3 \"\(c.xxh3.prefix(20))\" is not 16 hex digits", where_) }
                decodedBytes += c.count * 4   // every column decodes into 4-byte values
                guard decodedBytes <= ShardLayout.maxDecodedBlockBytes else {
                    throw bad("block \(b) decodes to more than \(ShardLayout.maxDecodedBlockBytes >> 30) GiB (counts up to \(c.count) values)", where_)
                }
                if c.size > 0 { spans.append((c.offset, c.offset + c.size, b, c.column)) }
                byName[c.column] = ChunkDescriptor(offset: c.offset, size: c.size, count: c.count, width: c.width, filter: filter, codec: codec, xxh3: sum)
            }
            func col(_ name: String, count: Int?) throws -> ChunkDescriptor {
                guard let d = byName.removeValue(forKey: name) else { throw bad("block \(b): missing column \(name)") }
                if let c = count, d.count != c { throw bad("count \(d.count), expected \(c)", "block \(b) column \(name)") }
                return d
            }
            let link = byName.removeValue(forKey: "next_link"), delta = byName.removeValue(forKey: "next_logprob_delta")
            guard (link == nil) == (delta == nil) else { throw bad("block \(b): next_link and next_logprob_delta come together") }
            if link != nil {
                guard minor >= 3 else { throw bad("block \(b): next-token links need format 1.3, footer says 1.\(minor)") }
                guard m > 0 else { throw bad("block \(b): next-token links without entry bands") }
            }
            let linked = delta.map { $0.count } ?? 0   // L: values derived from links
            guard linked <= n else { throw bad("count \(linked) exceeds the block's \(n) tokens", "block \(b) column next_logprob_delta") }
            if let l = link, l.count != n { throw bad("count \(l.count), expected \(n)", "block \(b) column next_link") }
            let inputIDs = try col("input_ids", count: n - linked), next = try col("next_logprob", count: n - linked)
            let lse = try col("logsumexp", count: n), cnt = try col("entry_count", count: n)
            guard next.width == 4, lse.width == 4 else { throw bad("block \(b): float columns must have width 4") }
            let dict = byName.removeValue(forKey: "entry_id_dict")
            var ids: [ChunkDescriptor] = [], lps: [ChunkDescriptor] = [], refs: [ChunkDescriptor?] = []
            var bandTotal = 0
            for j in 0..<m {
                let ref = byName.removeValue(forKey: "entry_refs.\(j)")
                if ref != nil, minor < 3 { throw bad("entry references need format 1.3, footer says 1.\(minor)", "block \(b) column entry_refs.\(j)") }
                // With references the log-probs count the band's entries, the ids only those no reference names.
                let l = try col("entry_logprobs.\(j)", count: nil), i = try col("entry_ids.\(j)", count: ref == nil ? l.count : nil)
                guard i.count <= l.count, (ref?.count ?? 0) <= l.count else {
                    throw bad("\(i.count) ids and \(ref?.count ?? 0) references for \(l.count) entries", "block \(b) column entry_ids.\(j)")
                }
                bandTotal += l.count
                ids.append(i); lps.append(l); refs.append(ref)
            }
            guard bandTotal == bj.entries else { throw bad("block \(b): band counts sum to \(bandTotal), not entries \(bj.entries)") }
            if case .float32 = logProbs, !lps.allSatisfy({ $0.width == 4 || $0.count == 0 }) { throw bad("block \(b): float32 log-probs need width 4") }
            var sc: ChunkDescriptor?, si: ChunkDescriptor?, sd: ChunkDescriptor?, sr: ChunkDescriptor?
            if f.maxSamples > 0 {
                sr = byName.removeValue(forKey: "sample_refs")
                if sr != nil {
                    guard minor >= 4 else { throw bad("sample references need format 1.4, footer says 1.\(minor)", "block \(b) column sample_refs") }
                    guard m > 0 else { throw bad("block \(b): sample references without entry bands") }
                }
                sc = try col("sample_count", count: n); sd = try col("sample_draws", count: bj.samples)
                // With references the ids are those no reference names.
                si = try col("sample_ids", count: sr == nil ? bj.samples : nil)
                if let r = sr {
                    guard r.count == bj.samples, si!.count <= bj.samples else {
                        throw bad("\(r.count) references and \(si!.count) ids for \(bj.samples) samples", "block \(b) column sample_refs")
                    }
                }
            } else if bj.samples != 0 { throw bad("block \(b): samples without sample columns") }
            if let extra = byName.keys.sorted().first { throw bad("block \(b): unexpected column \(extra)") }
            blocks.append(BlockLayout(firstToken: first, tokens: n, entries: bj.entries, samples: bj.samples,
                                      inputIDs: inputIDs, nextLogProb: next, logSumExp: lse, entryCount: cnt, entryIDDict: dict,
                                      nextLink: link, nextLogProbDelta: delta,
                                      entryIDs: ids, entryLogProbs: lps, entryRefs: refs, sampleCount: sc, sampleIDs: si, sampleDraws: sd, sampleRefs: sr))
        }
        // Chunks may lie in any order (readers use the offsets) but never share bytes: a forged
        // footer could otherwise make one stored range stand for two columns.
        spans.sort { $0.offset < $1.offset }
        for (a, z) in zip(spans, spans.dropFirst()) where z.offset < a.end {
            throw bad("chunk bytes [\(z.offset), \(z.end)) overlap [\(a.offset), \(a.end)) of block \(a.block) column \(a.column)",
                      "block \(z.block) column \(z.column)")
        }
        guard sumE == f.entries, sumS == f.samples else { throw bad("block totals (\(sumE) entries, \(sumS) samples) differ from shard totals") }
        vocabularySize = f.vocabularySize; maxEntries = f.maxEntries; maxSamples = f.maxSamples
        blockTokens = f.blockTokens; bands = e; tokens = f.tokens; entries = f.entries; samples = f.samples
        documentKeys = keys; documentOffsets = st.documentOffsets; lengths = st.lengths; sequenceStarts = starts
        self.blocks = blocks; json = f
    }
}

/// The cache format version this library reads and writes (FORMAT.md section 9).
public enum ShardFormatVersion {
    /// Major version: in both ends of every shard, in footers and manifests.
    public static let major = 1
    /// Highest minor revision this library reads, and the one it writes by default. 1 adds
    /// the `buckets` and `delta-buckets` chunk filters; 2 adds log-prob steps
    /// `stepMultiplier · 2^-stepLog2`; 3 adds next-token links (`next_link`,
    /// `next_logprob_delta`) and entry references (`entry_refs.j`); 4 adds sample references
    /// (`sample_refs`); the footer names it.
    public static let minor = 4
}
