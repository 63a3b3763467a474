import Foundation
import SyntheticData
import Testing
import TestSupport
@testable import ShardFormat

/// Chunk encodings the spec allows but our writer never produces must decode to the same values.
@Suite struct LayoutTests {
    struct Layout: CustomTestStringConvertible, Sendable {
        var filter: ChunkFilter, width: Int, codec: Codec, reverse: Bool
        var testDescription: String { "\(filter.rawValue) w\(width) \(codec)\(reverse ? " reversed" : "")" }
    }
    // Raw + width 4 + a codec once made a successful decode return a phantom error (a compiler
    // bug around a tail call to memmove, see `unfilter`); narrow widths are raised per chunk.
    static let layouts: [Layout] = [
        Layout(filter: .raw, width: 4, codec: .lz4, reverse: false),
        Layout(filter: .raw, width: 4, codec: .zstd(level: 3), reverse: true),
        Layout(filter: .raw, width: 1, codec: .zstd(level: 3), reverse: false),
        Layout(filter: .raw, width: 2, codec: .lz4, reverse: true),
        Layout(filter: .planes, width: 4, codec: .none, reverse: false),
        Layout(filter: .planes, width: 3, codec: .lz4, reverse: true),
        Layout(filter: .raw, width: 1, codec: .none, reverse: false),
        // Format 1.1 bucket filters on every column, with every codec.
        Layout(filter: .buckets, width: 4, codec: .none, reverse: true),
        Layout(filter: .buckets, width: 1, codec: .lz4, reverse: false),
        Layout(filter: .deltaBuckets, width: 2, codec: .zstd(level: 3), reverse: false),
        Layout(filter: .deltaBuckets, width: 4, codec: .none, reverse: true),
    ]

    /// Every value of the cache (all tokens, full K, samples) as one flat array.
    static func everything(_ dir: String) throws -> [String] {
        let r = try CacheReader(directory: dir)
        let b = TargetBatch()
        try r.decode(tokens: 0..<r.tokenCount, k: r.maxEntries, samples: true, into: b)
        return [b.inputIDs.description, b.nextTokenLogProbs.map(\.bitPattern).description, b.logSumExps.map(\.bitPattern).description,
                b.entryCounts.description, b.entryIDs.description, b.entryLogProbs.map(\.bitPattern).description,
                b.sampleOffsets.description, b.sampleIDs.description, b.sampleDraws.description]
    }

    @Test(arguments: layouts)
    func otherValidLayoutsDecodeIdentically(_ l: Layout) throws {
        let dir = freshDirectory("layout")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let g = TeacherLikeGenerator(vocabularySize: 40000, k: 24, seed: 17, draws: 12, topP: 0.9)
        // zstd blocks carry an id dictionary, so rank columns are rewritten too.
        try writeCache(dir, (0..<3).map { g.sequence($0, length: 70 + $0) }, vocab: 40000, k: 24, samples: 12,
                       options: WriterOptions(codec: .zstd(level: 3), blockTokens: 50))
        let want = try Self.everything(dir)
        try rewriteCache(dir, ShardRewrite(layout: { _, _ in (l.filter, l.width, l.codec) }, reverse: l.reverse))
        let json = try ShardReader(path: dir + "/" + CacheManifest.load(directory: dir).shards[0].file).layout.json
        let used = Set(json.blocks.flatMap(\.chunks).filter { $0.count > 0 }.map { "\($0.filter) \($0.codec)" })
        #expect(used == ["\(l.filter.rawValue) \(l.codec.name)"])
        #expect(try Self.everything(dir) == want)
        #expect(CacheVerifier.verify(directory: dir).problems == [])
    }
}
