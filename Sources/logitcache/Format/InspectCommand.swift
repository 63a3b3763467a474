import ArgumentParser
import CommandLineSupport
import Foundation
import ShardFormat

struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Tokens, sequences, K, entry counts, captured mass, bytes per token per column, compression, fingerprints.")
    @Argument(help: "Cache directory.") var path: String
    @Flag(help: "Machine-readable output.") var json = false
    @Flag(help: "Skip the captured-mass summary (a pass over every entry).") var noMass = false

    func run() throws {
        let r: CacheReader
        do { r = try CacheReader(directory: path) } catch { throw fail(error) }
        let m = r.manifest, T = max(1, r.tokenCount)
        let cols = r.columnStatistics()
        let stored = cols.reduce(0) { $0 + $1.storedBytes }, plain = cols.reduce(0) { $0 + $1.plainBytes }
        var mass: CapturedMass?
        if !noMass { do { mass = try r.capturedMass() } catch { throw fail(error) } }
        if json {
            var o: [String: Any] = [
                "path": path, "tokens": r.tokenCount, "sequences": r.sequenceCount, "shards": m.shards.count,
                "vocabulary_size": m.vocabularySize, "k": m.capture.k, "policy": m.capture.policy,
                "entries": m.totals.entries, "mean_entries_per_token": Double(m.totals.entries) / Double(T),
                "samples": m.totals.samples, "bytes": m.totals.bytes, "bytes_per_token": Double(m.totals.bytes) / Double(T),
                "log_probs": "\(r.logProbEncoding)", "max_log_prob_error": r.logProbEncoding.maxError,
                "codec": m.encoding.codec, "level": m.encoding.level,
                "fingerprints": ["teacher": m.fingerprints.teacher, "tokenizer": m.fingerprints.tokenizer, "corpus": m.fingerprints.corpus],
                "teacher_cost": ["tokens": m.teacherCost.tokens, "flops": m.teacherCost.flops, "seconds": m.teacherCost.seconds],
                "columns": cols.map { ["column": $0.column, "values": $0.values, "stored_bytes": $0.storedBytes,
                                       "bytes_per_token": Double($0.storedBytes) / Double(T),
                                       "compression_ratio": $0.storedBytes > 0 ? Double($0.plainBytes) / Double($0.storedBytes) : 0] },
                "compression_ratio": stored > 0 ? Double(plain) / Double(stored) : 0,
            ]
            if let c = mass {
                o["captured_mass"] = ["tokens": c.tokens, "mean": c.mean, "min": c.min, "max": c.max, "p1": c.p1, "p10": c.p10,
                                      "p50": c.p50, "p90": c.p90, "p99": c.p99, "quantile_resolution": CapturedMass.resolution]
            }
            printJSON(o)
            return
        }
        func f(_ x: Double) -> String { String(format: "%.3f", x) }
        print("cache        \(path)")
        print("tokens       \(r.tokenCount) in \(r.sequenceCount) sequences, \(m.shards.count) shards, \(m.totals.bytes) bytes (\(f(Double(m.totals.bytes) / Double(T))) B/token)")
        print("vocabulary   \(m.vocabularySize)   K \(m.capture.k)   policy \(m.capture.policy)   temperature \(m.capture.temperature)   samples \(m.capture.samples)")
        print("entries      \(m.totals.entries) (\(f(Double(m.totals.entries) / Double(T))) per token)   sampled ids \(m.totals.samples)")
        if let c = mass {
            func g(_ x: Double) -> String { String(format: "%.4f", x) }
            print("captured     mass of stored entries per token: mean \(g(c.mean))   min \(g(c.min))   p1 \(g(c.p1))   p10 \(g(c.p10))   p50 \(g(c.p50))   p90 \(g(c.p90))   p99 \(g(c.p99))   max \(g(c.max))\(m.totals.samples > 0 ? "   (sampled ids not counted)" : "")")
        }
        print("encoding     \(m.encoding.codec)\(m.encoding.codec == "zstd" ? "(\(m.encoding.level))" : "")   log-probs \(r.logProbEncoding) (max error \(r.logProbEncoding.maxError) nats)")
        print("fingerprints teacher \(m.fingerprints.teacher)   tokenizer \(m.fingerprints.tokenizer)   corpus \(m.fingerprints.corpus)")
        print("teacher cost \(m.teacherCost.tokens) tokens, \(m.teacherCost.flops) FLOPs, \(m.teacherCost.seconds) s")
        print("column                B/token    ratio vs 32-bit")
        for c in cols {
            print(c.column.padding(toLength: 20, withPad: " ", startingAt: 0) + String(format: "%9.3f   %8.2fx", Double(c.storedBytes) / Double(T),
                  c.storedBytes > 0 ? Double(c.plainBytes) / Double(c.storedBytes) : 0))
        }
        print("all columns" + String(format: "%18.3f   %8.2fx", Double(stored) / Double(T), stored > 0 ? Double(plain) / Double(stored) : 0))
    }
}
