import ArgumentParser
import CommandLineSupport
import Foundation
import Truncation
import ShardFormat
import SyntheticData

/// `logitcache-bench format`: our cache (default and lossless) against raw int32+float16 and
/// Parquet+zstd on the same generated teacher-like rows (see ``TeacherLikeGenerator``).
struct BenchFormatCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "format",
        abstract: "Bytes/token and read/write speed of the cache format vs raw and Parquet+zstd.")
    @Option(help: "Tokens per vocabulary.") var tokens: Int = 262_144
    @Option(help: "K entries per token.") var k: Int = 64
    @Option(help: "Vocabulary sizes, comma separated.") var vocabs: String = "32000,128000"
    @Option(help: "Seed.") var seed: UInt64 = 7
    @Option(help: "Python with pyarrow for the Parquet baseline (else n/a).") var python: String?
    @Option(help: "Parquet baseline script (default: tools/parquet_bench.py under the working directory).") var script: String?
    @Option(help: "Directory for the raw row dump read by tools/parquet_bench.py (default: a temp dir).") var dump: String?
    @Flag(help: "Machine-readable output.") var json = false

    func run() throws {
        var results: [[String: Any]] = []
        for vs in vocabs.split(separator: ",") {
            guard let V = Int(vs), V >= 2 else { throw ValidationError("bad vocabulary \(vs)") }
            do { results.append(try bench(V)) } catch { throw fail(error) }
        }
        if json { printJSON(["k": k, "tokens": tokens, "seed": seed, "results": results]); return }
        func f(_ x: Any?) -> String { (x as? Double).map { String(format: "%.1f", $0) } ?? "n/a" }
        func r(_ x: Any?) -> String { (x as? Double).map { String(format: "%.2fx", $0) } ?? "n/a" }
        func mt(_ x: Any?) -> String { (x as? Double).map { String(format: "%.2f M", $0 / 1e6) } ?? "n/a" }
        for res in results {
            print("vocabulary \(res["vocabulary"]!), K=\(k), \(tokens) tokens (teacher-like generator, seed \(seed))")
            print("  bytes/token   ours default (zstd-3, \(WriterOptions().logProbs)) \(f(res["ours_default_bytes_per_token"]))   ours lossless \(f(res["ours_lossless_bytes_per_token"]))   format 1.2 default (no links) \(f(res["ours_format_1_2_bytes_per_token"]))   format 1.1 default (step 1/64) \(f(res["ours_format_1_1_bytes_per_token"]))   format 1.0 default (byte planes, 1/64) \(f(res["ours_format_1_0_bytes_per_token"]))   raw int32+f16 \(f(res["raw_bytes_per_token"]))   parquet+zstd \(f(res["parquet_bytes_per_token"]))")
            print("  ratio vs parquet+zstd: default \(r(res["default_vs_parquet"]))   lossless \(r(res["lossless_vs_parquet"]))   format 1.2 \(r(res["format_1_2_vs_parquet"]))   format 1.1 \(r(res["format_1_1_vs_parquet"]))   format 1.0 \(r(res["format_1_0_vs_parquet"]))   (target <= 0.50x)")
            if let parts = res["default_breakdown"] as? [String: Double] {
                print("  where the default's bytes/token go: " + Self.breakdownOrder.map { "\($0) \(f(parts[$0] ?? 0))" }.joined(separator: "   "))
            }
            print("  write tokens/s (1 core)    ours default \(mt(res["write_tokens_per_s"]))   parquet \(mt(res["parquet_write_tokens_per_s"]))   (target >= 0.2 M)   per CPU-second: ours \(mt(res["write_tokens_per_cpu_s"]))")
            print("  read tokens/s into [T,k] arrays: k=64 1 thread \(mt(res["read_k64_1t"]))  2 threads \(mt(res["read_k64_2t"]))   k=8 1 thread \(mt(res["read_k8_1t"]))  2 threads \(mt(res["read_k8_2t"]))   parquet k=64 \(mt(res["parquet_read_tokens_per_s"]))   (target >= 1 M/core at k=64)")
            print("  read tokens per CPU-second (per core; equal for 1 and 2 threads = no contention): k=64 1 thread \(mt(res["read_k64_1t_cpu"]))  2 threads \(mt(res["read_k64_2t_cpu"]))   k=8 1 thread \(mt(res["read_k8_1t_cpu"]))  2 threads \(mt(res["read_k8_2t_cpu"]))")
        }
    }

    /// Groups of the bytes/token breakdown, in print order: entry ids (band chunks and their
    /// dictionary), entry log-probs, the per-token columns, samples, and framing (header,
    /// footer, trailer; no manifest).
    static let breakdownOrder = ["entry_ids", "entry_id_dict", "entry_refs", "entry_logprobs", "input_ids", "next_logprob",
                                 "next_link", "next_logprob_delta", "logsumexp", "entry_count", "samples", "framing"]

    /// Bytes/token of `dir`'s cache by ``breakdownOrder`` group (sums to the shard bytes/token).
    private func breakdown(_ dir: String, tokens T: Int) throws -> [String: Double] {
        let r = try CacheReader(directory: dir)
        var out: [String: Double] = [:]
        var chunks = 0
        for c in r.columnStatistics() {
            let key = c.column.hasPrefix("sample_") ? "samples" : c.column
            out[key, default: 0] += Double(c.storedBytes) / Double(T)
            chunks += c.storedBytes
        }
        out["framing"] = Double(r.manifest.totals.bytes - chunks) / Double(T)
        return out
    }

    private func bench(_ V: Int) throws -> [String: Any] {
        let g = TeacherLikeGenerator(vocabularySize: V, k: k, seed: seed)
        let seqLen = 1024
        let seqs = (0..<((tokens + seqLen - 1) / seqLen)).map { g.sequence($0, length: min(seqLen, tokens - $0 * seqLen)) }
        let T = seqs.reduce(0) { $0 + $1.count }, E = seqs.reduce(0) { $0 + $1.entryIDs.count }
        let tmp = NSTemporaryDirectory() + "logitcache-bench-\(getpid())-\(V)"
        defer { try? FileManager.default.removeItem(atPath: tmp) }
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
        let desc = CacheDescription(vocabularySize: V, fingerprints: Fingerprints(teacher: "bench", tokenizer: "bench", corpus: "bench"),
                                    capture: CaptureSettings(policy: .topK(k: k)))
        func write(_ dir: String, _ o: WriterOptions) throws -> (bytes: Int, seconds: Double, cpu: Double) {
            let t0 = Date(), c0 = threadCPUSeconds()
            let w = try CacheWriter(directory: dir, description: desc, options: o)
            for s in seqs { try w.append(s) }
            let m = try w.finish()
            return (m.totals.bytes, Date().timeIntervalSince(t0), threadCPUSeconds() - c0)
        }
        let def = try write(tmp + "/default", WriterOptions())
        let lossless = try write(tmp + "/lossless", WriterOptions(logProbs: .float32))
        // The defaults of format 1.2 (no next-token links), 1.1 (step 1/64) and 1.0 (also byte
        // planes): what 1.3's links, 1.2's step and 1.1's bucket filters gain.
        let v12 = try write(tmp + "/format-1.2", WriterOptions(formatMinorVersion: 2))
        let v11 = try write(tmp + "/format-1.1", WriterOptions(formatMinorVersion: 1))
        let planes = try write(tmp + "/format-1.0", WriterOptions(formatMinorVersion: 0))
        let reader = try CacheReader(directory: tmp + "/default")
        func read(k kk: Int, threads: Int) throws -> (wall: Double, cpu: Double) {
            try readThroughput(reader, tokens: T, k: kk, threads: threads)
        }
        let r64 = (try read(k: k, threads: 1), try read(k: k, threads: 2))
        let r8 = (try read(k: min(8, k), threads: 1), try read(k: min(8, k), threads: 2))
        var res: [String: Any] = [
            "vocabulary": V, "tokens": T, "entries": E,
            "ours_default_bytes_per_token": Double(def.bytes) / Double(T),
            "ours_lossless_bytes_per_token": Double(lossless.bytes) / Double(T),
            "ours_format_1_0_bytes_per_token": Double(planes.bytes) / Double(T),
            "ours_format_1_1_bytes_per_token": Double(v11.bytes) / Double(T),
            "ours_format_1_2_bytes_per_token": Double(v12.bytes) / Double(T),
            "raw_bytes_per_token": Double(12 * T + 6 * E) / Double(T),
            "write_tokens_per_s": Double(T) / def.seconds, "write_tokens_per_cpu_s": Double(T) / def.cpu,
            "default_breakdown": try breakdown(tmp + "/default", tokens: T),
            "read_k64_1t": r64.0.wall, "read_k64_2t": r64.1.wall, "read_k8_1t": r8.0.wall, "read_k8_2t": r8.1.wall,
            "read_k64_1t_cpu": r64.0.cpu, "read_k64_2t_cpu": r64.1.cpu, "read_k8_1t_cpu": r8.0.cpu, "read_k8_2t_cpu": r8.1.cpu,
        ]
        if let py = python {
            let dir = dump.map { $0 + "/vocab-\(V)" } ?? tmp + "/dump"
            try dumpRows(seqs, to: dir)
            let script = try baselineScript(script, default: "parquet_bench.py")
            let p = Process()
            p.executableURL = URL(fileURLWithPath: py)
            p.arguments = [script, dir]
            let pipe = Pipe(); p.standardOutput = pipe
            try p.run(); p.waitUntilExit()
            let data = pipe.fileHandleForReading.readDataToEndOfFile()
            if p.terminationStatus == 0, let j = try JSONSerialization.jsonObject(with: data) as? [String: Any],
               let bytes = j["bytes"] as? Double ?? (j["bytes"] as? Int).map(Double.init) {
                let pq = bytes / Double(T)
                res["parquet_bytes_per_token"] = pq
                res["default_vs_parquet"] = Double(def.bytes) / Double(T) / pq
                res["lossless_vs_parquet"] = Double(lossless.bytes) / Double(T) / pq
                res["format_1_0_vs_parquet"] = Double(planes.bytes) / Double(T) / pq
                res["format_1_1_vs_parquet"] = Double(v11.bytes) / Double(T) / pq
                res["format_1_2_vs_parquet"] = Double(v12.bytes) / Double(T) / pq
                if let w = j["write_seconds"] as? Double { res["parquet_write_tokens_per_s"] = Double(T) / w }
                if let r = j["read_seconds"] as? Double { res["parquet_read_tokens_per_s"] = Double(T) / r }
            } else {
                FileHandle.standardError.write(Data("bench format: \(script) failed (exit \(p.terminationStatus))\n".utf8))
            }
        } else if let d = dump {
            try dumpRows(seqs, to: d + "/vocab-\(V)")
        }
        return res
    }
}

/// CPU time of the calling thread in seconds (CLOCK_THREAD_CPUTIME_ID).
func threadCPUSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

/// First error thrown by any of several threads.
final class ErrorBox: @unchecked Sendable {
    // Sendable because `error` is only touched under `lock`.
    private let lock = NSLock()
    private var stored: Error?
    var error: Error? { lock.lock(); defer { lock.unlock() }; return stored }
    func set(_ e: Error) { lock.lock(); if stored == nil { stored = e }; lock.unlock() }
}

/// Seconds summed over several threads.
final class SecondsTotal: @unchecked Sendable {
    // Sendable because `total` is only touched under `lock`.
    private let lock = NSLock()
    private var total = 0.0
    var seconds: Double { lock.lock(); defer { lock.unlock() }; return total }
    func add(_ s: Double) { lock.lock(); total += s; lock.unlock() }
}

/// Writes generated rows as plain little-endian arrays (read by tools/parquet_bench.py):
/// `input_ids.i32` [T], `next_logprob.f32` [T], `logsumexp.f32` [T], `entry_offsets.i64` [T+1],
/// `entry_ids.i32` [E], `entry_logprobs.f32` [E].
func dumpRows(_ seqs: [TeacherLikeGenerator.Sequence], to dir: String) throws {
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    var inp: [Int32] = [], nxt: [Float] = [], lse: [Float] = [], off: [Int64] = [0], ids: [Int32] = [], lps: [Float] = []
    for s in seqs {
        inp += s.inputIDs; nxt += s.nextTokenLogProbs; lse += s.logSumExps
        let base = off.last!
        off += s.entryOffsets.dropFirst().map { base + Int64($0) }
        ids += s.entryIDs; lps += s.entryLogProbs
    }
    func w<T>(_ a: [T], _ name: String) throws { try a.withUnsafeBytes { try Data($0).write(to: URL(fileURLWithPath: dir + "/" + name)) } }
    try w(inp, "input_ids.i32"); try w(nxt, "next_logprob.f32"); try w(lse, "logsumexp.f32")
    try w(off, "entry_offsets.i64"); try w(ids, "entry_ids.i32"); try w(lps, "entry_logprobs.f32")
}
