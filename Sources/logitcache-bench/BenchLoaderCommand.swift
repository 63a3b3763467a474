import ArgumentParser
import CommandLineSupport
import Foundation
import Truncation
import ShardFormat
import SyntheticData
import StudentLoader

/// `logitcache-bench loader`: loss-ready tokens/s of the student loader on a synthetic K=64
/// cache against the bare reader (sequential `CacheReader.decode` into [T, k] arrays), with
/// 1 and 2 decode threads, one loader's memory, and 4 loader processes reading one cache.
///
/// Each setting runs `--repeat` epochs and reports the median. Beside wall-clock tokens/s it
/// reports tokens per CPU-second of the decode threads (process CPU time minus the consumer
/// thread's) and the consumer's CPU-seconds per million tokens: on a shared machine a decode
/// thread may get no core, and wall time alone cannot tell the loader's cost from a lack of
/// free cores. The load average is printed beside the numbers.
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
    @Option(help: "Epochs per setting; the median is reported.") var `repeat`: Int = 3
    @Flag(help: "Machine-readable output.") var json = false

    func run() throws {
        do {
            guard `repeat` >= 1 else { throw ValidationError("--repeat must be >= 1") }
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
            let load0 = loadAverage()
            for k in [64, 8] {
                let base = median(try (0..<`repeat`).map { _ in try bareReader(dir, k: k) })
                for th in [1, 2] {
                    let runs = try (0..<`repeat`).map { _ in try measure(dir, k: k, threads: th) }
                    var r = runs.sorted { ($0["tokens_per_s"] as? Double ?? 0) < ($1["tokens_per_s"] as? Double ?? 0) }[runs.count / 2]
                    r["tokens_per_s_runs"] = runs.map { $0["tokens_per_s"] as? Double ?? 0 }
                    r["tokens_per_decode_cpu_s"] = median(runs.map { $0["tokens_per_decode_cpu_s"] as? Double ?? 0 })
                    r["consumer_cpu_s_per_m_tokens"] = median(runs.map { $0["consumer_cpu_s_per_m_tokens"] as? Double ?? 0 })
                    r["bare_reader_tokens_per_s"] = base
                    r["ratio_vs_bare_reader"] = (r["tokens_per_s"] as? Double ?? 0) / base
                    rows.append(r)
                }
            }
            let load1 = loadAverage()
            let multi = try processesRun(dir)
            if json {
                printJSON(["cache_tokens": tokens, "batch": batch, "context": context, "repeat": `repeat`, "runs": rows, "processes": multi,
                           "load_average_before": load0, "load_average_after": load1])
                return
            }
            func m(_ x: Any?) -> String { String(format: "%.2f M", (x as? Double ?? 0) / 1e6) }
            func mb(_ x: Any?) -> String { String(format: "%.1f MiB", Double(x as? Int ?? 0) / 1_048_576) }
            print("student loader, K=64 synthetic cache (\(dir)), B=\(batch) T=\(context), renormalised targets, one epoch, median of \(`repeat`)")
            print("  load average (1 min) \(String(format: "%.2f", load0)) before, \(String(format: "%.2f", load1)) after, on \(ProcessInfo.processInfo.activeProcessorCount) cores")
            func col(_ s: String, _ w: Int) -> String { s.count >= w ? s + " " : s + String(repeating: " ", count: w - s.count) }
            print("  " + col("k", 4) + col("threads", 9) + col("loader tok/s", 14) + col("per thread", 12) + col("tok/decode-CPU-s", 18)
                  + col("consumer CPU-s/M", 18) + col("bare reader tok/s", 19) + col("ratio", 8) + col("anon RSS peak", 15) + "RSS")
            for r in rows {
                let th = r["threads"] as? Int ?? 1
                print("  " + col("\(r["k"] ?? "")", 4) + col("\(th)", 9) + col(m(r["tokens_per_s"]), 14)
                      + col(m((r["tokens_per_s"] as? Double ?? 0) / Double(th)), 12) + col(m(r["tokens_per_decode_cpu_s"]), 18)
                      + col(String(format: "%.3f", r["consumer_cpu_s_per_m_tokens"] as? Double ?? 0), 18)
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
                                    capture: CaptureSettings(policy: .topK(k: 64)))
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

    /// One epoch of loss-ready batches; tokens/s, CPU time of decode threads and consumer, memory.
    private func measure(_ dir: String, k: Int, threads: Int) throws -> [String: Any] {
        let c = LoaderConfiguration(batchSize: batch, contextLength: context, k: k, mode: .renormalized, seed: seed, decodeThreads: threads)
        // CPU clocks start before the loader, whose workers begin decoding at once.
        let p0 = processCPUSeconds(), c0 = threadCPUSeconds()
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
        let consumer = threadCPUSeconds() - c0, decoders = processCPUSeconds() - p0 - consumer
        return ["k": k, "threads": threads, "tokens": n, "seconds": s, "tokens_per_s": Double(n) / s,
                "decode_cpu_seconds": decoders, "consumer_cpu_seconds": consumer,
                "tokens_per_decode_cpu_s": Double(n) / max(decoders, 1e-9), "consumer_cpu_s_per_m_tokens": consumer / Double(n) * 1e6,
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
            p.arguments = ["loader", "--worker", dir, "--worker-k", "64", "--batch", "\(batch)", "--context", "\(context)", "--seed", "\(seed)"]
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

/// CPU time of the whole process in seconds (all threads, CLOCK_PROCESS_CPUTIME_ID).
func processCPUSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

/// The 1-minute load average from /proc/loadavg (0 where unavailable).
func loadAverage() -> Double {
    guard let s = try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8) else { return 0 }
    return Double(s.split(separator: " ").first ?? "") ?? 0
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
