import Foundation

/// Bounds on stored log-probabilities (FORMAT.md section 4), shared by the writer and `verify`.
enum ValueRules {
    /// The largest log-prob accepted, in nats: a teacher's `logit − logsumexp` rounded in float32
    /// can land a few ulps above 0, never 1e-3 above.
    static let logProbSlack: Float = 1e-3
    /// The largest total probability of a position's entries when each decoded log-prob may
    /// exceed the exact one by `maxError` nats (quantisation), with 1e-3 for rounding.
    static func massLimit(maxError: Double) -> Double { (1 + 1e-3) * exp(maxError) }
}

/// Full check of a cache: manifests, shard names, sizes, whole-file checksums, trailers,
/// footers, every chunk's checksum and every decoded value's range.
public enum CacheVerifier {
    /// The outcome of ``verify(directory:)``.
    public struct Report: Sendable {
        /// Each problem found, naming file and chunk; empty when the cache is sound.
        public var problems: [String] = []
        public var shardsChecked = 0
        public var tokensChecked = 0
        public var isSound: Bool { problems.isEmpty }
    }

    /// Verifies `directory` through its manifest `manifest` (`manifest.json`, or a partition
    /// manifest to check what a still-running or killed writer has published); never throws:
    /// every problem becomes a line of the report, and the check goes on after one fails.
    public static func verify(directory: String, manifest: String = CacheManifest.fileName) -> Report {
        var rep = Report()
        let mfile = directory + "/" + manifest
        let m: CacheManifest
        do { m = try CacheManifest.load(directory: directory, name: manifest) } catch { rep.problems.append("\(error)"); return rep }
        // Partition manifests are manifests too: a damaged one would break a later merge.
        if let names = try? listDirectory(directory) {
            for n in names where n.hasPrefix("manifest.part-") && n.hasSuffix(".json") && (manifest == CacheManifest.fileName || n == manifest) {
                do {
                    let p = try CacheManifest.load(directory: directory, name: n)
                    for s in p.shards where !m.shards.contains(s) {
                        rep.problems.append("\(directory)/\(n): shard \(s.file) is not in \(manifest) as listed here")
                    }
                } catch { rep.problems.append("\(error)") }
            }
        }
        let scratch = DecodeScratch()
        var firstMaxSamples: Int?
        var files = Set<String>()
        var rowIDs = RowIDSet(vocabularySize: m.vocabularySize)
        for e in m.shards {
            do {
                let path = try CacheManifest.shardPath(directory: directory, name: e.file, manifestFile: mfile)
                guard files.insert(resolvedPath(path) ?? path).inserted else {
                    throw ShardFormatError.mismatch(file: mfile, reason: "shard \(e.file) is the same file as an earlier shard")
                }
                let map = try MappedShard(path: path)
                guard map.bytes.count == e.bytes else {
                    throw ShardFormatError.mismatch(file: path, reason: "size \(map.bytes.count) bytes, manifest says \(e.bytes)")
                }
                let sum = Checksum.xxh3(map.bytes)
                if hex16(sum) != e.xxh3 {
                    rep.problems.append("\(path): whole-file checksum \(hex16(sum)) differs from the manifest's \(e.xxh3)")
                }
                let r = try ShardReader(path: path)
                let L = r.layout
                guard L.tokens == e.tokens, L.sequences == e.sequences, L.entries == e.entries, L.samples == e.samples,
                      L.vocabularySize == m.vocabularySize, L.maxEntries == m.capture.k else {
                    throw ShardFormatError.mismatch(file: path, reason: "footer totals, vocabulary or K differ from the manifest's")
                }
                // As the reader: every shard draws at most as many samples as the first one.
                if let first = firstMaxSamples, L.maxSamples != first {
                    throw ShardFormatError.mismatch(file: path, reason: "maxSamples differs from the first shard's")
                }
                firstMaxSamples = firstMaxSamples ?? L.maxSamples
                for b in L.blocks.indices {
                    do {
                        try r.decodeBlock(b, bandCount: L.bands.count - 1, samples: true, into: scratch.block, decoder: scratch.decoder)
                        try checkValues(scratch.block, layout: L, file: path, block: b, rowIDs: &rowIDs)
                    } catch { rep.problems.append("\(error)") }
                }
                rep.shardsChecked += 1
                rep.tokensChecked += L.tokens
            } catch { rep.problems.append("\(error)") }
        }
        return rep
    }

    /// Value rules checked by verification rather than on every read (FORMAT.md section 4):
    /// per position, entry log-probs non-increasing, not NaN and at most ``ValueRules/logProbSlack``,
    /// their probabilities summing to at most ``ValueRules/massLimit(maxError:)``, entry ids
    /// distinct, sampled ids distinct; next-token log-probs not NaN and at most the slack;
    /// logsumexps finite.
    static func checkValues(_ d: DecodedBlock, layout L: ShardLayout, file: String, block b: Int, rowIDs: inout RowIDSet) throws {
        func bad(_ column: String, _ why: String) -> ShardFormatError { .malformed(file: file, chunk: "block \(b) column \(column)", reason: why) }
        let m = d.bandsDecoded
        var pos = [Int](repeating: 0, count: m)   // [m] read position of the current token in each band
        var rowID: [UInt32] = []                   // [c] the current token's entry ids, rank order
        var spos = 0
        for t in 0..<d.tokens {
            let next = Float(bitPattern: d.nextLogProb[t]), lse = Float(bitPattern: d.logSumExp[t])
            if next.isNaN { throw bad("next_logprob", "NaN at token \(t)") }
            if lse.isNaN { throw bad("logsumexp", "NaN at token \(t)") }
            guard next <= ValueRules.logProbSlack else { throw bad("next_logprob", "\(next) at token \(t) is above 0, not a log-probability") }
            guard lse.isFinite else { throw bad("logsumexp", "\(lse) at token \(t) is not finite") }
            let c = Int(d.entryCount[t])
            var prev = Float.infinity, mass = 0.0
            rowID.removeAll(keepingCapacity: true)
            for j in 0..<m where c > L.bands[j] {
                let cnt = min(c, L.bands[j + 1]) - L.bands[j]
                for r in 0..<cnt {
                    let l = Float(bitPattern: d.bandLogProbs[j][pos[j] + r])
                    guard !(l > prev), !l.isNaN else { throw bad("entry_logprobs.\(j)", "log-probs of token \(t) not descending") }
                    guard l <= ValueRules.logProbSlack else { throw bad("entry_logprobs.\(j)", "log-prob \(l) of token \(t) is above 0") }
                    prev = l
                    mass += exp(Double(l))
                    rowID.append(d.bandIDs[j][pos[j] + r])
                }
                pos[j] += cnt
            }
            if let id = rowIDs.firstRepeat(count: rowID.count, { rowID[$0] }) {
                throw bad("entry_ids", "token \(t) lists entry id \(id) twice")
            }
            guard mass <= ValueRules.massLimit(maxError: L.logProbs.maxError) else {
                throw bad("entry_logprobs.0", "entries of token \(t) hold probability \(mass), more than 1")
            }
            if d.hasSamples {
                let s = Int(d.sampleCount[t])
                if let id = rowIDs.firstRepeat(count: s, { d.sampleIDs[spos + $0] }) {
                    throw bad("sample_ids", "token \(t) lists sampled id \(id) twice")
                }
                spos += s
            }
        }
    }
}
