import ArgumentParser
import Foundation
import ShardFormat
import StudentLoader

/// `logitcache bench loader`: loss-ready tokens/s of the student loader on a synthetic K=64
/// cache against the bare reader (sequential `CacheReader.decode` into [T, k] arrays), with
/// 1 and 2 decode threads, one loader's memory, and 4 loader processes reading one cache.
struct BenchLoaderCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "loader",
        abstract: "Tokens/s and memory of the student loader vs the bare reader; 4 processes on one cache.")
    @Option(help: "Tokens in the synthetic cache.") var tokens: Int = 1 << 20
    @Option(help: "Vocabulary size.") var vocab: Int = 32000
    @Option(help: "B: windows per batch.") var batch: Int = 8
    @Option(help: "T: tokens per window.") var context: Int = 1024
    @Option(help: "Use this cache instead of generating one.") var cache: String?
    @Option(help: "Loader processes reading the cache at once.") var processes: Int = 4
    @Option(help: "Seed.") var seed: UInt64 = 3
    @Option(help: "(internal) run one loader on this cache and print its JSON result.") var worker: String?
    @Option(help: "(internal) k of the worker.") var workerK: Int = 64
    @Flag(help: "Machine-readable output.") var json = false

    func run() throws {
        do {
            if let w = worker {
                let r = try measure(w, k: workerK, threads: 1)
                printJSON(r)
                return
            }
            var dir = cache ?? ""
            var made: String?
            if cache == nil {
                dir = NSTemporaryDirectory() + "logitcache-bench-loader-\(getpid())"
                made = dir
                try synth(dir)
            }
            defer { if let m = made { try? FileManager.default.removeItem(atPath: m) } }
            var rows: [[String: Any]] = []
            for k in [64, 8] {
                let base = try bareReader(dir, k: k)
                for th in [1, 2] {
                    var r = try measure(dir, k: k, threads: th)
                    r["bare_reader_tokens_per_s"] = base
                    r["ratio_vs_bare_reader"] = (r["tokens_per_s"] as? Double ?? 0) / base
                    rows.append(r)
                }
            }
            let multi = try processesRun(dir)
            if json { printJSON(["cache_tokens": tokens, "batch": batch, "context": context, "runs": rows, "processes": multi]); return }
            func m(_ x: Any?) -> String { String(format: "%.2f M", (x as? Double ?? 0) / 1e6) }
            func mb(_ x: Any?) -> String { String(format: "%.1f MiB", Double(x as? Int ?? 0) / 1_048_576) }
            print("student loader, K=64 synthetic cache (\(dir)), B=\(batch) T=\(context), renormalised targets, one epoch")
            func col(_ s: String, _ w: Int) -> String { s.count >= w ? s + " " : s + String(repeating: " ", count: w - s.count) }
            print("  " + col("k", 4) + col("threads", 9) + col("loader tok/s", 14) + col("bare reader tok/s", 19) + col("ratio", 8) + col("anon RSS peak", 15) + "RSS")
            for r in rows {
                print("  " + col("\(r["k"] ?? "")", 4) + col("\(r["threads"] ?? "")", 9) + col(m(r["tokens_per_s"]), 14)
                      + col(m(r["bare_reader_tokens_per_s"]), 19) + col(String(format: "%.2fx", r["ratio_vs_bare_reader"] as? Double ?? 0), 8)
                      + col(mb(r["anon_peak_bytes"]), 15) + mb(r["rss_bytes"]))
            }
            print("  \(processes) processes at once, k=64, 1 thread each: aggregate \(m(multi["aggregate_tokens_per_s"])) tokens/s, anon RSS per process \(mb(multi["anon_peak_bytes_max"])) (max), RSS per process \(mb(multi["rss_bytes_max"])) (max, includes shared page cache)")
            print("  targets: >= 1 M tokens/s per decode thread at k=64; memory bounded by prefetch depth and shuffle buffer")
        } catch let e as ValidationError { throw e } catch let e as ExitCode { throw e } catch { throw fail(error) }
    }

    private func synth(_ dir: String) throws {
        let g = TeacherLikeGenerator(vocabularySize: vocab, k: 64, seed: seed)
        let desc = CacheDescription(vocabularySize: vocab, fingerprints: Fingerprints(teacher: "bench", tokenizer: "bench", corpus: "bench"),
                                    capture: CaptureSettings(policy: "top-k", k: 64))
        let w = try CacheWriter(directory: dir, description: desc, options: WriterOptions())
        let seqLen = 1024
        for i in 0..<((tokens + seqLen - 1) / seqLen) { try w.append(g.sequence(i, length: min(seqLen, tokens - i * seqLen))) }
        _ = try w.finish()
    }

    /// The baseline: sequential whole-block decode into [T, k] arrays, no shuffle or targets.
    private func bareReader(_ dir: String, k: Int) throws -> Double {
        let r = try CacheReader(directory: dir)
        let tb = TargetBatch()
        let t0 = Date()
        var t = 0
        while t < r.tokenCount { let n = min(r.manifest.encoding.blockTokens, r.tokenCount - t); try r.decode(tokens: t..<(t + n), k: k, into: tb); t += n }
        return Double(r.tokenCount) / Date().timeIntervalSince(t0)
    }

    /// One epoch of loss-ready batches; tokens/s and memory.
    private func measure(_ dir: String, k: Int, threads: Int) throws -> [String: Any] {
        let c = LoaderConfiguration(batchSize: batch, contextLength: context, k: k, mode: .renormalized, seed: seed, decodeThreads: threads)
        let loader = try StudentLoader(cache: dir, configuration: c, student: nil)
        let b = Batch()
        var n = 0, anonPeak = 0
        let t0 = Date()
        for _ in 0..<loader.batchesInEpoch {
            try loader.next(into: b)
            n += b.tokenCount
            anonPeak = max(anonPeak, memory().anon)
        }
        let s = Date().timeIntervalSince(t0)
        return ["k": k, "threads": threads, "tokens": n, "seconds": s, "tokens_per_s": Double(n) / s,
                "anon_peak_bytes": anonPeak, "rss_bytes": memory().rss]
    }

    /// `processes` workers of this executable on the same cache at once.
    private func processesRun(_ dir: String) throws -> [String: Any] {
        let exe = Bundle.main.executableURL ?? URL(fileURLWithPath: CommandLine.arguments[0])
        var ps: [(Process, Pipe)] = []
        let t0 = Date()
        for _ in 0..<processes {
            let p = Process(), out = Pipe()
            p.executableURL = exe
            p.arguments = ["bench", "loader", "--worker", dir, "--worker-k", "64", "--batch", "\(batch)", "--context", "\(context)", "--seed", "\(seed)"]
            p.standardOutput = out
            try p.run()
            ps.append((p, out))
        }
        var results: [[String: Any]] = []
        for (p, out) in ps {
            let data = out.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            guard p.terminationStatus == 0, let r = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                throw ValidationError("a bench worker failed (exit \(p.terminationStatus))")
            }
            results.append(r)
        }
        let wall = Date().timeIntervalSince(t0)
        let total = results.reduce(0) { $0 + ($1["tokens"] as? Int ?? 0) }
        return ["processes": processes, "wall_seconds": wall, "aggregate_tokens_per_s": Double(total) / wall,
                "per_process_tokens_per_s": results.map { $0["tokens_per_s"] as? Double ?? 0 },
                "anon_peak_bytes_max": results.map { $0["anon_peak_bytes"] as? Int ?? 0 }.max() ?? 0,
                "rss_bytes_max": results.map { $0["rss_bytes"] as? Int ?? 0 }.max() ?? 0]
    }
}

/// Resident memory of this process from /proc/self/status: total and anonymous (private heap,
/// not the shared, file-backed page cache of the mapped shards). Zeros where unavailable.
func memory() -> (rss: Int, anon: Int) {
    guard let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return (0, 0) }
    func field(_ name: String) -> Int {
        for line in s.split(separator: "\n") where line.hasPrefix(name) {
            return (Int(line.split(separator: " ").dropFirst().first { Int($0) != nil } ?? "0") ?? 0) * 1024
        }
        return 0
    }
    return (field("VmRSS:"), field("RssAnon:"))
}
