import Foundation
import Testing
import TestSupport
import Truncation
@testable import ShardFormat

/// One writer per partition and per merged manifest, in one process and across processes.
@Suite struct CacheLockTests {
    private static let description = CacheDescription(vocabularySize: 50, fingerprints: Fingerprints(teacher: "t", tokenizer: "tok", corpus: "c"),
                                                      capture: CaptureSettings(policy: .topK(k: 2)))

    private static func lockedHolder(_ body: () throws -> Void) -> String? {
        do { try body() } catch ShardFormatError.locked(_, let holder) { return holder } catch { Issue.record("unexpected \(error)") }
        return nil
    }

    @Test func aSecondWriterOfOnePartitionIsRefusedAndTheFirstKeepsItsData() throws {
        let dir = freshDirectory("lock-same")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let first = try CacheWriter(directory: dir, description: Self.description)
        try first.beginSequence(documentKey: DocumentHash(high: 0, low: 1), documentOffset: 0)
        try first.appendToken(inputID: 3, nextTokenLogProb: -1, logSumExp: 2, entryIDs: [4, 5], entryLogProbs: [-0.5, -1])
        let holder = Self.lockedHolder { _ = try CacheWriter(directory: dir, description: Self.description) }
        #expect(holder?.contains("pid \(getpid())") == true, "\(holder ?? "no error")")
        try first.endSequence()
        try first.finish()
        #expect(CacheVerifier.verify(directory: dir).isSound)
        // Released by finish: a rerun resumes (adopts the published shard).
        let again = try CacheWriter(directory: dir, description: Self.description)
        #expect(again.resumedSequences == 1)
    }

    @Test func writersOfOtherPartitionsRunSideBySide() throws {
        let dir = freshDirectory("lock-parts")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let a = try CacheWriter(directory: dir, description: Self.description, partition: 0, partitionCount: 2)
        let b = try CacheWriter(directory: dir, description: Self.description, partition: 1, partitionCount: 2)
        try a.finish()
        try b.finish()
        let m = try CacheManifest.merge(directory: dir)
        #expect(m.shards.isEmpty)
    }

    @Test func anotherProcessHoldingThePartitionIsNamedAndItsDeathReleasesTheLock() throws {
        let dir = freshDirectory("lock-process")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let p = try Self.slowSynth(dir)
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        try Self.waitForWriter(dir, while: p)
        let holder = Self.lockedHolder { _ = try CacheWriter(directory: dir, description: Self.description) }
        #expect(holder?.contains("pid \(p.processIdentifier)") == true, "\(holder ?? "no error")")
        // A merge while a partition's writer runs is refused too, naming it.
        let merging = Self.lockedHolder { _ = try CacheManifest.merge(directory: dir) }
        #expect(merging?.contains("partition 0") == true, "\(merging ?? "no error")")
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        // The kernel released the dead writer's lock: the lock is free now.
        try CacheLock(directory: dir, name: CacheLock.partitionFileName(0)).release()
    }

    @Test func twoProcessesOnOneCacheGiveOneClearRefusalAndNoLostShard() throws {
        let dir = freshDirectory("lock-race")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let a = try Self.slowSynth(dir)
        defer { if a.isRunning { kill(a.processIdentifier, SIGKILL) } }
        try Self.waitForWriter(dir, while: a)
        let b = try Self.slowSynth(dir, stderr: true)
        b.waitUntilExit()
        let err = String(decoding: (b.standardError as! Pipe).fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(b.terminationStatus != 0)
        #expect(err.contains("being written by pid \(a.processIdentifier)"), "\(err)")
        a.waitUntilExit()
        #expect(a.terminationStatus == 0)
        let rep = CacheVerifier.verify(directory: dir)
        #expect(rep.isSound, "\(rep.problems)")
        #expect(try CacheManifest.load(directory: dir).totals.tokens == 300_000)
    }

    @Test func aWriterWithOtherSettingsIsRefusedAndAReaderDuringWritingSeesOnlyPublishedShards() throws {
        let dir = freshDirectory("lock-other")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let a = try Self.slowSynth(dir)
        defer { if a.isRunning { kill(a.processIdentifier, SIGKILL) } }
        try Self.waitForWriter(dir, while: a)
        let r = try runLogitcache(["synth", dir, "--tokens", "1000", "--k", "4", "--vocab", "2000"])
        #expect(r.failedCleanly && r.standardError.contains("being written by pid \(a.processIdentifier)"), "\(r.standardError)")
        // While the writer runs: no manifest.json yet (a clear error), and what its partition
        // manifest lists verifies.
        #expect(throws: ShardFormatError.self) { _ = try CacheReader(directory: dir) }
        let deadline = Date().addingTimeInterval(30)
        while !FileManager.default.fileExists(atPath: dir + "/" + CacheManifest.partitionFileName(0)) && a.isRunning && Date() < deadline { usleep(1000) }
        if a.isRunning {
            let rep = CacheVerifier.verify(directory: dir, manifest: CacheManifest.partitionFileName(0))
            #expect(rep.isSound, "\(rep.problems)")
        }
        a.waitUntilExit()
        #expect(a.terminationStatus == 0)
        #expect(CacheVerifier.verify(directory: dir).isSound)
    }

    /// `logitcache synth` into `dir`, long enough to be caught running.
    private static func slowSynth(_ dir: String, k: Int = 8, stderr: Bool = false) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: try logitcacheBinary())
        p.arguments = ["synth", dir, "--tokens", "300000", "--k", "\(k)", "--vocab", "2000", "--block-tokens", "1000", "--shard-bytes", "50000"]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = stderr ? Pipe() : FileHandle.nullDevice
        try p.run()
        return p
    }

    /// Waits until the writer in `dir` has its lock: its first shard file exists (the lock file
    /// alone is created just before the lock is taken).
    private static func waitForWriter(_ dir: String, while p: Process) throws {
        let deadline = Date().addingTimeInterval(30)
        func started() -> Bool { ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).contains { $0.contains("shard") } }
        while !started() && p.isRunning && Date() < deadline { usleep(1000) }
        try #require(p.isRunning, "synth finished before the test could see it running")
    }
}
