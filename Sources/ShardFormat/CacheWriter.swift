import Foundation

/// Settings of a cache writer.
public struct WriterOptions: Sendable, Equatable {
    /// Codec of every chunk (default zstd level 3).
    public var codec: Codec = .zstd(level: 3)
    /// Log-prob storage (default: quantised to 5/256 nat, error <= 5/512 nat, in format 1.2;
    /// 1/64 nat when an older minor version is asked for).
    public var logProbs: LogProbEncoding = .default
    /// Tokens per block (the unit of lazy decoding). Default 8192.
    public var blockTokens = 8192
    /// Band edges for entries (`[0, e1, ..., K]`); nil derives `[0, 8, 16, 32, 64, ...]` up to K.
    public var entryBands: [Int]? = nil
    /// A shard is closed at the first sequence boundary once it holds this many bytes. Default 256 MiB.
    public var targetShardBytes = 256 << 20
    /// Format minor version to write (FORMAT.md section 9). 3 (the default) links each
    /// position's real next token to its own top entries (`next_link`) and names entries by
    /// their index at the last position with the same input (`entry_refs.j`); 2 allows log-prob
    /// steps that are not powers of two; 1 codes compressed entry ids, quantised log-prob gaps
    /// and the id dictionary with the bucket filters; 0 writes byte planes only, files that
    /// readers of format 1.0 read.
    public var formatMinorVersion = ShardFormatVersion.minor

    /// `logProbs: nil` takes the default of `formatMinorVersion`: ``LogProbEncoding/default``
    /// from 1.2 on, steps of 1/64 nat before (what those versions' writers wrote).
    public init(codec: Codec = .zstd(level: 3), logProbs: LogProbEncoding? = nil, blockTokens: Int = 8192,
                entryBands: [Int]? = nil, targetShardBytes: Int = 256 << 20, formatMinorVersion: Int = ShardFormatVersion.minor) {
        self.codec = codec; self.blockTokens = blockTokens
        self.logProbs = logProbs ?? (formatMinorVersion >= 2 ? .default : .quantized(stepLog2: 6))
        self.entryBands = entryBands; self.targetShardBytes = targetShardBytes; self.formatMinorVersion = formatMinorVersion
    }

    /// The default band edges for `k` entries: 0, 8, 16, 32, … doubling, ending at `k`.
    ///
    /// Why not finer: each band is a chunk with its own entropy-coder statistics, and twelve
    /// bands (0, 1, 2, 3, 4, 6, 8, 12, …) coded `bench format`'s rows 0.7 B/token (0.5 %)
    /// smaller, but a reader then copies a token's entries in twelve pieces instead of four,
    /// which halved top-8 reads (15 to 7.5 M tokens/s) and slowed top-64 reads by a fifth.
    public static func defaultBands(k: Int) -> [Int] {
        if k == 0 { return [0] }
        var e = [0], next = 8
        while next < k { e.append(next); next *= 2 }
        e.append(k)
        return e
    }
}

/// What a cache records about its teacher and capture, written into every manifest.
public struct CacheDescription: Sendable, Equatable {
    /// Vocabulary size V (256 ... 16,777,216); every id is < V.
    public var vocabularySize: Int
    public var fingerprints: Fingerprints
    /// Capture settings; `capture.k` is K (most entries per position), and `capture.samples`
    /// bounds the distinct sampled ids per position (0: no sample columns).
    public var capture: CaptureSettings
    /// Recorded in the manifest as `origin` (nil: not recorded).
    public var origin: CacheOrigin?
    public init(vocabularySize: Int, fingerprints: Fingerprints, capture: CaptureSettings, origin: CacheOrigin? = nil) {
        self.vocabularySize = vocabularySize; self.fingerprints = fingerprints; self.capture = capture; self.origin = origin
    }
}

/// Streaming writer of one cache partition: sequences of per-token teacher targets in, shards
/// and manifests out, with memory bounded by one block plus one shard's footer.
///
/// Usage (teacher pass):
/// ```swift
/// let w = try CacheWriter(directory: dir, description: d, options: WriterOptions())
/// for s in sequences.dropFirst(w.resumedSequences) {      // skip what a killed run published
///     try w.beginSequence(documentKey: s.key, documentOffset: s.offset)
///     for t in s.tokens { try w.appendToken(inputID: …, nextTokenLogProb: …, logSumExp: …,
///                                           entryIDs: ids[...], entryLogProbs: lps[...]) }
///     try w.endSequence()
///     w.teacherCost.seconds += …
/// }
/// let manifest = try w.finish()
/// ```
/// Shards are published atomically (temp file, fsync, rename, fsync directory); a writer killed
/// at any point leaves only complete shards. A new writer on the same directory and partition
/// removes stale temporaries and reports in ``resumedSequences`` how many sequences are already
/// published. Not thread-safe: one writer per partition.
public final class CacheWriter {
    public let directory: String
    public let description: CacheDescription
    public let options: WriterOptions
    public let partition: PartitionInfo
    /// Sequences already published by an earlier run of this partition; the caller must skip
    /// them (in the same order) so the cache continues where it stopped.
    public let resumedSequences: Int
    /// The teacher's cost so far for this partition (the caller adds to it); recorded in the
    /// partition manifest at every shard and at ``finish()``.
    public var teacherCost = TeacherCost()

    private var shards: [ShardEntry] = []
    private let bands: [Int]
    private var shard: ShardBuilder?
    private var inSequence = false
    private let encoder = ChunkEncoder()
    private var finished = false
    /// Held from init until the writer goes away: one writer per partition.
    private let lock: CacheLock

    /// Opens (creating the directory if needed) partition `partition` of `partitionCount`.
    /// - Throws: ``ShardFormatError/invalidInput(_:)`` for bad settings; I/O errors naming the
    ///   call; `malformed` if an already-published shard of this partition is damaged.
    public init(directory: String, description: CacheDescription, options: WriterOptions = WriterOptions(),
                partition: Int = 0, partitionCount: Int = 1) throws {
        let d = description
        guard (1...(1 << 24)).contains(d.vocabularySize) else { throw ShardFormatError.invalidInput("vocabulary size \(d.vocabularySize) outside 1...16777216") }
        guard (0...65535).contains(d.capture.k) else { throw ShardFormatError.invalidInput("K = \(d.capture.k) outside 0...65535") }
        guard (0...(1 << 20)).contains(d.capture.samples) else { throw ShardFormatError.invalidInput("samples \(d.capture.samples) outside 0...1048576") }
        if case .zstd(let l) = options.codec, !(1...22).contains(l) { throw ShardFormatError.invalidInput("zstd level \(l) outside 1...22") }
        guard options.blockTokens >= 1, options.blockTokens <= 1 << 24 else { throw ShardFormatError.invalidInput("blockTokens \(options.blockTokens) outside 1...16777216") }
        guard (0...ShardFormatVersion.minor).contains(options.formatMinorVersion) else {
            throw ShardFormatError.invalidInput("formatMinorVersion \(options.formatMinorVersion) outside 0...\(ShardFormatVersion.minor)")
        }
        if case .quantized(let b, let m) = options.logProbs {
            guard (0...20).contains(b) else { throw ShardFormatError.invalidInput("stepLog2 \(b) outside 0...20") }
            guard (1...255).contains(m) else { throw ShardFormatError.invalidInput("step multiplier \(m) outside 1...255") }
            guard options.formatMinorVersion >= options.logProbs.minimumMinorVersion else {
                throw ShardFormatError.invalidInput("log-prob step \(m)·2^-\(b) needs format 1.\(options.logProbs.minimumMinorVersion); "
                                                    + "format 1.\(options.formatMinorVersion) stores steps 2^-b only")
            }
        }
        guard partitionCount >= 1, (0..<partitionCount).contains(partition), partitionCount <= 99999 else {
            throw ShardFormatError.invalidInput("partition \(partition) of \(partitionCount)")
        }
        let bands = options.entryBands ?? WriterOptions.defaultBands(k: d.capture.k)
        guard bands.first == 0, bands.last == d.capture.k, zip(bands, bands.dropFirst()).allSatisfy({ $0 < $1 }) else {
            throw ShardFormatError.invalidInput("entry bands \(bands) must rise strictly from 0 to K = \(d.capture.k)")
        }
        self.directory = directory; self.description = d; self.options = options; self.bands = bands
        self.partition = PartitionInfo(index: partition, count: partitionCount)
        try makeDirectory(directory)
        lock = try CacheLock(directory: directory, name: CacheLock.partitionFileName(partition))

        // Resume: drop stale temporaries (the lock says no other writer of this partition
        // runs), adopt published shards of this partition in order.
        let prefix = "part-\(pad(partition, 5))-shard-"
        var found: [ShardEntry] = []
        for name in try listDirectory(directory) {
            if (name.hasPrefix("." + prefix) || name.hasPrefix("." + CacheManifest.partitionFileName(partition) + ".")) && name.hasSuffix(".tmp") {
                unlink(directory + "/" + name)
            } else if name.hasPrefix(prefix) && name.hasSuffix(".lcs") {
                let expected = CacheWriter.shardName(partition: partition, index: found.count)
                guard name == expected else {
                    throw ShardFormatError.mismatch(file: directory + "/" + name, reason: "unexpected shard (expected \(expected) next)")
                }
                let r = try ShardReader(path: directory + "/" + name)
                guard r.layout.vocabularySize == d.vocabularySize, r.layout.maxEntries == d.capture.k else {
                    throw ShardFormatError.mismatch(file: r.path, reason: "vocabulary or K differ from this writer's")
                }
                found.append(ShardEntry(file: name, partition: partition, tokens: r.layout.tokens, sequences: r.layout.sequences,
                                        entries: r.layout.entries, samples: r.layout.samples, bytes: r.bytes.count,
                                        xxh3: hex16(Checksum.xxh3(r.bytes))))
            }
        }
        if let old = try? CacheManifest.load(directory: directory, name: CacheManifest.partitionFileName(partition)),
           old.shards.count <= found.count, Array(found.prefix(old.shards.count)) == old.shards {
            teacherCost = old.teacherCost
        }
        shards = found
        resumedSequences = found.reduce(0) { $0 + $1.sequences }
    }

    /// Final name of shard `index` of partition `partition`.
    public static func shardName(partition: Int, index: Int) -> String { "part-\(pad(partition, 5))-shard-\(pad(index, 6)).lcs" }

    /// Starts a sequence (a training window) of document `documentKey` at token
    /// `documentOffset` of that document.
    public func beginSequence(documentKey: DocumentHash, documentOffset: Int) throws {
        guard !finished else { throw ShardFormatError.invalidInput("writer already finished") }
        guard !inSequence else { throw ShardFormatError.invalidInput("beginSequence inside an open sequence") }
        guard documentOffset >= 0 else { throw ShardFormatError.invalidInput("negative document offset \(documentOffset)") }
        if shard == nil {
            shard = try ShardBuilder(directory: directory, name: CacheWriter.shardName(partition: partition.index, index: shards.count),
                                     description: description, options: options, bands: bands)
        }
        shard!.beginSequence(key: documentKey, offset: documentOffset)
        inSequence = true
    }

    /// Appends one token position to the open sequence.
    /// - Parameters:
    ///   - inputID: the token fed to the model (< V).
    ///   - nextTokenLogProb: exact teacher log-prob of the real next token (nats).
    ///   - logSumExp: full-vocabulary logsumexp of logits / temperature.
    ///   - entryIDs: 0...K ids in descending probability order (< V).
    ///   - entryLogProbs: their log-probs, non-increasing, no NaN (same count).
    ///   - sampleIDs: distinct sampled ids (0...capture.samples of them).
    ///   - sampleDraws: their draw counts (>= 1, same count).
    /// - Throws: ``ShardFormatError/invalidInput(_:)`` naming the violated rule; I/O errors.
    public func appendToken(inputID: Int32, nextTokenLogProb: Float, logSumExp: Float,
                            entryIDs: ArraySlice<Int32>, entryLogProbs: ArraySlice<Float>,
                            sampleIDs: ArraySlice<Int32> = [], sampleDraws: ArraySlice<UInt32> = []) throws {
        try entryIDs.withUnsafeBufferPointer { ids in
            try entryLogProbs.withUnsafeBufferPointer { lps in
                try sampleIDs.withUnsafeBufferPointer { sids in
                    try sampleDraws.withUnsafeBufferPointer { sd in
                        try appendToken(inputID: inputID, nextTokenLogProb: nextTokenLogProb, logSumExp: logSumExp,
                                        entryIDs: ids, entryLogProbs: lps, sampleIDs: sids, sampleDraws: sd)
                    }
                }
            }
        }
    }

    /// ``appendToken(inputID:nextTokenLogProb:logSumExp:entryIDs:entryLogProbs:sampleIDs:sampleDraws:)``
    /// over borrowed buffers (the C ABI's path: no array per position). The buffers are read
    /// during the call only.
    public func appendToken(inputID: Int32, nextTokenLogProb: Float, logSumExp: Float,
                            entryIDs: UnsafeBufferPointer<Int32>, entryLogProbs: UnsafeBufferPointer<Float>,
                            sampleIDs: UnsafeBufferPointer<Int32>, sampleDraws: UnsafeBufferPointer<UInt32>) throws {
        guard inSequence, let s = shard else { throw ShardFormatError.invalidInput("appendToken outside a sequence") }
        try s.append(inputID: inputID, next: nextTokenLogProb, lse: logSumExp, ids: entryIDs, lps: entryLogProbs,
                     sampleIDs: sampleIDs, draws: sampleDraws)
        if s.pendingTokens >= options.blockTokens { try s.flushBlock(encoder) }
    }

    /// Closes the open sequence; rolls the shard if it reached the target size.
    public func endSequence() throws {
        guard inSequence, let s = shard else { throw ShardFormatError.invalidInput("endSequence without beginSequence") }
        inSequence = false
        if s.bytesSoFar >= options.targetShardBytes { try closeShard() }
    }

    private func closeShard() throws {
        guard let s = shard else { return }
        shards.append(try s.publish(encoder, partition: partition.index))
        shard = nil
        try publishPartitionManifest()
    }

    private func manifest() -> CacheManifest {
        let (lp, step) = { () -> (String, Int) in
            if case .quantized(let b, _) = options.logProbs { return ("quantized", b) }; return ("float32", 0) }()
        var m = CacheManifest(vocabularySize: description.vocabularySize, fingerprints: description.fingerprints,
                              capture: description.capture,
                              encoding: EncodingSettings(codec: options.codec.name, level: Int(options.codec.level), logProbs: lp, stepLog2: step,
                                                         stepMultiplier: options.logProbs.recordedStepMultiplier,
                                                         blockTokens: options.blockTokens, entryBands: bands),
                              teacherCost: teacherCost, origin: description.origin, partition: partition, totals: CacheTotals(), shards: shards)
        m.recomputeTotals()
        return m
    }

    private func publishPartitionManifest() throws {
        try manifest().publish(directory: directory, name: CacheManifest.partitionFileName(partition.index))
    }

    /// Publishes the last shard and the partition manifest; with a single partition also the
    /// merged `manifest.json`. Returns the partition manifest.
    @discardableResult
    public func finish() throws -> CacheManifest {
        guard !inSequence else { throw ShardFormatError.invalidInput("finish inside an open sequence") }
        guard !finished else { throw ShardFormatError.invalidInput("writer already finished") }
        if let s = shard, s.tokenCount > 0 || s.sequenceCount > 0 { try closeShard() } else { shard = nil; try publishPartitionManifest() }
        finished = true
        if partition.count == 1 { try CacheManifest.merge(directory: directory) }
        lock.release()
        return manifest()
    }
}

/// One shard being written: the current block's rows plus the footer so far.
final class ShardBuilder {
    let description: CacheDescription
    let options: WriterOptions
    let bands: [Int]
    let file: TempFile
    private let k: Int, v: UInt32, maxSamples: Int
    private let scale: Double   // 2^stepLog2, or 0 for float32
    private let multiplier: Double  // of the step m·2^-stepLog2
    private let stepF: Float        // the step h = m·2^-stepLog2, exact in float32 (8 significant bits)
    private var rowIDs: RowIDSet

    // Current block, token-major: [n] per token, [e] per entry, [s] per sample.
    private var inIDs: [UInt32] = [], nextLP: [UInt32] = [], lse: [UInt32] = [], counts: [UInt32] = []
    private var entIDs: [UInt32] = [], entLP: [UInt32] = []
    private var sCounts: [UInt32] = [], sIDs: [UInt32] = [], sDraws: [UInt32] = []
    // Sample references (format 1.4, FORMAT.md section 4.7): [s] per sample, and the ids they
    // leave stored.
    private let sampleReferencing: Bool
    private var sRefs: [UInt32] = [], sStored: [UInt32] = []
    private var wroteSampleReferences = false   // some block of this shard has them
    // Next-token links and entry references (format 1.3, FORMAT.md section 4): [n] per token.
    private let linking: Bool           // both are written (references where they pay)
    private let finder = ReferenceFinder()
    private var link: [UInt32] = []     // [n] 0, or r + 1: input id of t+1 is entry r of t
    private var linkLP: [UInt32] = []   // [n] decoded float32 bits of that entry's log-prob
    private var prevIDs: [UInt32] = []  // [<= e_1] band-0 ids of the previous position
    private var prevLPs: [UInt32] = []  // [<= e_1] their decoded log-prob bits
    private var prevLinkable = false    // previous position is in this block and sequence

    private var blocks: [FooterJSON.Block] = []
    private var keys: [String] = [], offsets: [Int] = [], lengths: [Int] = []
    private(set) var tokenCount = 0
    private var entryTotal = 0, sampleTotal = 0

    var pendingTokens: Int { inIDs.count }
    var sequenceCount: Int { lengths.count }
    var bytesSoFar: Int { file.size }

    init(directory: String, name: String, description: CacheDescription, options: WriterOptions, bands: [Int]) throws {
        self.description = description; self.options = options; self.bands = bands
        k = description.capture.k; v = UInt32(description.vocabularySize); maxSamples = description.capture.samples
        if case .quantized(let b, let m) = options.logProbs { scale = Double(1 << b); multiplier = Double(m) } else { scale = 0; multiplier = 1 }
        stepF = scale == 0 ? 0 : Float(multiplier) / Float(scale)
        rowIDs = RowIDSet(vocabularySize: description.vocabularySize)
        linking = options.formatMinorVersion >= 3 && options.codec != .none && bands.count > 1
        sampleReferencing = options.formatMinorVersion >= 4 && options.codec != .none && bands.count > 1 && maxSamples > 0
        file = try TempFile(directory: directory, finalName: name)
        var header = shardMagic
        header += le32(1) + le32(0)
        try file.write(header)
    }

    func beginSequence(key: DocumentHash, offset: Int) {
        keys.append(key.description); offsets.append(offset); lengths.append(0)
        prevLinkable = false
    }

    func append(inputID: Int32, next: Float, lse l: Float, ids: UnsafeBufferPointer<Int32>, lps: UnsafeBufferPointer<Float>,
                sampleIDs: UnsafeBufferPointer<Int32>, draws: UnsafeBufferPointer<UInt32>) throws {
        let c = ids.count
        guard UInt32(bitPattern: inputID) < v else { throw ShardFormatError.invalidInput("input id \(inputID) outside 0..<\(v)") }
        guard c <= k else { throw ShardFormatError.invalidInput("\(c) entries exceed K = \(k)") }
        guard lps.count == c else { throw ShardFormatError.invalidInput("\(c) entry ids but \(lps.count) log-probs") }
        guard sampleIDs.count == draws.count else { throw ShardFormatError.invalidInput("\(sampleIDs.count) sample ids but \(draws.count) draw counts") }
        guard !next.isNaN, !l.isNaN else { throw ShardFormatError.invalidInput("next-token log-prob \(next) or logsumexp \(l) is NaN") }
        guard sampleIDs.count <= maxSamples else { throw ShardFormatError.invalidInput("\(sampleIDs.count) samples exceed the capture's \(maxSamples)") }
        // Validate everything first so a rejected row leaves the block untouched.
        var prev = Float.infinity
        for r in 0..<c {
            let id = ids[r], l = lps[r]
            guard UInt32(bitPattern: id) < v else { throw ShardFormatError.invalidInput("entry id \(id) outside 0..<\(v)") }
            guard !l.isNaN else { throw ShardFormatError.invalidInput("entry \(r) log-prob is NaN") }
            guard l <= prev else { throw ShardFormatError.invalidInput("entry \(r) log-prob \(l) above entry \(r - 1)'s \(prev): not descending") }
            guard scale == 0 || -Double(l) * scale / multiplier > -0.5 else {
                throw ShardFormatError.invalidInput("entry \(r) log-prob \(l) is positive by half a quantisation step or more")
            }
            prev = l
        }
        for i in 0..<sampleIDs.count {
            guard UInt32(bitPattern: sampleIDs[i]) < v else { throw ShardFormatError.invalidInput("sample id \(sampleIDs[i]) outside 0..<\(v)") }
            guard draws[i] >= 1 else { throw ShardFormatError.invalidInput("sample draw count 0") }
        }
        if let id = rowIDs.firstRepeat(count: c, { UInt32(bitPattern: ids[$0]) }) {
            throw ShardFormatError.invalidInput("entry id \(id) appears twice in one position")
        }
        if let id = rowIDs.firstRepeat(count: sampleIDs.count, { UInt32(bitPattern: sampleIDs[$0]) }) {
            throw ShardFormatError.invalidInput("sampled id \(id) appears twice in one position (give it one draw count)")
        }
        if linking {
            // This position's input id may be one of the previous position's top entries.
            if prevLinkable, let r = prevIDs.firstIndex(of: UInt32(bitPattern: inputID)) {
                link[link.count - 1] = UInt32(r + 1); linkLP[linkLP.count - 1] = prevLPs[r]
            }
            prevIDs.removeAll(keepingCapacity: true); prevLPs.removeAll(keepingCapacity: true)
            link.append(0); linkLP.append(0)
            prevLinkable = true
        }
        let e1 = linking ? min(c, bands[1]) : 0
        var prevQ: UInt32 = 0
        for r in 0..<c {
            entIDs.append(UInt32(bitPattern: ids[r]))
            if r < e1 { prevIDs.append(UInt32(bitPattern: ids[r])) }
            if scale == 0 {
                entLP.append(lps[r].bitPattern)
                if r < e1 { prevLPs.append(lps[r].bitPattern) }
                continue
            }
            // -l·2^b is exact in double; the one division by m is correctly rounded (FORMAT.md section 5).
            let x = -Double(lps[r]) * scale / multiplier
            // Half away from zero; -inf and huge values clamp to 2^24 - 1.
            let q: UInt32 = x >= 16_777_215 ? 16_777_215 : UInt32(max(0, x.rounded()))
            entLP.append(r == 0 ? q : q - prevQ)
            prevQ = q
            // What every reader decodes (FORMAT.md section 5): one float32 rounding of -Q·h.
            if r < e1 { prevLPs.append((-Float(q) * stepF).bitPattern) }
        }
        for i in 0..<sampleIDs.count { sIDs.append(UInt32(bitPattern: sampleIDs[i])); sDraws.append(draws[i]) }
        if sampleReferencing { referenceSamples(ids: ids, sampleIDs: sampleIDs, draws: draws) }
        inIDs.append(UInt32(bitPattern: inputID)); nextLP.append(next.bitPattern); lse.append(l.bitPattern)
        counts.append(UInt32(c)); sCounts.append(UInt32(sampleIDs.count))
        lengths[lengths.count - 1] += 1
        tokenCount += 1
    }

    /// A position's sample references (FORMAT.md section 4.7): within each run of equal draw
    /// counts, a sampled id found among the position's entries at a rank above the run's last
    /// referenced one is stored as the step to it; any other id is stored as it is (reference 0).
    /// Samples ordered by draw count, then by probability (as capture writes them) name ascending
    /// ranks, so most in-head ids become small steps.
    private func referenceSamples(ids: UnsafeBufferPointer<Int32>, sampleIDs: UnsafeBufferPointer<Int32>,
                                  draws: UnsafeBufferPointer<UInt32>) {
        var base = -1
        for i in 0..<sampleIDs.count {
            if i > 0 && draws[i] != draws[i - 1] { base = -1 }
            let id = sampleIDs[i]
            var r = base + 1
            while r < ids.count && ids[r] != id { r += 1 }
            if r < ids.count {
                sRefs.append(UInt32(r - base))
                base = r
            } else {
                sRefs.append(0)
                sStored.append(UInt32(bitPattern: id))
            }
        }
    }

    /// Encodes the pending rows as one block.
    func flushBlock(_ enc: ChunkEncoder) throws {
        let n = inIDs.count
        if n == 0 { return }
        var chunks: [FooterJSON.Chunk] = []
        let minor = options.formatMinorVersion >= 1
        func put(_ name: String, _ values: [UInt32], float: Bool = false, buckets: ChunkFilter? = nil,
                 matches: SymbolMatches = .long) throws {
            let offset = file.size
            var sum: UInt64 = 0
            let (f, w, c) = try values.withUnsafeBufferPointer { vals in
                try enc.encode(vals, codec: options.codec, float: float, buckets: minor ? buckets : nil, matches: matches) { bytes in
                    sum = Checksum.xxh3(bytes)
                    try file.write(bytes)
                }
            }
            chunks.append(.init(column: name, offset: offset, size: file.size - offset, count: values.count, width: w,
                                filter: f.rawValue, codec: c.name, xxh3: hex16(sum)))
        }
        var ins = inIDs, nexts = nextLP, deltas: [UInt32] = []
        if linking {
            // FORMAT.md section 4, next-token links: a linked position's successor needs no
            // input id, and its own next log-prob is stored as the difference of float32 bit
            // patterns from the linked entry's decoded log-prob (0 when lossless).
            ins = []; nexts = []
            for t in 0..<n {
                if t == 0 || link[t - 1] == 0 { ins.append(inIDs[t]) }
                if link[t] == 0 { nexts.append(nextLP[t]); continue }
                deltas.append(zigzag(Int32(bitPattern: nextLP[t]) &- Int32(bitPattern: linkLP[t])))
            }
        }
        try put("input_ids", ins)
        try put("next_logprob", nexts, float: true)
        try put("logsumexp", lse, float: true)
        try put("entry_count", counts)
        if linking {
            try put("next_link", link, buckets: .buckets)
            try put("next_logprob_delta", deltas, buckets: .buckets)
        }
        // Compressed blocks store entry ids as ranks into a dictionary of the block's distinct
        // ids by descending frequency (docs/format-design.md): frequent ids get small ranks, whose
        // byte planes code far better than the ids' own (which carry no frequency order).
        let useDict = options.codec != .none && !entIDs.isEmpty
        if useDict {
            let dict = buildDictionary()
            // Ascending ids within a run of equal frequency class: small zigzag deltas.
            try put("entry_id_dict", dict, buckets: .deltaBuckets)
            for i in entIDs.indices { entIDs[i] = rankOf[Int(entIDs[i])] }
        }
        var bandIDs: [[UInt32]] = [], bandLPs: [[UInt32]] = [], bandRefs: [[UInt32]?] = []
        var starts = [Int](repeating: 0, count: n + 1)   // [n+1] first entry of each position
        for t in 0..<n { starts[t + 1] = starts[t] + Int(counts[t]) }
        let refPos = linking ? referencePositions() : []
        let found = linking ? referenceIndices(positions: refPos, starts: starts) : nil
        for j in 0..<(bands.count - 1) {
            let lo = bands[j], hi = bands[j + 1]
            var ids: [UInt32] = [], lps: [UInt32] = []
            for t in 0..<n {
                let c = Int(counts[t]), off = starts[t]
                if c > lo { for r in lo..<min(c, hi) { ids.append(entIDs[off + r]); lps.append(entLP[off + r]) } }
            }
            bandRefs.append(found.flatMap { references(band: lo..<hi, positions: refPos, found: $0, starts: starts, ids: &ids) })
            bandIDs.append(ids); bandLPs.append(lps)
        }
        // Frequency ranks and quantised gaps are small and skewed: bucket symbols code them
        // near their order-0 entropy (docs/format-design.md).
        for j in bandIDs.indices {
            try put("entry_ids.\(j)", bandIDs[j], buckets: .buckets)
            if let refs = bandRefs[j] { try put("entry_refs.\(j)", refs, buckets: .buckets) }
        }
        // Format 1.3 writers search log-prob gap symbols for local repeats only (smaller; a
        // compressor setting, so older minor versions keep their writers' bytes).
        let lpMatches: SymbolMatches = options.formatMinorVersion >= 3 ? .local : .long
        for j in bandLPs.indices { try put("entry_logprobs.\(j)", bandLPs[j], float: scale == 0, buckets: .buckets, matches: lpMatches) }
        if maxSamples > 0 {
            // References only in blocks where some sample has one (a head-tail cache draws
            // outside the head: none there).
            let referenced = sampleReferencing && sStored.count < sIDs.count
            wroteSampleReferences = wroteSampleReferences || referenced
            try put("sample_count", sCounts)
            if referenced {
                // In decoding order: references need the draw counts, stored ids the references.
                try put("sample_draws", sDraws)
                try put("sample_refs", sRefs, buckets: .buckets)
                try put("sample_ids", sStored)
            } else {
                try put("sample_ids", sIDs)
                try put("sample_draws", sDraws)
            }
        }
        blocks.append(.init(tokens: n, entries: entIDs.count, samples: sIDs.count, chunks: chunks))
        entryTotal += entIDs.count; sampleTotal += sIDs.count
        inIDs.removeAll(keepingCapacity: true); nextLP.removeAll(keepingCapacity: true); lse.removeAll(keepingCapacity: true)
        counts.removeAll(keepingCapacity: true); entIDs.removeAll(keepingCapacity: true); entLP.removeAll(keepingCapacity: true)
        sCounts.removeAll(keepingCapacity: true); sIDs.removeAll(keepingCapacity: true); sDraws.removeAll(keepingCapacity: true)
        sRefs.removeAll(keepingCapacity: true); sStored.removeAll(keepingCapacity: true)
        link.removeAll(keepingCapacity: true); linkLP.removeAll(keepingCapacity: true)
        prevLinkable = false   // links stay inside a block, so blocks decode on their own
    }

    /// Each token's reference position in the block (-1: none; FORMAT.md section 4).
    private func referencePositions() -> [Int] {
        finder.reset(tokens: inIDs.count)
        return inIDs.map { finder.next($0) }
    }

    /// For every entry of the block, the index of its id in its position's reference position's
    /// entries, or -1; nil when a sample of the block's first 1,024 positions finds fewer than
    /// 40 % of their entries there (the generator's rows: 19 %), so references are not tried.
    private func referenceIndices(positions u: [Int], starts: [Int]) -> [Int16]? {
        let n = u.count
        if seen.count < Int(v) { seen = .init(repeating: 0, count: Int(v)) }
        var found = [Int16](repeating: -1, count: starts[n])   // [E]
        var sampled = 0, hits = 0
        for t in 0..<n {
            if t == 1024 && 5 * hits < 2 * sampled { return nil }
            let p = u[t]
            if p < 0 { continue }
            // seen[id] = stamp << 16 | index marks u's entries without clearing them afterwards.
            stamp = stamp == 0xFFFF ? 1 : stamp + 1
            if stamp == 1 { seen.withUnsafeMutableBufferPointer { $0.update(repeating: 0) } }
            for r in 0..<(starts[p + 1] - starts[p]) { seen[Int(entIDs[starts[p] + r])] = stamp << 16 | UInt32(r) }
            for e in starts[t]..<starts[t + 1] {
                let m = seen[Int(entIDs[e])]
                if m >> 16 == stamp { found[e] = Int16(truncatingIfNeeded: m & 0xFFFF); hits += 1 }
            }
            sampled += starts[t + 1] - starts[t]
        }
        return n <= 1024 && 5 * hits < 2 * sampled ? nil : found
    }

    /// Entry references of one band (FORMAT.md section 4): given the band's ids (dictionary
    /// ranks, position by position) and ``referenceIndices(positions:starts:)``, returns its
    /// `entry_refs` values and leaves in `ids` only the ids no reference names; or returns nil
    /// and leaves `ids` whole when fewer than half of the band's entries that have a reference
    /// position find their id among its first `min(c_u, e_{j+1})` (references would then cost
    /// more than they save).
    private func references(band: Range<Int>, positions u: [Int], found: [Int16], starts: [Int], ids: inout [UInt32]) -> [UInt32]? {
        var refs: [UInt32] = [], kept: [UInt32] = [], hits = 0
        var i = 0   // read position in ids
        for t in 0..<u.count {
            let c = min(starts[t + 1] - starts[t], band.upperBound)
            if c <= band.lowerBound { continue }
            let p = u[t]
            if p < 0 { kept.append(contentsOf: ids[i..<(i + c - band.lowerBound)]); i += c - band.lowerBound; continue }
            let limit = min(starts[p + 1] - starts[p], band.upperBound)
            for r in band.lowerBound..<c {
                let q = ids[i], at = Int(found[starts[t] + r]); i += 1
                if at >= 0 && at < limit { refs.append(1 + zigzag(Int32(at) - Int32(r))); hits += 1 } else { refs.append(0); kept.append(q) }
            }
        }
        guard hits > 0, 2 * hits >= refs.count else { return nil }
        ids = kept
        return refs
    }

    private var seen: [UInt32] = []       // [V] stamp << 16 | index of an id in the reference position's list
    private var stamp: UInt32 = 0
    private var idCounts: [UInt32] = []   // [V] occurrences in the current block
    private var rankOf: [UInt32] = []     // [V] rank of each id in the current block's dictionary

    /// The block's distinct entry ids by descending count, ties by ascending id; fills `rankOf`.
    /// From format 1.1 counts are compared by their bucket (`Buckets.symbol`, steps of about
    /// 19 %): ranks stay sorted to within the rank buckets' own resolution, and the many ids of
    /// one count class form long ascending runs whose deltas code in a few bits.
    private func buildDictionary() -> [UInt32] {
        if idCounts.isEmpty { idCounts = .init(repeating: 0, count: Int(v)); rankOf = .init(repeating: 0, count: Int(v)) }
        var distinct: [UInt32] = []
        for id in entIDs {
            if idCounts[Int(id)] == 0 { distinct.append(id) }
            idCounts[Int(id)] += 1
        }
        if options.formatMinorVersion >= 1 {
            for id in distinct { idCounts[Int(id)] = UInt32(Buckets.symbol(idCounts[Int(id)]).symbol) }
        }
        distinct.sort { a, b in
            let ca = idCounts[Int(a)], cb = idCounts[Int(b)]
            return ca > cb || (ca == cb && a < b)
        }
        for (r, id) in distinct.enumerated() { rankOf[Int(id)] = UInt32(r); idCounts[Int(id)] = 0 }
        return distinct
    }

    /// Writes the footer and trailer, publishes the file and returns its manifest entry.
    func publish(_ enc: ChunkEncoder, partition: Int) throws -> ShardEntry {
        try flushBlock(enc)
        let lp: FooterJSON.LogProbs
        if case .quantized(let b, _) = options.logProbs {
            lp = .init(encoding: "quantized", stepLog2: b, stepMultiplier: options.logProbs.recordedStepMultiplier)
        } else {
            lp = .init(encoding: "float32", stepLog2: nil)
        }
        // Sample references are the one feature of 1.4: a shard without them is a 1.3 shard, and
        // says so, so that 1.3 readers read top-k caches from this writer.
        let minor = options.formatMinorVersion >= 4 && !wroteSampleReferences ? 3 : options.formatMinorVersion
        let footer = FooterJSON(formatVersion: 1, formatMinorVersion: minor >= 1 ? minor : nil, vocabularySize: description.vocabularySize, maxEntries: k, maxSamples: maxSamples,
                                blockTokens: options.blockTokens, entryBands: bands, logProbs: lp, tokens: tokenCount,
                                sequences: lengths.count, entries: entryTotal, samples: sampleTotal,
                                sequenceTable: .init(documentKeys: keys, documentOffsets: offsets, lengths: lengths), blocks: blocks)
        let je = JSONEncoder(); je.outputFormatting = [.sortedKeys]
        // Safe because the footer holds only strings, integers and arrays: encoding cannot fail.
        let json = Array(try! je.encode(footer))
        let footerOffset = file.size
        try file.write(json)
        var trailer = le64(UInt64(footerOffset)) + le64(UInt64(json.count)) + le64(Checksum.xxh3(json))
        trailer += le32(1) + le32(0) + shardMagic
        try file.write(trailer)
        let sum = file.checksum, size = file.size
        try file.publish()
        return ShardEntry(file: file.finalName, partition: partition, tokens: tokenCount, sequences: lengths.count,
                          entries: entryTotal, samples: sampleTotal, bytes: size, xxh3: hex16(sum))
    }
}

/// The 8 magic bytes at both ends of a shard: "LCSHARD" then 0x1A.
let shardMagic: [UInt8] = [0x4C, 0x43, 0x53, 0x48, 0x41, 0x52, 0x44, 0x1A]
func le32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
func le64(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
