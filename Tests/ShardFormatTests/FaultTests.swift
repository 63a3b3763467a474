import Foundation
import SyntheticData
import Testing
import TestSupport
@testable import ShardFormat

/// Damaged, truncated, hostile and half-written caches: each gives a clear error, never a
/// crash and never silently wrong values.
@Suite struct FaultTests {
    /// A small cache (two shards, samples, several blocks) for byte-by-byte damage.
    static func smallCache(_ tag: String) throws -> String {
        let dir = freshDirectory(tag)
        let g = TeacherLikeGenerator(vocabularySize: 300, k: 6, seed: 5, draws: 4)
        try writeCache(dir, (0..<2).map { g.sequence($0, length: 5) }, vocab: 300, k: 6, samples: 4,
                       options: WriterOptions(blockTokens: 4, targetShardBytes: 1))
        return dir
    }

    /// Reads every value through the public reader; throws on any problem it detects.
    static func readAll(_ dir: String) throws {
        let r = try CacheReader(directory: dir)
        let b = TargetBatch()
        try r.decode(tokens: 0..<r.tokenCount, k: r.maxEntries, samples: true, into: b)
        for i in 0..<r.sequenceCount { _ = try r.sequence(i) }
    }

    @Test func everyFlippedByteOfEveryFileIsDetected() throws {
        let dir = try Self.smallCache("flip")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(CacheVerifier.verify(directory: dir).isSound)
        let files = try cacheFiles(dir)
        #expect(files.count == 4)   // two shards (one per sequence), the partition manifest and manifest.json
        var undetected: [String] = [], readerAccepted: [String] = []
        for name in files {
            let path = dir + "/" + name
            let original = try Data(contentsOf: URL(fileURLWithPath: path))
            for i in 0..<original.count {
                var d = original
                d[i] ^= 0x5A
                try d.write(to: URL(fileURLWithPath: path))
                if CacheVerifier.verify(directory: dir).isSound { undetected.append("\(name)@\(i)") }
                // The reader checks everything but whole-file hashes: a flip in a shard or in
                // manifest.json must make it throw (a flip in the partition manifest is not its business).
                if name != CacheManifest.partitionFileName(0), (try? Self.readAll(dir)) != nil { readerAccepted.append("\(name)@\(i)") }
            }
            try original.write(to: URL(fileURLWithPath: path))
        }
        #expect(undetected == [])
        #expect(readerAccepted == [])
        #expect(CacheVerifier.verify(directory: dir).isSound)
    }

    @Test func truncationAtEveryOffsetGivesAClearError() throws {
        let dir = try Self.smallCache("trunc")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let shard = CacheWriter.shardName(partition: 0, index: 0)
        for name in [shard, CacheManifest.fileName] {
            let path = dir + "/" + name
            let original = try Data(contentsOf: URL(fileURLWithPath: path))
            for n in 0..<original.count {
                try original.prefix(n).write(to: URL(fileURLWithPath: path))
                let rep = CacheVerifier.verify(directory: dir)
                #expect(!rep.isSound && rep.problems.allSatisfy { $0.contains(name) }, "\(name) cut at \(n): \(rep.problems)")
                do { try Self.readAll(dir); Issue.record("reader accepted \(name) cut at \(n)") } catch let e as ShardFormatError {
                    #expect("\(e)".contains(name))
                }
            }
            try original.write(to: URL(fileURLWithPath: path))
        }
    }

    /// A footer with a valid checksum but hostile numbers is refused by validation.
    @Test func hostileFooterFieldsAreRefused() throws {
        let dir = try Self.smallCache("hostile")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/" + CacheWriter.shardName(partition: 0, index: 0)
        let original = try Data(contentsOf: URL(fileURLWithPath: path))
        let r = try ShardReader(path: path)
        let json = r.layout.json
        let foot = Int(original.count) - 40 - Int(original.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: original.count - 32, as: UInt64.self) })
        var mutations: [(String, (inout FooterJSON) -> Void)] = [
            ("offset past the footer", { $0.blocks[0].chunks[0].offset = foot }),
            ("huge size", { $0.blocks[0].chunks[1].size = Int.max }),
            ("negative offset", { $0.blocks[0].chunks[2].offset = -5 }),
            ("count mismatch", { $0.blocks[0].chunks[0].count += 1 }),
            ("vocabulary too big", { $0.vocabularySize = 1 << 30 }),
            ("bands", { $0.entryBands = [0, 9] }),
            ("tokens", { $0.tokens += 1 }),
            ("sequence lengths", { $0.sequenceTable.lengths[0] += 1 }),
            ("entries", { $0.blocks[0].entries += 1 }),
            ("missing column", { $0.blocks[0].chunks.removeLast() }),
            ("width", { $0.blocks[0].chunks[0].width = 9 }),
            ("codec", { $0.blocks[0].chunks[0].codec = "brotli" }),
        ]
        // A wrong count inside a chunk's own checksum: declared count differs from the bytes.
        mutations.append(("width too small", { f in
            if let i = f.blocks[0].chunks.firstIndex(where: { $0.column == "entry_ids.0" }) { f.blocks[0].chunks[i].width = 1; f.blocks[0].chunks[i].count *= 2 }
        }))
        for (what, mutate) in mutations {
            var f = json
            mutate(&f)
            let enc = JSONEncoder(); enc.outputFormatting = [.sortedKeys]
            let fj = Array(try enc.encode(f))
            var bytes = Array(original.prefix(foot)) + fj
            bytes += le64(UInt64(foot)) + le64(UInt64(fj.count)) + le64(Checksum.xxh3(fj)) + le32(1) + le32(0) + shardMagic
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            #expect(throws: ShardFormatError.self, "\(what)") {
                let s = try ShardReader(path: path)
                let scratch = DecodeScratch()
                for b in s.layout.blocks.indices { try s.decodeBlock(b, bandCount: s.layout.bands.count - 1, samples: true, into: scratch.block, decoder: scratch.decoder) }
            }
        }
    }

    /// Bucket-filtered chunks (format 1.1) whose own lengths lie, behind valid checksums: the
    /// reader and verify name the file and the chunk.
    @Test func forgedBucketChunksAreRefusedNamingFileAndChunk() throws {
        let forgeries: [(String, (inout [UInt8]) -> Void)] = [
            ("symbol size past the end", { b in let s = UInt32(b.count); for i in 0..<4 { b[i] = UInt8(truncatingIfNeeded: s >> UInt32(8 * i)) } }),
            ("extra-bit byte missing", { b in b.removeLast() }),
            ("extra-bit byte added", { b in b.append(0) }),
            ("symbol size field cut", { b in b = Array(b.prefix(3)) }),
        ]
        for (what, forge) in forgeries {
            let dir = try Self.smallCache("bucket")
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let shard = CacheWriter.shardName(partition: 0, index: 0)
            var forged = false
            try rewriteCache(dir, ShardRewrite(stored: { b, column, bytes in
                if b == 0 && column == "entry_ids.0" && !bytes.isEmpty { forge(&bytes); forged = true }
            }))
            #expect(forged, "\(what): block 0 has no bucket chunk to forge")
            let rep = CacheVerifier.verify(directory: dir)
            #expect(!rep.isSound && rep.problems.contains { $0.contains(shard) && $0.contains("block 0 column entry_ids.0") }, "\(what): \(rep.problems)")
            do { try Self.readAll(dir); Issue.record("reader accepted \(what)") } catch let e as ShardFormatError {
                #expect("\(e)".contains(shard) && "\(e)".contains("block 0 column entry_ids.0"), "\(what): \(e)")
            }
        }
        // A bucket filter in a footer that claims format 1.0 is refused before any chunk is read.
        let dir = try Self.smallCache("bucket-minor")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try rewriteCache(dir, ShardRewrite(footer: { $0.formatMinorVersion = nil; $0.logProbs.stepMultiplier = nil }))
        do { _ = try CacheReader(directory: dir); Issue.record("reader accepted a bucket filter in format 1.0") } catch {
            #expect("\(error)".contains("needs format 1.1, footer says 1.0"), "\(error)")
        }
        #expect(!CacheVerifier.verify(directory: dir).isSound)
    }

    @Test func aStepMultiplierNeedsFormat1_2() throws {
        let dir = try Self.smallCache("multiplier-minor")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let shard = CacheWriter.shardName(partition: 0, index: 0)
        for (what, edit, message) in [
            ("footer says 1.1", { (f: inout FooterJSON) in f.formatMinorVersion = 1 }, "stepMultiplier 5 needs format 1.2, footer says 1.1"),
            ("multiplier 0", { (f: inout FooterJSON) in f.logProbs.stepMultiplier = 0 }, "stepMultiplier 0 not valid"),
            ("multiplier 256", { (f: inout FooterJSON) in f.logProbs.stepMultiplier = 256 }, "stepMultiplier 256 not valid"),
            ("footer says 1.\(ShardFormatVersion.minor + 1)", { (f: inout FooterJSON) in f.formatMinorVersion = ShardFormatVersion.minor + 1 },
             "formatMinorVersion \(ShardFormatVersion.minor + 1) is newer"),
        ] as [(String, (inout FooterJSON) -> Void, String)] {
            let copy = freshDirectory("multiplier-\(what.count)")
            defer { try? FileManager.default.removeItem(atPath: copy) }
            for n in try FileManager.default.contentsOfDirectory(atPath: dir) {
                try FileManager.default.copyItem(atPath: dir + "/" + n, toPath: copy + "/" + n)
            }
            try rewriteCache(copy, ShardRewrite(footer: edit))
            do { _ = try CacheReader(directory: copy); Issue.record("reader accepted \(what)") } catch {
                #expect("\(error)".contains(shard) && "\(error)".contains(message), "\(what): \(error)")
            }
            #expect(!CacheVerifier.verify(directory: copy).isSound, "\(what)")
        }
        // And the writer refuses to put such a step in an older file.
        #expect(throws: ShardFormatError.self) {
            try CacheWriter(directory: freshDirectory("multiplier-writer"), description: description(vocab: 10, k: 2),
                            options: WriterOptions(logProbs: .quantized(stepLog2: 8, multiplier: 5), formatMinorVersion: 1))
        }
        #expect(WriterOptions(formatMinorVersion: 1).logProbs == .quantized(stepLog2: 6))
        #expect(WriterOptions().logProbs == .quantized(stepLog2: 8, multiplier: 5))
    }

    @Test func shardNamesLeadingOutsideAreRefused() throws {
        let dir = try Self.smallCache("path")
        let outside = freshDirectory("outside")
        defer { try? FileManager.default.removeItem(atPath: dir); try? FileManager.default.removeItem(atPath: outside) }
        let good = try CacheManifest.load(directory: dir)
        let shard0 = good.shards[0].file
        try FileManager.default.copyItem(atPath: dir + "/" + shard0, toPath: outside + "/" + shard0)
        try FileManager.default.createSymbolicLink(atPath: dir + "/link.lcs", withDestinationPath: outside + "/" + shard0)
        try FileManager.default.createDirectory(atPath: dir + "/sub", withIntermediateDirectories: true)
        for name in ["../" + URL(fileURLWithPath: outside).lastPathComponent + "/" + shard0, outside + "/" + shard0, "sub/x.lcs", "..", ".", "", "link.lcs", "a\u{0}b"] {
            var m = good
            m.shards[0].file = name
            try m.publish(directory: dir, name: CacheManifest.fileName)
            do { _ = try CacheReader(directory: dir); Issue.record("accepted \(name)") } catch let e as ShardFormatError {
                if case .unsafePath = e {} else { Issue.record("\(name): \(e)") }
            }
            #expect(!CacheVerifier.verify(directory: dir).isSound)
        }
        // A link that stays inside the directory is fine.
        try FileManager.default.createSymbolicLink(atPath: dir + "/inside.lcs", withDestinationPath: shard0)
        var m = good
        m.shards[0].file = "inside.lcs"
        try m.publish(directory: dir, name: CacheManifest.fileName)
        try Self.readAll(dir)
    }

    @Test func partitionsMergeWithoutCopyingData() throws {
        let dir = freshDirectory("merge")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let g = TeacherLikeGenerator(vocabularySize: 2000, k: 8, seed: 11)
        let seqs = (0..<9).map { g.sequence($0, length: 20 + $0) }
        for p in 0..<3 {
            let w = try CacheWriter(directory: dir, description: description(vocab: 2000, k: 8),
                                    options: WriterOptions(targetShardBytes: 3000), partition: p, partitionCount: 3)
            for i in stride(from: p, to: 9, by: 3) { try w.append(seqs[i]) }
            w.teacherCost = TeacherCost(tokens: 100, flops: 1e9, seconds: 2)
            try w.finish()
            #expect(!FileManager.default.fileExists(atPath: dir + "/" + CacheManifest.fileName))
        }
        let before = try snapshot(dir)
        let m = try CacheManifest.merge(directory: dir)
        let after = try snapshot(dir)
        #expect(after.filter { $0.key != CacheManifest.fileName } == before)   // no shard touched
        #expect(m.partition == nil && m.teacherCost == TeacherCost(tokens: 300, flops: 3e9, seconds: 6))
        let r = try CacheReader(directory: dir)
        let order = [0, 3, 6, 1, 4, 7, 2, 5, 8]
        let b = TargetBatch()
        for (i, src) in order.enumerated() {
            let s = try r.sequence(i)
            #expect(s.documentKey == seqs[src].documentKey && s.length == seqs[src].count)
            try r.decode(tokens: s.firstToken..<(s.firstToken + s.length), k: 8, into: b)
            #expect(b.inputIDs == seqs[src].inputIDs)
        }
        #expect(CacheVerifier.verify(directory: dir).isSound)
        // A missing or disagreeing partition is named.
        try FileManager.default.removeItem(atPath: dir + "/" + CacheManifest.partitionFileName(2))
        #expect(throws: ShardFormatError.self) { try CacheManifest.merge(directory: dir) }
        var other = try CacheManifest.load(directory: dir, name: CacheManifest.partitionFileName(1))
        other.partition = PartitionInfo(index: 2, count: 3)
        other.fingerprints.teacher = "another teacher"
        try other.publish(directory: dir, name: CacheManifest.partitionFileName(2))
        do { try CacheManifest.merge(directory: dir); Issue.record("merged a different teacher") } catch let e as ShardFormatError {
            #expect("\(e)".contains(CacheManifest.partitionFileName(2)))
        }
    }

    @Test func writerKilledMidShardLeavesAVerifiableCacheAndARerunCompletesItIdentically() throws {
        let bin = try logitcacheBinary()
        let killed = freshDirectory("killed"), clean = freshDirectory("clean")
        defer { try? FileManager.default.removeItem(atPath: killed); try? FileManager.default.removeItem(atPath: clean) }
        let args = ["--seed", "4", "--vocab", "4000", "--tokens", "400000", "--seq-len", "500", "--k", "16",
                    "--block-tokens", "1000", "--shard-bytes", "60000"]
        func run(_ dir: String) throws -> Process {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: bin)
            p.arguments = ["synth", dir] + args
            p.standardOutput = FileHandle.nullDevice
            try p.run()
            return p
        }
        let p = try run(killed)
        // Kill once a few shards are published, while the writer is inside the next one.
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            let shards = (try? FileManager.default.contentsOfDirectory(atPath: killed))?.filter { $0.hasSuffix(".lcs") }.count ?? 0
            if shards >= 3 || !p.isRunning { break }
            usleep(2000)
        }
        try #require(p.isRunning, "synth finished before it could be killed")
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        #expect(p.terminationReason == .uncaughtSignal)
        let names = try FileManager.default.contentsOfDirectory(atPath: killed)
        #expect(!names.contains(CacheManifest.fileName))
        // What was published verifies: the partition manifest lists only complete shards.
        let rep = CacheVerifier.verify(directory: killed, manifest: CacheManifest.partitionFileName(0))
        #expect(rep.isSound, "\(rep.problems)")
        #expect(rep.shardsChecked >= 2)
        // The rerun continues after the last published shard and ends byte-identical to a clean run.
        let q = try run(killed); q.waitUntilExit()
        let c = try run(clean); c.waitUntilExit()
        #expect(q.terminationStatus == 0 && c.terminationStatus == 0)
        let a = try snapshot(killed), b = try snapshot(clean)
        #expect(a.keys.sorted() == b.keys.sorted())
        #expect(a == b)
        #expect(CacheVerifier.verify(directory: killed).isSound)
    }
}
