import Foundation
import SyntheticData
import Testing
import TestSupport
@testable import ShardFormat

/// A reader opened over a ``ShardSource`` (a remote cache fetched on demand): footers only at
/// open, a shard fetched when first read, at most `openShards` mapped, and a fetched file that is
/// not the shard whose footer was read is refused.
@Suite struct ShardSourceTests {
    /// Serves the shards of `origin`, copying each into `local` when fetched; records calls.
    final class CopyingSource: ShardSource, @unchecked Sendable {
        // Sendable because every mutable field is guarded by `lock`.
        let origin: String, local: String
        let lock = NSLock()
        var fetched: [String] = [], released: [String] = [], open: Set<String> = []
        var substitute: [String: String] = [:]   // name -> file served instead
        var failing: Set<String> = []

        init(origin: String, local: String) {
            self.origin = origin
            self.local = local
        }

        func tail(shard index: Int, name: String, size: Int) throws -> [UInt8] {
            let data = try Data(contentsOf: URL(fileURLWithPath: origin + "/" + name))
            // Exactly the footer and trailer, as a remote source reads them with a range request.
            let footerLength = data.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: data.count - 32, as: UInt64.self) }
            return Array(data.suffix(Int(footerLength) + 40))
        }

        func fetch(shard index: Int, name: String) throws -> String {
            lock.lock()
            defer { lock.unlock() }
            if failing.contains(name) { throw ShardFormatError.invalidInput("source: \(name) is unreachable") }
            let from = origin + "/" + (substitute[name] ?? name), to = local + "/" + name
            try? FileManager.default.removeItem(atPath: to)
            try FileManager.default.copyItem(atPath: from, toPath: to)
            fetched.append(name)
            open.insert(name)
            return to
        }

        func release(shard index: Int, name: String) {
            lock.lock()
            defer { lock.unlock() }
            released.append(name)
            open.remove(name)
        }
    }

    /// A cache of several shards in `origin`, and a local directory holding only its manifest.
    static func setUp(_ tag: String) throws -> (origin: String, local: String) {
        let origin = freshDirectory(tag + "-origin"), local = freshDirectory(tag + "-local")
        let g = TeacherLikeGenerator(vocabularySize: 500, k: 8, seed: 9, draws: 6)
        try writeCache(origin, (0..<12).map { g.sequence($0, length: 150) }, vocab: 500, k: 8, samples: 6,
                       options: WriterOptions(blockTokens: 128, targetShardBytes: 6000))
        try FileManager.default.copyItem(atPath: origin + "/manifest.json", toPath: local + "/manifest.json")
        return (origin, local)
    }

    static func same(_ a: TargetBatch, _ b: TargetBatch) -> Bool {
        a.inputIDs == b.inputIDs && a.entryIDs == b.entryIDs && a.entryLogProbs == b.entryLogProbs && a.entryCounts == b.entryCounts
            && a.logSumExps == b.logSumExps && a.nextTokenLogProbs == b.nextTokenLogProbs
            && a.sampleOffsets == b.sampleOffsets && a.sampleIDs == b.sampleIDs && a.sampleDraws == b.sampleDraws
    }

    @Test func readsEqualTheLocalReaderAndFetchOnDemand() throws {
        let (origin, local) = try Self.setUp("source-read")
        defer { for d in [origin, local] { try? FileManager.default.removeItem(atPath: d) } }
        let want = try CacheReader(directory: origin)
        #expect(want.manifest.shards.count >= 4)
        let source = CopyingSource(origin: origin, local: local)
        try Self.readEverything(want, CacheReader(directory: local, source: source, openShards: 2), source)
        #expect(source.open.isEmpty)   // the reader, gone, released what it held
    }

    static func readEverything(_ want: CacheReader, _ r: CacheReader, _ source: CopyingSource) throws {
        #expect(source.fetched.isEmpty && r.openShardCount == 0)
        #expect(r.tokenCount == want.tokenCount && r.sequenceCount == want.sequenceCount)
        #expect(try (0..<r.sequenceCount).allSatisfy { try r.sequence($0) == want.sequence($0) })
        #expect(source.fetched.isEmpty)   // the sequence table comes from the footers
        let a = TargetBatch(), b = TargetBatch()
        try want.decode(tokens: 0..<40, k: 8, samples: true, into: a)
        try r.decode(tokens: 0..<40, k: 8, samples: true, into: b)
        #expect(Self.same(a, b) && source.fetched == [want.manifest.shards[0].file])
        // Every sequence, in a scattered order, through two mapped shards at most.
        for i in (0..<r.sequenceCount).map({ ($0 * 7) % r.sequenceCount }) {
            let s = try want.sequence(i)
            try want.decode(tokens: s.firstToken..<(s.firstToken + s.length), k: 5, samples: true, into: a)
            try r.decode(tokens: s.firstToken..<(s.firstToken + s.length), k: 5, samples: true, into: b)
            #expect(Self.same(a, b))
            #expect(r.openShardCount <= 2 && source.open.count <= 2)
        }
        #expect(source.fetched.count > r.manifest.shards.count)   // evicted shards were fetched again
        #expect(!source.open.isEmpty)
    }

    @Test func aSubstitutedOrFailingShardIsAnErrorNotWrongRows() throws {
        let (origin, local) = try Self.setUp("source-bad")
        defer { for d in [origin, local] { try? FileManager.default.removeItem(atPath: d) } }
        let names = try CacheManifest.load(directory: origin).shards.map(\.file)
        let source = CopyingSource(origin: origin, local: local)
        source.substitute[names[1]] = names[2]
        source.failing.insert(names[3])
        let r = try CacheReader(directory: local, source: source, openShards: 8)
        let b = TargetBatch()
        func first(_ shard: Int) throws -> Int { try r.sequence(r.sequenceStarts[shard]).firstToken }
        #expect { try r.decode(tokens: try first(1)..<(try first(1) + 4), k: 8, into: b) } throws: {
            // Another shard's file differs in size, or else in its footer.
            "\($0)".contains(names[1]) && ("\($0)".contains("manifest says") || "\($0)".contains("footer differs"))
        }
        #expect(!source.open.contains(names[1]))   // the refused file was released
        #expect { try r.decode(tokens: try first(3)..<(try first(3) + 4), k: 8, into: b) } throws: {
            "\($0)".contains("\(names[3]) is unreachable")
        }
        // The reader stays usable: other shards read, and a repaired source serves the shard.
        try r.decode(tokens: 0..<4, k: 8, into: b)
        source.failing.removeAll()
        try r.decode(tokens: try first(3)..<(try first(3) + 4), k: 8, into: b)
        #expect(b.tokenCount == 4)
    }

    @Test func aDamagedTailIsRefusedAtOpen() throws {
        let (origin, local) = try Self.setUp("source-tail")
        defer { for d in [origin, local] { try? FileManager.default.removeItem(atPath: d) } }
        final class Truncating: ShardSource, @unchecked Sendable {
            let inner: CopyingSource
            init(_ inner: CopyingSource) { self.inner = inner }
            func tail(shard index: Int, name: String, size: Int) throws -> [UInt8] {
                var t = try inner.tail(shard: index, name: name, size: size)
                if index == 1 { t[t.count - 30] ^= 1 }   // a bit of the trailer's footer length
                return t
            }
            func fetch(shard index: Int, name: String) throws -> String { try inner.fetch(shard: index, name: name) }
            func release(shard index: Int, name: String) { inner.release(shard: index, name: name) }
        }
        #expect { try CacheReader(directory: local, source: Truncating(CopyingSource(origin: origin, local: local)), openShards: 2) } throws: {
            "\($0)".contains("part-00000-shard-000001") && "\($0)".contains("footer")
        }
    }
}
