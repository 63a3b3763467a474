import ArgumentParser
import CommandLineSupport
import Foundation
import ShardFormat

/// `logitcache-bench read CACHE`: an existing cache's rows (a real teacher's, say) written again
/// in the current format and in format 1.2 (no next-token links, no entry references), side by
/// side: bytes/token, write tokens/s (1 core) and read tokens/s into loss-ready arrays at each
/// k with 1 and 2 threads.
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
        for minor in [ShardFormatVersion.minor, 2] {
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
            rows.append(row)
        }
        if json { printJSON(["cache": cache, "tokens": T, "k": K, "results": rows]); return }
        func mt(_ x: Any?) -> String { (x as? Double).map { String(format: "%6.2f M", $0 / 1e6) } ?? "n/a" }
        print("\(cache): \(T) tokens, K=\(K), its rows written again; write: tokens per CPU-second (reading the source included); "
              + "read into [T,k] arrays, tokens/s (best of \(repeats))")
        print("                 B/token      write" + ks.map { "     k=\($0) 1 thr   2 thr" }.joined())
        for row in rows {
            print((row["cache"] as! String).padding(toLength: 14, withPad: " ", startingAt: 0)
                  + String(format: "%10.1f", row["bytes_per_token"] as! Double) + "  " + mt(row["write_tokens_per_cpu_s"])
                  + ks.map { "   \(mt(row["read_k\($0)_1t"]))  \(mt(row["read_k\($0)_2t"]))" }.joined())
        }
        let a = rows[0], b = rows[1]
        print("ratio          " + String(format: "%8.3fx", (a["bytes_per_token"] as! Double) / (b["bytes_per_token"] as! Double))
              + String(format: "   %7.2fx", (a["write_tokens_per_cpu_s"] as! Double) / (b["write_tokens_per_cpu_s"] as! Double))
              + ks.map { k in String(format: "   %8.2fx  %7.2fx", (a["read_k\(k)_1t"] as! Double) / (b["read_k\(k)_1t"] as! Double),
                                     (a["read_k\(k)_2t"] as! Double) / (b["read_k\(k)_2t"] as! Double)) }.joined())
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

/// Wall-clock tokens/s (best of `repeats`) and tokens per CPU-second of the reading threads,
/// decoding all `tokens` of `reader` at prefix k in 8,192-token ranges split over `threads`:
/// on a busy machine the second thread may get no core, so wall time alone cannot tell
/// contention in the reader from a lack of free cores.
func readThroughput(_ reader: CacheReader, tokens T: Int, k: Int, threads: Int, repeats: Int = 3) throws -> (wall: Double, cpu: Double) {
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
                while t < hi { let n = min(8192, hi - t); try reader.decode(tokens: t..<(t + n), k: k, into: batch); t += n }
            } catch { errors.set(error) }
            cpu.add(threadCPUSeconds() - c0)
        }
        if let e = errors.error { throw e }
        best = min(best, Date().timeIntervalSince(t0))
        bestCPU = min(bestCPU, cpu.seconds)
    }
    return (Double(T) / best, Double(T) / bestCPU)
}
