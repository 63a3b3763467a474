import Foundation
import Truncation

/// Fingerprints that tie a cache to its teacher, tokenizer and corpus (opaque strings, e.g.
/// hex hashes). Readers refuse a cache whose tokenizer fingerprint differs from theirs.
public struct Fingerprints: Codable, Sendable, Equatable, Hashable {
    public var teacher: String
    public var tokenizer: String
    public var corpus: String
    public init(teacher: String, tokenizer: String, corpus: String) {
        self.teacher = teacher; self.tokenizer = tokenizer; self.corpus = corpus
    }
}

/// How the teacher targets were captured (FORMAT.md section 7): the policy, and the temperature
/// and sampler seed it ran with.
///
/// In JSON the policy is spread over the manifest's members `policy` (its name), `k` (K, the
/// most exact entries a position may have), `topP` (top-p only) and `samples` (draws per
/// position for sampled policies, 0 otherwise).
public struct CaptureSettings: Codable, Sendable, Equatable, Hashable {
    public var policy: CapturePolicy
    /// Temperature the log-probs and logsumexp are taken at.
    public var temperature: Double
    /// Seed of the sampler.
    public var seed: UInt64

    public init(policy: CapturePolicy, temperature: Double = 1, seed: UInt64 = 0) {
        self.policy = policy; self.temperature = temperature; self.seed = seed
    }

    /// K: the most exact entries a position may have.
    public var k: Int { policy.maxEntries }
    /// Draws per position for sampled policies, 0 otherwise.
    public var samples: Int { policy.maxSamples }

    private enum CodingKeys: String, CodingKey { case policy, k, topP, samples, temperature, seed }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let name = try c.decode(String.self, forKey: .policy)
        do {
            policy = try CapturePolicy(name: name, k: try c.decode(Int.self, forKey: .k), topP: try c.decodeIfPresent(Double.self, forKey: .topP),
                                       samples: try c.decode(Int.self, forKey: .samples))
        } catch let e as TruncationError {
            throw DecodingError.dataCorruptedError(forKey: .policy, in: c, debugDescription: "\(e)")
        }
        temperature = try c.decode(Double.self, forKey: .temperature)
        seed = try c.decode(UInt64.self, forKey: .seed)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(policy.name, forKey: .policy)
        try c.encode(k, forKey: .k)
        try c.encodeIfPresent(policy.threshold, forKey: .topP)
        try c.encode(samples, forKey: .samples)
        try c.encode(temperature, forKey: .temperature)
        try c.encode(seed, forKey: .seed)
    }
}

/// What the teacher pass cost: tokens processed, floating-point operations, wall seconds.
public struct TeacherCost: Codable, Sendable, Equatable, Hashable {
    public var tokens: Int
    public var flops: Double
    public var seconds: Double
    public init(tokens: Int = 0, flops: Double = 0, seconds: Double = 0) { self.tokens = tokens; self.flops = flops; self.seconds = seconds }
    static func + (a: TeacherCost, b: TeacherCost) -> TeacherCost {
        let (t, o) = a.tokens.addingReportingOverflow(b.tokens)
        return TeacherCost(tokens: o ? .max : t, flops: a.flops + b.flops, seconds: a.seconds + b.seconds)
    }
}

/// Where a cache's targets came from: the program that wrote them, the teacher it ran (or the
/// file it imported) and the device. Informative only: readers never act on it.
public struct CacheOrigin: Codable, Sendable, Equatable, Hashable {
    /// The writing program: `logitcache teacher`, `logitcache capture`, `logitcache import-vllm`, ...
    public var tool: String
    /// The teacher model (a name or path), or the imported file.
    public var teacher: String?
    /// Where the teacher ran (`cpu`, `cuda:0 (NVIDIA H100)`, ...).
    public var device: String?
    /// What a reader should know (for an import: what the source did not give).
    public var note: String?

    public init(tool: String, teacher: String? = nil, device: String? = nil, note: String? = nil) {
        self.tool = tool; self.teacher = teacher; self.device = device; self.note = note
    }

    /// The origin of a cache merged from partitions of these origins: each field's distinct
    /// values in partition order, joined with " + " (nil when no partition recorded any).
    static func merged(_ all: [CacheOrigin?]) -> CacheOrigin? {
        let present = all.compactMap { $0 }
        guard !present.isEmpty else { return nil }
        func join(_ f: (CacheOrigin) -> String?) -> String? {
            var seen: [String] = []
            for v in present.compactMap(f) where !seen.contains(v) { seen.append(v) }
            return seen.isEmpty ? nil : seen.joined(separator: " + ")
        }
        return CacheOrigin(tool: join { $0.tool } ?? "", teacher: join { $0.teacher }, device: join { $0.device }, note: join { $0.note })
    }
}

/// The writer settings recorded in a manifest (footers are authoritative).
public struct EncodingSettings: Codable, Sendable, Equatable, Hashable {
    public var codec: String
    public var level: Int
    public var logProbs: String
    public var stepLog2: Int
    /// Format 1.2: the step is `stepMultiplier · 2^-stepLog2` nats; absent (nil) means 1.
    public var stepMultiplier: Int? = nil
    public var blockTokens: Int
    public var entryBands: [Int]
}

/// A writer partition: manifest `index` of `count`.
public struct PartitionInfo: Codable, Sendable, Equatable, Hashable {
    public var index: Int
    public var count: Int
}

/// Sums over a manifest's shards.
public struct CacheTotals: Codable, Sendable, Equatable, Hashable {
    public var tokens = 0, sequences = 0, entries = 0, samples = 0, bytes = 0
}

/// One shard as a manifest lists it.
public struct ShardEntry: Codable, Sendable, Equatable, Hashable {
    /// Plain file name inside the cache directory.
    public var file: String
    public var partition: Int
    public var tokens: Int
    public var sequences: Int
    public var entries: Int
    public var samples: Int
    /// File size in bytes.
    public var bytes: Int
    /// XXH3-64 of the whole file, 16 hex digits.
    public var xxh3: String
}

/// The manifest of a cache or of one writer partition (`Schemas/manifest.schema.json`).
public struct CacheManifest: Codable, Sendable, Equatable {
    public var format = "logitcache"
    public var formatVersion = 1
    public var vocabularySize: Int
    public var fingerprints: Fingerprints
    public var capture: CaptureSettings
    public var encoding: EncodingSettings
    public var teacherCost: TeacherCost
    /// Who wrote the targets (nil in caches written before it was recorded).
    public var origin: CacheOrigin?
    /// Set in partition manifests, nil in the merged one.
    public var partition: PartitionInfo?
    public var totals: CacheTotals
    public var shards: [ShardEntry]

    /// File name of the merged manifest.
    public static let fileName = "manifest.json"
    /// File name of partition `p`'s manifest.
    public static func partitionFileName(_ p: Int) -> String { "manifest.part-\(pad(p, 5)).json" }

    /// The largest count or size a manifest may state (2^50: a petabyte of shards, a
    /// quadrillion tokens), so sums over any number of shards stay far from overflow.
    public static let maxCount = 1 << 50

    /// Sets `totals` to the sums over `shards` (whose counts ``decode(_:file:)`` bounded).
    mutating func recomputeTotals() {
        var t = CacheTotals()
        for s in shards {
            // Saturating: a forged manifest's sums then differ from its totals, never trap.
            func add(_ a: inout Int, _ b: Int) { let (r, o) = a.addingReportingOverflow(b); a = o ? .max : r }
            add(&t.tokens, s.tokens); add(&t.sequences, s.sequences); add(&t.entries, s.entries)
            add(&t.samples, s.samples); add(&t.bytes, s.bytes)
        }
        totals = t
    }

    /// The manifest's file bytes: sorted-key JSON ending in the checksum member (FORMAT.md section 7).
    /// - Throws: ``ShardFormatError/invalidInput(_:)`` if a number is not finite (a caller's
    ///   `teacherCost`, `temperature` or `topP`): JSON cannot hold it.
    public func encoded() throws -> [UInt8] {
        do { return try canonicalBytes(strict: true) } catch {
            throw ShardFormatError.invalidInput("manifest cannot be written as JSON (a non-finite number?): \(error)")
        }
    }

    /// The `checksum` member of ``encoded()`` (16 hex digits): XXH3-64 of the canonical bytes
    /// before it. Equals the checksum stored in `manifest.json`, which every writer encodes this way.
    /// (A manifest holding a non-finite number, which ``encoded()`` refuses, hashes it as a string.)
    public var checksum: String {
        // Safe because the lenient encoding writes non-finite numbers as strings and every other
        // field is a plain string, integer or array: it cannot fail.
        var body = try! canonicalBytes(strict: false)
        body.removeLast(4)  // "\"\n}\n"
        return String(decoding: body.suffix(16), as: UTF8.self)
    }

    private func canonicalBytes(strict: Bool) throws -> [UInt8] {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        if !strict { enc.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan") }
        var body = Array(try enc.encode(self))
        while let last = body.last, last == UInt8(ascii: "\n") || last == UInt8(ascii: " ") { body.removeLast() }
        body.removeLast() // the closing brace
        while let last = body.last, last == UInt8(ascii: "\n") || last == UInt8(ascii: " ") { body.removeLast() }
        body += Array(",\n  ".utf8)
        let sum = Checksum.xxh3(body)
        body += Array("\"checksum\": \"\(hex16(sum))\"\n}\n".utf8)
        return body
    }

    /// The members whose values are real numbers; every other number is an integer.
    static let realMembers: Set<String> = ["capture.temperature", "capture.topP", "teacherCost.flops", "teacherCost.seconds"]

    /// Parses manifest bytes after checking their checksum. `file` names the file in errors.
    public static func decode(_ bytes: [UInt8], file: String) throws -> CacheManifest {
        let key = Array("\"checksum\": \"".utf8)
        let tailLength = key.count + 16 + 4
        guard bytes.count >= tailLength else { throw ShardFormatError.malformed(file: file, chunk: nil, reason: "manifest too short (\(bytes.count) bytes)") }
        let i = bytes.count - tailLength
        guard Array(bytes[i..<(i + key.count)]) == key, Array(bytes[(bytes.count - 4)...]) == Array("\"\n}\n".utf8),
              let want = parseHex16(String(decoding: bytes[(i + key.count)..<(i + key.count + 16)], as: UTF8.self)) else {
            throw ShardFormatError.malformed(file: file, chunk: nil, reason: "manifest does not end with the \"checksum\" member")
        }
        let got = bytes.withUnsafeBytes { Checksum.xxh3(UnsafeRawBufferPointer(rebasing: $0[0..<i])) }
        guard got == want else { throw ShardFormatError.checksumMismatch(file: file, chunk: "manifest", expected: want, actual: got) }
        let text: [UInt8]
        do { text = try StrictJSON.check(bytes, realPaths: realMembers) } catch {
            throw ShardFormatError.malformed(file: file, chunk: nil, reason: "manifest: \(error)")
        }
        let m: CacheManifest
        do { m = try JSONDecoder().decode(CacheManifest.self, from: Data(text)) } catch {
            throw ShardFormatError.malformed(file: file, chunk: nil, reason: "manifest JSON: \(error)")
        }
        guard m.format == "logitcache", m.formatVersion == 1 else {
            throw ShardFormatError.malformed(file: file, chunk: nil, reason: "format \(m.format) version \(m.formatVersion) is not logitcache 1")
        }
        guard (1...(1 << 24)).contains(m.vocabularySize) else { throw ShardFormatError.malformed(file: file, chunk: nil, reason: "vocabularySize \(m.vocabularySize) outside 1...16777216") }
        let n = maxCount
        var names = Set<String>()
        for s in m.shards {
            guard names.insert(s.file).inserted else {
                throw ShardFormatError.malformed(file: file, chunk: s.file, reason: "shard listed twice")
            }
            guard [s.tokens, s.sequences, s.entries, s.samples].allSatisfy({ (0...n).contains($0) }), (56...n).contains(s.bytes),
                  (0...99998).contains(s.partition), parseHex16(s.xxh3) != nil else {
                throw ShardFormatError.malformed(file: file, chunk: s.file, reason: "bad shard entry (a count outside 0...2^50, a size outside 56...2^50, a partition outside 0...99998 or a bad xxh3)")
            }
        }
        let c = m.teacherCost
        guard (0...n).contains(c.tokens), c.flops.isFinite, c.flops >= 0, c.seconds.isFinite, c.seconds >= 0 else {
            throw ShardFormatError.malformed(file: file, chunk: nil, reason: "teacherCost: tokens outside 0...2^50 or flops / seconds not finite and >= 0")
        }
        let e = m.encoding
        func badEncoding(_ why: String) -> ShardFormatError { .malformed(file: file, chunk: nil, reason: "encoding: \(why)") }
        guard (1...(1 << 24)).contains(e.blockTokens) else { throw badEncoding("blockTokens \(e.blockTokens) outside 1...16777216") }
        guard ["none", "lz4", "zstd"].contains(e.codec) else { throw badEncoding("codec \"\(e.codec)\" is not none, lz4 or zstd") }
        guard ["quantized", "float32"].contains(e.logProbs) else { throw badEncoding("logProbs \"\(e.logProbs)\" is not quantized or float32") }
        guard (0...20).contains(e.stepLog2), (1...255).contains(e.stepMultiplier ?? 1) else {
            throw badEncoding("stepLog2 \(e.stepLog2) outside 0...20 or stepMultiplier \(e.stepMultiplier ?? 1) outside 1...255")
        }
        guard e.entryBands.first == 0, e.entryBands.last == m.capture.k, zip(e.entryBands, e.entryBands.dropFirst()).allSatisfy({ $0 < $1 }) else {
            throw badEncoding("entryBands \(e.entryBands.prefix(20)) must rise strictly from 0 to capture.k \(m.capture.k)")
        }
        if let p = m.partition, !(1...99999).contains(p.count) || !(0..<p.count).contains(p.index) {
            throw ShardFormatError.malformed(file: file, chunk: nil, reason: "partition \(p.index) of \(p.count) (need 0 <= index < count <= 99999)")
        }
        guard m.capture.temperature.isFinite, m.capture.temperature > 0 else {
            throw ShardFormatError.malformed(file: file, chunk: nil, reason: "capture.temperature \(m.capture.temperature) must be finite and > 0")
        }
        guard m.shards.count <= 1 << 24 else { throw ShardFormatError.malformed(file: file, chunk: nil, reason: "\(m.shards.count) shards, more than 2^24") }
        var check = m; check.recomputeTotals()
        guard check.totals == m.totals else { throw ShardFormatError.malformed(file: file, chunk: nil, reason: "totals do not equal the sums over shards") }
        return m
    }

    /// Reads and checks `directory/name`.
    public static func load(directory: String, name: String = CacheManifest.fileName) throws -> CacheManifest {
        let path = directory + "/" + name
        return try decode(try readWholeFile(path), file: path)
    }

    /// Publishes the manifest atomically as `directory/name`.
    public func publish(directory: String, name: String) throws {
        try publishFile(try encoded(), directory: directory, name: name)
    }

    /// The path of shard `name` inside `directory`, refusing names that could reach outside it:
    /// anything but `[A-Za-z0-9._-]{1,200}`, `.`/`..`, and links resolving outside.
    /// - Throws: ``ShardFormatError/unsafePath(file:name:reason:)``, or `system` if it is missing.
    public static func shardPath(directory: String, name: String, manifestFile: String) throws -> String {
        let path = try plainShardPath(directory: directory, name: name, manifestFile: manifestFile)
        guard let dir = resolvedPath(directory) else { throw ShardFormatError.system(file: directory, call: "realpath", errno: errno) }
        guard let real = resolvedPath(path) else { throw ShardFormatError.system(file: path, call: "realpath", errno: errno) }
        guard real.hasPrefix(dir.hasSuffix("/") ? dir : dir + "/") else {
            throw ShardFormatError.unsafePath(file: manifestFile, name: name, reason: "resolves to \(real), outside \(dir)")
        }
        return path
    }

    /// `directory/name` after checking only that `name` is a plain file name (for a shard that
    /// is not on disk yet, fetched by a ``ShardSource``).
    static func plainShardPath(directory: String, name: String, manifestFile: String) throws -> String {
        let ok = !name.isEmpty && name.utf8.count <= 200 && name != "." && name != ".." &&
            name.utf8.allSatisfy { c in (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c == 46 || c == 95 || c == 45 }
        guard ok else { throw ShardFormatError.unsafePath(file: manifestFile, name: name, reason: "not a plain file name ([A-Za-z0-9._-], not . or ..)") }
        return directory + "/" + name
    }

    /// Builds `manifest.json` from the partition manifests `manifest.part-00000.json` ...
    /// (all `count` of them must exist and agree) without touching shard data, publishes it
    /// and returns it.
    /// - Throws: ``ShardFormatError/mismatch(file:reason:)`` naming the disagreeing partition.
    @discardableResult
    public static func merge(directory: String) throws -> CacheManifest {
        let lock = try CacheLock(directory: directory, name: CacheLock.manifestFileName)
        defer { lock.release() }
        try refuseRunningWriter(directory: directory, partition: 0)
        let first = try load(directory: directory, name: partitionFileName(0))
        guard let count = first.partition?.count, first.partition?.index == 0 else {
            throw ShardFormatError.mismatch(file: directory + "/" + partitionFileName(0), reason: "not a partition manifest of index 0")
        }
        var merged = first
        merged.partition = nil
        merged.shards = []
        merged.teacherCost = TeacherCost()
        var origins: [CacheOrigin?] = []
        for p in 0..<count {
            let name = partitionFileName(p)
            if p > 0 { try refuseRunningWriter(directory: directory, partition: p) }
            let m = p == 0 ? first : try load(directory: directory, name: name)
            let file = directory + "/" + name
            guard m.partition == PartitionInfo(index: p, count: count) else {
                throw ShardFormatError.mismatch(file: file, reason: "partition \(m.partition.map { "\($0.index)/\($0.count)" } ?? "none"), expected \(p)/\(count)")
            }
            guard m.vocabularySize == first.vocabularySize, m.fingerprints == first.fingerprints,
                  m.capture == first.capture, m.encoding == first.encoding else {
                throw ShardFormatError.mismatch(file: file, reason: "vocabulary, fingerprints, capture or encoding differ from partition 0")
            }
            merged.shards += m.shards
            merged.teacherCost = merged.teacherCost + m.teacherCost
            origins.append(m.origin)
        }
        // Partitions may come from different programs (a Swift pass and a Python capture).
        merged.origin = CacheOrigin.merged(origins)
        merged.recomputeTotals()
        try merged.publish(directory: directory, name: fileName)
        return merged
    }
}

/// Throws ``ShardFormatError/locked(file:holder:)`` when partition `p`'s writer still runs in
/// another process: its partition manifest is not final yet. (This process's own writer, which
/// merges from `finish()`, holds the lock and is finished.)
private func refuseRunningWriter(directory: String, partition p: Int) throws {
    let name = CacheLock.partitionFileName(p)
    if CacheLock.heldHere(directory: directory, name: name) { return }
    do { try CacheLock(directory: directory, name: name).release() } catch ShardFormatError.locked(let file, let holder) {
        throw ShardFormatError.locked(file: file, holder: "\(holder), still writing partition \(p)")
    }
}

@inline(__always) func pad(_ v: Int, _ n: Int) -> String {
    let s = String(v)
    return s.count >= n ? s : String(repeating: "0", count: n - s.count) + s
}
