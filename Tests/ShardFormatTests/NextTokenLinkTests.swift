import Foundation
import SyntheticData
import Testing
import TestSupport
@testable import ShardFormat

/// Format 1.3 next-token links (FORMAT.md section 4): what the writer links, that every reader
/// path gets the same values back as from a 1.2 file, and that forged links are refused.
@Suite struct NextTokenLinkTests {
    /// One sequence of generated teacher rows: K = 6 (a single band), 40 tokens, one block.
    static func linkedCache(_ tag: String, logProbs: LogProbEncoding? = nil, minor: Int = ShardFormatVersion.minor) throws -> String {
        let dir = freshDirectory(tag)
        let g = TeacherLikeGenerator(vocabularySize: 300, k: 6, seed: 11)
        try writeCache(dir, [g.sequence(0, length: 40)], vocab: 300, k: 6,
                       options: WriterOptions(logProbs: logProbs, blockTokens: 64, formatMinorVersion: minor))
        return dir
    }

    /// The links of block 0 of the cache's only shard.
    static func links(_ dir: String) throws -> [UInt32] {
        let r = try ShardReader(path: dir + "/" + CacheWriter.shardName(partition: 0, index: 0))
        let scratch = DecodeScratch()
        try r.decodeBlock(0, bandCount: 1, samples: false, into: scratch.block, decoder: scratch.decoder)
        return (0..<scratch.block.nextLink.count).map { scratch.block.nextLink[$0] }
    }

    @Test func theWriterLinksExactlyTheNextInputsFoundInBandZero() throws {
        let g = TeacherLikeGenerator(vocabularySize: 300, k: 6, seed: 11)
        let s = g.sequence(0, length: 40)
        let dir = try Self.linkedCache("links")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let links = try Self.links(dir)
        #expect(links.count == 40)
        for t in 0..<40 {
            let band0 = Array(s.entryIDs[s.entryOffsets[t]..<s.entryOffsets[t + 1]].prefix(6))
            let want = t + 1 < 40 ? band0.firstIndex(of: s.inputIDs[t + 1]).map { UInt32($0 + 1) } ?? 0 : 0
            #expect(links[t] == want, "token \(t)")
        }
        #expect(links.filter { $0 > 0 }.count >= 20, "the generator's next token is mostly a top entry")
    }

    /// Lossless: the generator's next log-prob of a linked position is exactly the entry's
    /// float32, so every delta is 0; quantised, the delta is the float32 rounding at most.
    @Test(arguments: [LogProbEncoding.float32, .default])
    func deltasAreZeroWhenLosslessAndSameValuesAsFormat1_2(_ lp: LogProbEncoding) throws {
        let new = try Self.linkedCache("links-new", logProbs: lp), old = try Self.linkedCache("links-old", logProbs: lp, minor: 2)
        defer { try? FileManager.default.removeItem(atPath: new); try? FileManager.default.removeItem(atPath: old) }
        let r = try ShardReader(path: new + "/" + CacheWriter.shardName(partition: 0, index: 0))
        let scratch = DecodeScratch()
        try r.decodeBlock(0, bandCount: 1, samples: false, into: scratch.block, decoder: scratch.decoder)
        let deltas = (0..<scratch.block.nextLogProbDelta.count).map { scratch.block.nextLogProbDelta[$0] }
        #expect(!deltas.isEmpty)
        if lp == .float32 { #expect(deltas.allSatisfy { $0 == 0 }) } else { #expect(deltas.contains { $0 != 0 }) }
        let oldLayout = try ShardReader(path: old + "/" + CacheWriter.shardName(partition: 0, index: 0)).layout
        #expect(oldLayout.blocks[0].nextLink == nil && oldLayout.json.formatMinorVersion == 2)
        // Every k, including 0 (band 0 is decoded for the links anyway).
        let a = try CacheReader(directory: new), b = try CacheReader(directory: old)
        let ba = TargetBatch(), bb = TargetBatch()
        for k in [0, 1, 6] {
            try a.decode(tokens: 3..<40, k: k, into: ba); try b.decode(tokens: 3..<40, k: k, into: bb)
            #expect(ba.inputIDs == bb.inputIDs, "k \(k)")
            #expect(ba.nextTokenLogProbs.map(\.bitPattern) == bb.nextTokenLogProbs.map(\.bitPattern), "k \(k)")
            #expect(ba.entryIDs == bb.entryIDs && ba.entryLogProbs.map(\.bitPattern) == bb.entryLogProbs.map(\.bitPattern), "k \(k)")
        }
    }

    /// On generated rows of a realistic size the links save bytes (bench format measures how many).
    @Test func linksMakeTheCacheSmaller() throws {
        let g = TeacherLikeGenerator(vocabularySize: 32000, k: 64, seed: 3)
        let seqs = (0..<4).map { g.sequence($0, length: 1024) }
        var bytes: [Int] = []
        for minor in [3, 2] {
            let dir = freshDirectory("links-size")
            defer { try? FileManager.default.removeItem(atPath: dir) }
            bytes.append(try writeCache(dir, seqs, vocab: 32000, k: 64, options: WriterOptions(formatMinorVersion: minor)).totals.bytes)
        }
        #expect(Double(bytes[0]) < 0.99 * Double(bytes[1]), "\(bytes)")
    }

    /// Links behind valid checksums that break FORMAT.md section 4's rules: each is refused by
    /// the reader and by verify, naming the file and the chunk.
    @Test func forgedLinksAreRefusedNamingFileAndChunk() throws {
        let base = try Self.linkedCache("links-forge")
        defer { try? FileManager.default.removeItem(atPath: base) }
        let links = try Self.links(base)
        let first = try #require(links.firstIndex { $0 > 0 }), last = try #require(links.lastIndex { $0 > 0 })
        let forgeries: [(String, ShardRewrite, String)] = [
            ("link past band 0", ShardRewrite(values: { _, c, v in if c == "next_link" { v[first] = 7 } }),
             "block 0 column next_link"),
            ("link at the last token", ShardRewrite(values: { _, c, v in if c == "next_link" { v[last] = 0; v[v.count - 1] = 1 } }),
             "a link at the block's last token"),
            ("one delta missing", ShardRewrite(values: { _, c, v in if c == "next_logprob_delta" { v.removeLast() } }),
             "block 0 column"),
            ("delta column dropped", ShardRewrite(footer: { f in f.blocks[0].chunks.removeAll { $0.column == "next_logprob_delta" } }),
             "next_link and next_logprob_delta come together"),
            ("links in a 1.2 footer", ShardRewrite(footer: { f in f.formatMinorVersion = 2 }),
             "next-token links need format 1.3, footer says 1.2"),
        ]
        try expectForgeriesRefused(base, forgeries)
    }
}
