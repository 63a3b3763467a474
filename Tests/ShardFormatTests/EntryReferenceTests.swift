import Foundation
import SyntheticData
import Testing
import TestSupport
@testable import ShardFormat
import Random

/// Format 1.3 entry references (FORMAT.md section 4) on rows whose entries depend on the input
/// token, as a real teacher's do; the generator's rows (whose entries do not) keep them off.
@Suite struct EntryReferenceTests {
    /// Rows of a "bigram teacher": each input id has its own list of K ids; a position's entries
    /// are its input's list with neighbours swapped and about one id in eight replaced, cut to
    /// a random count. Inputs come from 40 ids, or (one in four) from the previous position's
    /// entries, as next-token links need.
    static func bigramRows(seed: UInt64, vocab V: Int, k K: Int, sequences: Int, length: Int) -> [TeacherLikeGenerator.Sequence] {
        var rng = SplitMix64(seed: seed)
        let inputs = (0..<40).map { _ in Int32(rng.next() % UInt64(V)) }
        var lists: [Int32: [Int32]] = [:]
        return (0..<sequences).map { i in
            var s = TeacherLikeGenerator.Sequence(documentKey: DocumentHash(high: seed, low: UInt64(i)), documentOffset: 0)
            for t in 0..<length {
                let prev = t > 0 ? s.entryOffsets[t - 1]..<s.entryOffsets[t] : 0..<0
                let x = !prev.isEmpty && rng.next() % 4 == 0 ? s.entryIDs[prev.lowerBound + Int(rng.next() % UInt64(prev.count))]
                    : inputs[Int(rng.next() % 40)]
                s.inputIDs.append(x)
                if lists[x] == nil {
                    var used = Set<Int32>(), l: [Int32] = []
                    while l.count < K { let id = Int32(rng.next() % UInt64(V)); if used.insert(id).inserted { l.append(id) } }
                    lists[x] = l
                }
                var row = lists[x]!
                for r in 0..<(K - 1) where rng.next() % 4 == 0 { row.swapAt(r, r + 1) }
                var used = Set(row)
                for r in 0..<K where rng.next() % 8 == 0 {
                    let id = Int32(rng.next() % UInt64(V))
                    if used.insert(id).inserted { used.remove(row[r]); row[r] = id }
                }
                let c = rng.next() % 5 == 0 ? Int(rng.next() % UInt64(K + 1)) : K
                var l = Float(-rng.unit() - log(Double(c + 1)))   // the row's probability stays below 1
                for r in 0..<c { s.entryIDs.append(row[r]); s.entryLogProbs.append(l); l -= Float(rng.unit()) }
                s.entryOffsets.append(s.entryIDs.count)
                s.nextTokenLogProbs.append(Float(-10 * rng.unit())); s.logSumExps.append(Float(rng.normal()))
                s.sampleOffsets.append(0)
            }
            return s
        }
    }

    static func shardColumns(_ dir: String) throws -> Set<String> {
        try Set(CacheReader(directory: dir).manifest.shards.flatMap {
            try ShardReader(path: dir + "/" + $0.file).layout.json.blocks.flatMap(\.chunks).map(\.column)
        })
    }

    @Test(arguments: [LogProbEncoding.default, .float32])
    func everyValueComesBackAndTheIDsAreSmaller(_ lp: LogProbEncoding) throws {
        let seqs = Self.bigramRows(seed: 5, vocab: 5000, k: 40, sequences: 6, length: 300)
        var bytes: [Int] = []
        for minor in [3, 2] {
            let dir = freshDirectory("refs")
            defer { try? FileManager.default.removeItem(atPath: dir) }
            // Bands 0, 8, 16, 32, 40; blocks of 257 tokens end inside sequences.
            let m = try writeCache(dir, seqs, vocab: 5000, k: 40, options: WriterOptions(logProbs: lp, blockTokens: 257, formatMinorVersion: minor))
            _ = m
            // The id columns' bytes: what references change.
            bytes.append(try CacheReader(directory: dir).columnStatistics()
                .filter { $0.column.hasPrefix("entry_ids") || $0.column.hasPrefix("entry_refs") || $0.column == "entry_id_dict" }
                .reduce(0) { $0 + $1.storedBytes })
            let columns = try Self.shardColumns(dir)
            #expect(columns.contains("entry_refs.0") == (minor == 3) && columns.contains("entry_refs.3") == (minor == 3), "\(columns)")
            #expect(CacheVerifier.verify(directory: dir).problems == [])
            let r = try CacheReader(directory: dir), batch = TargetBatch()
            var start = 0
            for s in seqs {
                for k in [0, 1, 8, 9, 33, 40] {
                    try r.decode(tokens: start..<(start + s.count), k: k, into: batch)
                    #expect(batch.inputIDs == s.inputIDs, "k \(k)")
                    #expect(batch.nextTokenLogProbs.map(\.bitPattern) == s.nextTokenLogProbs.map(\.bitPattern), "k \(k)")
                    for t in 0..<s.count {
                        let e = Array(s.entryIDs[s.entryOffsets[t]..<s.entryOffsets[t + 1]].prefix(k))
                        #expect(Array(batch.entryIDs[(t * k)..<(t * k + e.count)]) == e, "k \(k) token \(t)")
                        #expect(Int(batch.entryCounts[t]) == e.count)
                    }
                }
                start += s.count
            }
        }
        #expect(Double(bytes[0]) < 0.85 * Double(bytes[1]), "id bytes with and without references: \(bytes)")
    }

    /// The generator draws each position's candidates without regard to its input token, so
    /// fewer than half of the entries reappear at the reference position and the writer leaves
    /// references out (they would cost more than they save).
    @Test func generatedRowsKeepReferencesOff() throws {
        let g = TeacherLikeGenerator(vocabularySize: 32000, k: 64, seed: 2)
        let dir = freshDirectory("refs-off")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try writeCache(dir, (0..<3).map { g.sequence($0, length: 1024) }, vocab: 32000, k: 64)
        #expect(try !Self.shardColumns(dir).contains { $0.hasPrefix("entry_refs") })
    }

    @Test func forgedReferencesAreRefusedNamingFileAndChunk() throws {
        let base = freshDirectory("refs-forge")
        defer { try? FileManager.default.removeItem(atPath: base) }
        try writeCache(base, Self.bigramRows(seed: 9, vocab: 3000, k: 8, sequences: 1, length: 120), vocab: 3000, k: 8,
                       options: WriterOptions(blockTokens: 200))
        #expect(try Self.shardColumns(base).contains("entry_refs.0"))
        let forgeries: [(String, ShardRewrite, String)] = [
            ("reference past the earlier list", ShardRewrite(values: { _, c, v in if c == "entry_refs.0", let i = v.firstIndex(where: { $0 > 0 }) { v[i] = 200 } }),
             "block 0 column entry_refs.0"),
            ("one stored id missing", ShardRewrite(values: { _, c, v in if c == "entry_ids.0" { v.removeLast() } }),
             "block 0 column entry_ids.0"),
            ("one reference missing", ShardRewrite(values: { _, c, v in if c == "entry_refs.0" { v.removeLast() } }),
             "block 0 column entry_refs.0"),
            ("references in a 1.2 footer", ShardRewrite(footer: { f in f.formatMinorVersion = 2 }), "need format 1.3, footer says 1.2"),
        ]
        try expectForgeriesRefused(base, forgeries)
    }
}
