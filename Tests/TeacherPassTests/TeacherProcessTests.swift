import Foundation
import ShardFormat
import Testing
import TestSupport
@testable import TeacherPass

@discardableResult
func runToEnd(_ args: [String]) throws -> Int32 {
    let p = try launchLogitcache(args)
    p.waitUntilExit()
    return p.terminationStatus
}

@Suite(.serialized) struct TeacherProcessTests {
    func arguments(_ f: TeacherFixture, out: String) -> [String] {
        ["teacher", "--model", f.model, "--tokenizer", f.tokenizer, "--corpus", f.corpus, "--out", out,
         "--context", "32", "--top-k", "8", "--batch", "2", "--threads", "1", "--shard-size", "4K", "--block-tokens", "256"]
    }

    /// Killed with SIGKILL at several points and rerun, the pass ends with the same shards,
    /// byte for byte, as an uninterrupted run, and the cache verifies.
    @Test func killedAndRerunEqualsUninterrupted() throws {
        let f = try TeacherFixture(documents: 160)
        let reference = f.dir.path + "/reference", killed = f.dir.path + "/killed"
        let started = Date()
        #expect(try runToEnd(arguments(f, out: reference)) == 0)
        let duration = Date().timeIntervalSince(started)
        let shards = try shardBytes(reference)
        #expect(shards.count >= 4, "the test needs several shards, got \(shards.count)")

        var kills = 0
        for fraction in [0.35, 0.55, 0.75, 0.9] {
            let p = try launchLogitcache(arguments(f, out: killed))
            Thread.sleep(forTimeInterval: duration * fraction)
            if p.isRunning { kill(p.processIdentifier, SIGKILL); kills += 1 }
            p.waitUntilExit()
            // Whatever was published so far is a valid prefix of the reference.
            for (name, bytes) in try shardBytes(killed) { #expect(shards[name] == bytes, "\(name) after a kill") }
        }
        #expect(kills > 0, "no run was killed before finishing")
        #expect(try runToEnd(arguments(f, out: killed)) == 0)
        #expect(try shardBytes(killed) == shards)
        #expect(try runToEnd(["verify", killed]) == 0)
        #expect(try decodedContent(killed, k: 8) == decodedContent(reference, k: 8))
    }

    /// Four partitions as separate processes at once, then `merge`, hold what one process writes.
    @Test func fourPartitionProcessesMergeToTheSingleRun() throws {
        let f = try TeacherFixture(documents: 80)
        let single = f.dir.path + "/single", parts = f.dir.path + "/parts"
        #expect(try runToEnd(arguments(f, out: single)) == 0)
        let processes = try (0..<4).map { try launchLogitcache(arguments(f, out: parts) + ["--partition", "\($0)/4"]) }
        for p in processes { p.waitUntilExit(); #expect(p.terminationStatus == 0) }
        #expect(try runToEnd(["merge", parts]) == 0)
        #expect(try runToEnd(["verify", parts]) == 0)
        #expect(try decodedContent(parts, k: 8) == decodedContent(single, k: 8))
    }

    /// Slurm job-array variables choose the partition when --partition is absent.
    @Test func slurmArrayVariablesChooseThePartition() throws {
        let f = try TeacherFixture(documents: 30)
        let out = f.dir.path + "/slurm"
        let p = Process()
        p.executableURL = URL(fileURLWithPath: try logitcacheBinary())
        p.arguments = arguments(f, out: out)
        p.environment = ["SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "3"]
        p.standardOutput = FileHandle.nullDevice; p.standardError = FileHandle.nullDevice
        try p.run(); p.waitUntilExit()
        #expect(p.terminationStatus == 0)
        let m = try CacheManifest.load(directory: out, name: CacheManifest.partitionFileName(2))
        #expect(m.partition?.index == 2 && m.partition?.count == 3)
    }

    /// `--step-log2`/`--step-multiplier` choose the log-prob step (default 5·2^-8), and
    /// contradictory or out-of-range settings are refused before anything is written.
    @Test func stepOptionsChooseTheLogProbEncoding() throws {
        let f = try TeacherFixture(documents: 10)
        for (extra, want) in [([String](), LogProbEncoding.quantized(stepLog2: 8, multiplier: 5)),
                              (["--step-log2", "6"], .quantized(stepLog2: 6)),
                              (["--step-log2", "7", "--step-multiplier", "3"], .quantized(stepLog2: 7, multiplier: 3)),
                              (["--lossless"], .float32)] {
            let out = f.dir.path + "/step-\(extra.joined(separator: "_"))"
            #expect(try runToEnd(arguments(f, out: out) + extra) == 0, "\(extra)")
            #expect(try CacheReader(directory: out).logProbEncoding == want, "\(extra)")
        }
        for bad in [["--step-multiplier", "5"], ["--step-log2", "21"], ["--step-log2", "8", "--step-multiplier", "0"],
                    ["--lossless", "--step-log2", "6"]] {
            let out = f.dir.path + "/bad-\(bad.joined(separator: "_"))"
            #expect(try runToEnd(arguments(f, out: out) + bad) != 0, "\(bad)")
            #expect(!FileManager.default.fileExists(atPath: out + "/manifest.json"), "\(bad)")
        }
    }

    /// Settings that once gave a misleading message, or none, name the setting at fault.
    @Test func misleadingSettingsAreNamed() throws {
        let f = try TeacherFixture(documents: 4)
        let config = f.model + "/config.json"
        let original = try Data(contentsOf: URL(fileURLWithPath: config))
        for (extra, edit, message) in [
            (["--eot-token", "99999"], nil, "--eot-token \"99999\" is not a token of this tokenizer"),
            (["--level", "99"], nil, "--level 99: zstd levels are 1...22"),
            ([], "rms_norm_eps", "'rms_norm_eps' is -1.0, expected a small positive number"),
            (["--temperature", "1e-39"], nil, "must be in 0.001...1000"),
        ] as [([String], String?, String)] {
            if let key = edit {
                var c = try JSONSerialization.jsonObject(with: original) as! [String: Any]
                c[key] = -1
                try JSONSerialization.data(withJSONObject: c).write(to: URL(fileURLWithPath: config))
            }
            defer { try? original.write(to: URL(fileURLWithPath: config)) }
            let r = try runLogitcache(arguments(f, out: f.dir.path + "/named-\(message.count)") + extra)
            #expect(r.failedCleanly, "\(extra)")
            #expect(r.standardError.contains(message), "\(extra) \(edit ?? ""): \(r.standardError)")
        }
    }
}
