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

    /// Verifies `directory`; never throws: every problem becomes a line of the report, and the
    /// check goes on with the next shard after one fails.
    public static func verify(directory: String) -> Report {
        var rep = Report()
        let mfile = directory + "/" + CacheManifest.fileName
        let m: CacheManifest
        do { m = try CacheManifest.load(directory: directory) } catch { rep.problems.append("\(error)"); return rep }
        // Partition manifests are manifests too: a damaged one would break a later merge.
        if let names = try? listDirectory(directory) {
            for n in names where n.hasPrefix("manifest.part-") && n.hasSuffix(".json") {
                do {
                    let p = try CacheManifest.load(directory: directory, name: n)
                    for s in p.shards where !m.shards.contains(s) {
                        rep.problems.append("\(directory)/\(n): shard \(s.file) is not in \(CacheManifest.fileName) as listed here")
                    }
                } catch { rep.problems.append("\(error)") }
            }
        }
        let scratch = DecodeScratch()
        for e in m.shards {
            do {
                let path = try CacheManifest.shardPath(directory: directory, name: e.file, manifestFile: mfile)
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
                for b in L.blocks.indices {
                    do {
                        try r.decodeBlock(b, bandCount: L.bands.count - 1, samples: true, into: scratch.block, decoder: scratch.decoder)
                        try checkOrder(scratch.block, layout: L, file: path, block: b)
                    } catch { rep.problems.append("\(error)") }
                }
                rep.shardsChecked += 1
                rep.tokensChecked += L.tokens
            } catch { rep.problems.append("\(error)") }
        }
        return rep
    }

    /// Entry log-probs must be non-increasing within each position.
    static func checkOrder(_ d: DecodedBlock, layout L: ShardLayout, file: String, block b: Int) throws {
        let m = d.bandsDecoded
        var pos = [Int](repeating: 0, count: m)
        for t in 0..<d.tokens {
            let c = Int(d.entryCount[t])
            var prev = Float.infinity
            for j in 0..<m where c > L.bands[j] {
                let cnt = min(c, L.bands[j + 1]) - L.bands[j]
                for r in 0..<cnt {
                    let l = Float(bitPattern: d.bandLogProbs[j][pos[j] + r])
                    guard !(l > prev), !l.isNaN else {
                        throw ShardFormatError.malformed(file: file, chunk: "block \(b) column entry_logprobs.\(j)", reason: "log-probs of token \(t) not descending")
                    }
                    prev = l
                }
                pos[j] += cnt
            }
        }
    }
}
