import ArgumentParser
import CommandLineSupport
import CZstd
import Foundation
import ShardFormat
import StudentLoader

/// `logitcache-bench read CACHE`: an existing cache's rows (a real teacher's, say) written again
/// in the current format, in format 1.3 (no sample references) and in format 1.2 (no next-token
/// links, no entry references), side by side: bytes/token, write tokens/s (1 core) and read
/// tokens/s into loss-ready arrays at each k with 1 and 2 threads.
///
/// A cache with samples also gets the sampled columns' bytes/token in each format beside a
/// naive encoding of the same samples (per position the distinct ids by descending draw count,
/// then id, their draw counts as u8 and the distinct count as u8; ids in byte planes; each
/// stream zstd level 3 over the whole cache), and the student loader's sampled-mode tokens per
/// CPU-second (one decode thread, consumer included).
struct BenchReadCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "read",
        abstract: "Bytes/token, write and read speed of a cache's rows in the current format vs format 1.2 (no links or references).")
    @Argument(help: "Cache directory.") var cache: String
    @Option(help: "Prefixes k to read, comma separated (default: K and 8).") var kList: String?
    @Option(help: "Read passes per measurement; the best counts.") var repeats: Int = 3
    @Flag(help: "Machine-readable output.") var json = false

    func run() throws {
        do { try bench() } catch { throw fail(error) }
    }

    private func bench() throws {
        let reader = try CacheReader(directory: cache)
        let K = reader.maxEntries, T = reader.tokenCount
        let ks = try kList.map { try $0.split(separator: ",").map { s -> Int in
            guard let k = Int(s), k >= 0 else { throw ValidationError("bad k \(s)") }; return min(k, K) } } ?? Array(Set([K, min(8, K)])).sorted(by: >)
        let tmp = NSTemporaryDirectory() + "logitcache-bench-read-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: tmp) }
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
        var rows: [[String: Any]] = []
        let samples = reader.maxSamples > 0
        for minor in [ShardFormatVersion.minor, 3, 2] {
            let c0 = threadCPUSeconds()
            let r = try rewrite(reader, to: tmp + "/1.\(minor)", minor: minor)
            // Reading the source is in the time too, the same for both.
            let write = Double(T) / (threadCPUSeconds() - c0)
            var row: [String: Any] = ["cache": "format 1.\(minor)", "bytes_per_token": Double(r.manifest.totals.bytes) / Double(max(T, 1)),
                                      "write_tokens_per_cpu_s": write]
            for k in ks {
                for threads in [1, 2] {
                    let (wall, cpu) = try readThroughput(r, tokens: T, k: k, threads: threads, repeats: repeats)
                    row["read_k\(k)_\(threads)t"] = wall; row["read_k\(k)_\(threads)t_cpu"] = cpu
                }
            }
            if samples {
                let sampled = r.columnStatistics().filter { $0.column.hasPrefix("sample_") }.reduce(0) { $0 + $1.storedBytes }
                row["sampled_bytes_per_token"] = Double(sampled) / Double(max(T, 1))
                row["sampled_loader_tokens_per_cpu_s"] = try sampledLoaderThroughput(tmp + "/1.\(minor)", samples: reader.maxSamples)
                row["sampled_read_tokens_per_cpu_s"] = try readThroughput(r, tokens: T, k: 0, samples: true, threads: 1, repeats: repeats).cpu
            }
            rows.append(row)
        }
        let naive = samples ? Double(try naiveSampleBytes(reader)) / Double(max(T, 1)) : nil
        if json {
            var out: [String: Any] = ["cache": cache, "tokens": T, "k": K, "results": rows]
            if let naive { out["naive_sampled_bytes_per_token"] = naive }
            printJSON(out)
            return
        }
        func mt(_ x: Any?) -> String { (x as? Double).map { String(format: "%6.2f M", $0 / 1e6) } ?? "n/a" }
        print("\(cache): \(T) tokens, K=\(K), its rows written again; write: tokens per CPU-second (reading the source included); "
              + "read into [T,k] arrays, tokens/s (best of \(repeats))")
        print("                 B/token      write" + ks.map { "     k=\($0) 1 thr   2 thr" }.joined())
        for row in rows {
            print((row["cache"] as! String).padding(toLength: 14, withPad: " ", startingAt: 0)
                  + String(format: "%10.1f", row["bytes_per_token"] as! Double) + "  " + mt(row["write_tokens_per_cpu_s"])
                  + ks.map { "   \(mt(row["read_k\($0)_1t"]))  \(mt(row["read_k\($0)_2t"]))" }.joined())
        }
        let a = rows[0], b = rows[rows.count - 1]
        print("ratio to 1.2   " + String(format: "%8.3fx", (a["bytes_per_token"] as! Double) / (b["bytes_per_token"] as! Double))
              + String(format: "   %7.2fx", (a["write_tokens_per_cpu_s"] as! Double) / (b["write_tokens_per_cpu_s"] as! Double))
              + ks.map { k in String(format: "   %8.2fx  %7.2fx", (a["read_k\(k)_1t"] as! Double) / (b["read_k\(k)_1t"] as! Double),
                                     (a["read_k\(k)_2t"] as! Double) / (b["read_k\(k)_2t"] as! Double)) }.joined())
        guard let naive else { return }
        print("\nsampled columns (sample_count, sample_ids, sample_draws, sample_refs) and the loader's sampled reads "
              + "(k = \(reader.maxSamples) slots, 1 decode thread, tokens per CPU-second), and the bare reader's (samples only, 8,192-token ranges):")
        print("                 B/token   vs naive    loader    reader")
        for row in rows {
            let bytes = row["sampled_bytes_per_token"] as! Double
            print((row["cache"] as! String).padding(toLength: 14, withPad: " ", startingAt: 0)
                  + String(format: "%10.2f   %7.3fx", bytes, bytes / naive) + "  " + mt(row["sampled_loader_tokens_per_cpu_s"])
                  + "  " + mt(row["sampled_read_tokens_per_cpu_s"]))
        }
        print("naive         " + String(format: "%10.2f   %7.3fx", naive, 1.0))
    }

    /// Tokens per CPU-second of one sampled-mode student loader epoch (B = 8, T = 1024, one
    /// decode thread; the process's CPU, consumer included) over the cache in `dir`.
    private func sampledLoaderThroughput(_ dir: String, samples: Int) throws -> Double {
        let c = LoaderConfiguration(batchSize: 8, contextLength: 1024, k: samples, mode: .sampled, decodeThreads: 1)
        var best = 0.0
        for _ in 0..<max(1, repeats) {
            let p0 = processCPUSeconds()
            let loader = try StudentLoader(cache: dir, configuration: c, student: nil)
            let b = Batch()
            var n = 0
            for _ in 0..<loader.batchesInEpoch {
                try loader.next(into: b)
                n += b.tokenCount
            }
            loader.close()
            best = max(best, Double(n) / max(processCPUSeconds() - p0, 1e-9))
        }
        return best
    }

    /// Bytes of the naive encoding of the cache's samples (see the type's comment).
    private func naiveSampleBytes(_ r: CacheReader) throws -> Int {
        let T = r.tokenCount, planes = r.vocabularySize <= 1 << 16 ? 2 : 3
        var idPlanes = [[UInt8]](repeating: [], count: planes), draws: [UInt8] = [], counts: [UInt8] = []
        let batch = TargetBatch()
        var t = 0
        while t < T {
            let n = min(8192, T - t)
            try r.decode(tokens: t..<(t + n), k: 0, samples: true, into: batch)
            for p in 0..<n {
                let q = batch.sampleOffsets[p]..<batch.sampleOffsets[p + 1]
                let rows = q.map { (id: UInt32(bitPattern: batch.sampleIDs[$0]), draws: batch.sampleDraws[$0]) }
                    .sorted { ($0.draws, $1.id) > ($1.draws, $0.id) }
                counts.append(UInt8(min(rows.count, 255)))
                for x in rows {
                    draws.append(UInt8(min(x.draws, 255)))
                    for j in 0..<planes { idPlanes[j].append(UInt8(truncatingIfNeeded: x.id >> (8 * UInt32(j)))) }
                }
            }
            t += n
        }
        return try ([counts, draws] + idPlanes).reduce(0) { $0 + (try zstdSize($1, level: 3)) }
    }
    /// The cache's rows written again with format minor version `minor` (same codec, step and
    /// bands), into `dir`.
    private func rewrite(_ r: CacheReader, to dir: String, minor: Int) throws -> CacheReader {
        let m = r.manifest, e = m.encoding
        let codec: Codec = e.codec == "zstd" ? .zstd(level: Int32(e.level)) : e.codec == "lz4" ? .lz4 : .none
        let options = WriterOptions(codec: codec, logProbs: r.logProbEncoding, blockTokens: e.blockTokens, entryBands: e.entryBands,
                                    formatMinorVersion: minor)
        let w = try CacheWriter(directory: dir, description: CacheDescription(vocabularySize: m.vocabularySize, fingerprints: m.fingerprints,
                                                                              capture: m.capture), options: options)
        let batch = TargetBatch(), K = r.maxEntries, samples = m.capture.samples > 0
        for i in 0..<r.sequenceCount {
            let s = try r.sequence(i)
            try w.beginSequence(documentKey: s.documentKey, documentOffset: s.documentOffset)
            try r.decode(tokens: s.firstToken..<(s.firstToken + s.length), k: K, samples: samples, into: batch)
            for t in 0..<s.length {
                let c = Int(batch.entryCounts[t]), q = samples ? batch.sampleOffsets[t]..<batch.sampleOffsets[t + 1] : 0..<0
                try w.appendToken(inputID: batch.inputIDs[t], nextTokenLogProb: batch.nextTokenLogProbs[t], logSumExp: batch.logSumExps[t],
                                  entryIDs: batch.entryIDs[(t * K)..<(t * K + c)], entryLogProbs: batch.entryLogProbs[(t * K)..<(t * K + c)],
                                  sampleIDs: batch.sampleIDs[q], sampleDraws: batch.sampleDraws[q])
            }
            try w.endSequence()
        }
        try w.finish()
        return try CacheReader(directory: dir)
    }
}

/// The size of `bytes` compressed by zstd at `level`.
func zstdSize(_ bytes: [UInt8], level: Int32) throws -> Int {
    if bytes.isEmpty { return 0 }
    var out = [UInt8](repeating: 0, count: ZSTD_compressBound(bytes.count))
    let n = out.withUnsafeMutableBytes { o in bytes.withUnsafeBytes { i in ZSTD_compress(o.baseAddress, o.count, i.baseAddress, i.count, level) } }
    guard ZSTD_isError(n) == 0 else { throw ValidationError("zstd failed: \(String(cString: ZSTD_getErrorName(n)))") }
    return n
}

/// Wall-clock tokens/s (best of `repeats`) and tokens per CPU-second of the reading threads,
/// decoding all `tokens` of `reader` at prefix k in 8,192-token ranges split over `threads`:
/// on a busy machine the second thread may get no core, so wall time alone cannot tell
/// contention in the reader from a lack of free cores.
func readThroughput(_ reader: CacheReader, tokens T: Int, k: Int, samples: Bool = false, threads: Int, repeats: Int = 3) throws -> (wall: Double, cpu: Double) {
    var best = Double.infinity, bestCPU = Double.infinity
    for _ in 0..<max(1, repeats) {
        let t0 = Date()
        let errors = ErrorBox(), cpu = SecondsTotal()
        DispatchQueue.concurrentPerform(iterations: threads) { th in
            let c0 = threadCPUSeconds()
            let batch = TargetBatch()
            let lo = T * th / threads, hi = T * (th + 1) / threads
            var t = lo
            do {
                while t < hi { let n = min(8192, hi - t); try reader.decode(tokens: t..<(t + n), k: k, samples: samples, into: batch); t += n }
            } catch { errors.set(error) }
            cpu.add(threadCPUSeconds() - c0)
        }
        if let e = errors.error { throw e }
        best = min(best, Date().timeIntervalSince(t0))
        bestCPU = min(bestCPU, cpu.seconds)
    }
    return (Double(T) / best, Double(T) / bestCPU)
}
