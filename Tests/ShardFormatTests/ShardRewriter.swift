import Foundation
@testable import ShardFormat

/// Lays a written shard out again from its decoded chunks, to test readers on inputs our writer
/// never produces: other valid chunk encodings, or forged values behind valid checksums. Every
/// chunk checksum, the footer checksum and the trailer are recomputed; call
/// ``refreshManifests(_:)`` afterwards so the manifests match the new file.
struct ShardRewrite {
    /// (block, column, values) -> replaces the chunk's decoded values (ranks for dictionary ids).
    var values: ((Int, String, inout [UInt32]) -> Void)? = nil
    /// (block, column) -> the chunk's new filter, width and codec (nil keeps the stored bytes).
    var layout: ((Int, String) -> (filter: ChunkFilter, width: Int, codec: Codec)?)? = nil
    /// (block, column, stored bytes) -> edits the stored bytes as they are (checksummed after).
    var stored: ((Int, String, inout [UInt8]) -> Void)? = nil
    /// Edits the footer after the chunks are laid out.
    var footer: ((inout FooterJSON) -> Void)? = nil
    /// Lays the chunks out in reverse order (readers must use the offsets).
    var reverse = false

    func apply(to path: String) throws {
        let r = try ShardReader(path: path)
        var f = r.layout.json
        let decoder = ChunkDecoder(), encoder = ChunkEncoder()
        var pieces: [(block: Int, chunk: Int, bytes: [UInt8])] = []
        for (b, block) in f.blocks.enumerated() {
            for (i, c) in block.chunks.enumerated() {
                let d = ChunkDescriptor(offset: c.offset, size: c.size, count: c.count, width: c.width,
                                        filter: ChunkFilter(rawValue: c.filter)!, codec: c.codec == "none" ? .none : c.codec == "lz4" ? .lz4 : .zstd(level: 0),
                                        xxh3: 0)
                let stored = UnsafeRawBufferPointer(rebasing: r.bytes[c.offset..<(c.offset + c.size)])
                var bytes = Array(stored)
                let choice = layout?(b, c.column)
                if values != nil || choice != nil {
                    var v = [UInt32](repeating: 0, count: c.count)
                    try v.withUnsafeMutableBufferPointer { try decoder.decode(stored, d, file: path, chunk: c.column, into: $0.baseAddress!) }
                    values?(b, c.column, &v)
                    var (filter, width, codec) = choice ?? (ChunkFilter(rawValue: c.filter)!, c.width, d.codec)
                    width = max(width, byteWidth(v.max() ?? 0))
                    if v.isEmpty { (filter, width, codec) = (.raw, c.width, .none) }
                    bytes = []
                    if !v.isEmpty {
                        try v.withUnsafeBufferPointer { try encoder.encode($0, filter: filter, width: width, codec: codec) { bytes = Array($0) } }
                    }
                    f.blocks[b].chunks[i].count = v.count; f.blocks[b].chunks[i].width = width
                    f.blocks[b].chunks[i].filter = filter.rawValue; f.blocks[b].chunks[i].codec = codec.name
                }
                self.stored?(b, c.column, &bytes)
                f.blocks[b].chunks[i].size = bytes.count
                f.blocks[b].chunks[i].xxh3 = hex16(Checksum.xxh3(bytes))
                pieces.append((b, i, bytes))
            }
        }
        var out = shardMagic + le32(1) + le32(0)
        for p in reverse ? pieces.reversed() : pieces {
            f.blocks[p.block].chunks[p.chunk].offset = out.count
            out += p.bytes
        }
        footer?(&f)
        let enc = JSONEncoder(); enc.outputFormatting = [.sortedKeys]
        let fj = Array(try enc.encode(f))
        out += fj + le64(UInt64(out.count)) + le64(UInt64(fj.count)) + le64(Checksum.xxh3(fj)) + le32(1) + le32(0) + shardMagic
        try Data(out).write(to: URL(fileURLWithPath: path))
    }
}

/// Recomputes every manifest's shard entries (size, whole-file checksum, footer totals) and totals.
func refreshManifests(_ dir: String) throws {
    for name in try FileManager.default.contentsOfDirectory(atPath: dir) where name.hasPrefix("manifest") && name.hasSuffix(".json") {
        var m = try CacheManifest.load(directory: dir, name: name)
        for i in m.shards.indices {
            let path = dir + "/" + m.shards[i].file
            let bytes = try readWholeFile(path)
            // The footer is read without validation: it may be forged on purpose.
            let n = bytes.count, le = { (o: Int) in bytes[o..<(o + 8)].reversed().reduce(0) { $0 << 8 | Int($1) } }
            let F = le(n - 40), L = le(n - 32)
            let f = try JSONDecoder().decode(FooterJSON.self, from: Data(bytes[F..<(F + L)]))
            m.shards[i].bytes = n; m.shards[i].xxh3 = hex16(Checksum.xxh3(bytes))
            m.shards[i].tokens = f.tokens; m.shards[i].sequences = f.sequences
            m.shards[i].entries = f.entries; m.shards[i].samples = f.samples
        }
        m.recomputeTotals()
        try m.publish(directory: dir, name: name)
    }
}

/// Rewrites every shard of the cache in `dir` with `rewrite`, then its manifests.
func rewriteCache(_ dir: String, _ rewrite: ShardRewrite) throws {
    for s in try CacheManifest.load(directory: dir).shards { try rewrite.apply(to: dir + "/" + s.file) }
    try refreshManifests(dir)
}
