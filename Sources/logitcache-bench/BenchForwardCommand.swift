import ArgumentParser
import CommandLineSupport
import Checkpoints
import Foundation
import Kernels
import Models

/// `logitcache-bench forward`: teacher forward speed against PyTorch CPU eager on the same
/// random-weight models, at equal thread counts.
struct BenchForwardCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "forward",
        abstract: "Forward-pass tokens/s and GFLOP/s beside PyTorch CPU eager (same model, threads, float32).",
        discussion: """
        Writes two random-weight Hugging Face checkpoints to a temporary directory — a tiny
        Llama and one with SmolLM-135M's shapes (hidden 576, 30 layers, 9 heads, 3 KV heads,
        intermediate 1536, vocabulary 49152, tied) — and times one window per forward: the
        blocks, the LM head as a full-logits GEMM, and the fused top-K + logsumexp head. The
        baseline runs tools/bench_forward_torch.py with --python on the same files.
        """)

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    @Option(help: "Python interpreter with torch and transformers for the baseline.")
    var python: String = "python3"

    @Option(help: "Baseline script (run from the repository root by default).")
    var script: String = "tools/bench_forward_torch.py"

    @Flag(help: "Skip the PyTorch baseline.")
    var noBaseline = false

    @Option(help: "Comma-separated thread counts.")
    var threads: String = "1,2"

    @Option(help: "Timed forwards per measurement (median reported).")
    var repeats: Int = 3

    @Option(help: "Window length of the SmolLM-shaped model.")
    var context: Int = 512

    @Option(name: .customLong("top-k"), help: "K of the fused head.")
    var topK: Int = 64

    func validate() throws {
        if repeats < 1 { throw ValidationError("--repeats must be at least 1") }
        if context < 1 || context > 2048 { throw ValidationError("--context must be in 1...2048") }
        if topK < 1 || topK > 1024 { throw ValidationError("--top-k must be in 1...1024") }
        if threadCounts.isEmpty { throw ValidationError("--threads must list positive integers, e.g. 1,2") }
    }

    var threadCounts: [Int] { threads.split(separator: ",").compactMap { Int($0) }.filter { $0 > 0 } }

    struct Row: Codable {
        var model: String
        var threads: Int
        var tokens: Int
        /// Blocks only (embedding through final norm).
        var blocksSeconds: Double
        /// LM head as a full (T, V) logits GEMM.
        var headSeconds: Double
        /// Fused LM head with top-K + logsumexp.
        var fusedHeadSeconds: Double
        var forwardTokensPerSecond: Double
        var forwardGFLOPs: Double
        var fusedForwardTokensPerSecond: Double
        /// (fused head − GEMM head) / full forward, in percent: what top-K + logsumexp add.
        var topKOverheadPercent: Double
        var torchSeconds: Double?
        var torchTokensPerSecond: Double?
        /// Our full-logits forward speed over PyTorch's.
        var speedupVsTorch: Double?
        /// PyTorch's GFLOP/s on the same forward.
        var torchGFLOPs: Double?
        /// The machine's FMA ceiling at this thread count (``GemmBench/peakFMA(threads:seconds:)``).
        var peakGFLOPs: Double
    }

    func run() throws {
        let root = NSTemporaryDirectory() + "/logitcache-bench-forward-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: root) }
        let models: [(String, ModelConfig, Int)] = [
            ("tiny-llama", try .llama(vocabSize: 4096, hiddenSize: 128, layerCount: 4, headCount: 4, kvHeadCount: 2,
                                      intermediateSize: 352, maxPositions: 2048, tieWordEmbeddings: false), 128),
            ("smollm-135m-shape", try .llama(vocabSize: 49152, hiddenSize: 576, layerCount: 30, headCount: 9, kvHeadCount: 3,
                                             intermediateSize: 1536, maxPositions: 2048, tieWordEmbeddings: true), context),
        ]
        var rows: [Row] = []
        var baselineNote: String?
        for (name, config, T) in models {
            let dir = root + "/" + name
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            try RandomCheckpoint.write(config: config, to: dir, seed: 1)
            let model = try Transformer(directory: dir)
            var rng = SystemRandomNumberGenerator()
            let tokens = (0..<T).map { _ in Int32.random(in: 0..<Int32(config.vocabSize), using: &rng) }
            for n in threadCounts {
                var row = try measure(model, name: name, tokens: tokens, threads: n)
                if !noBaseline && baselineNote == nil {
                    switch torchSeconds(dir: dir, length: T, threads: n) {
                    case let .success(s):
                        row.torchSeconds = s
                        row.torchTokensPerSecond = Double(T) / s
                        row.speedupVsTorch = s / (row.blocksSeconds + row.headSeconds)
                        row.torchGFLOPs = model.forwardFLOPs(batch: 1, length: T) / s / 1e9
                    case let .failure(note):
                        baselineNote = note.description
                    }
                }
                rows.append(row)
                if !json { FileHandle.standardError.write(Data("bench forward: \(name) × \(n) threads done\n".utf8)) }
            }
        }
        if json {
            struct Report: Codable { var rows: [Row]; var topK: Int; var baseline: String }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            let report = Report(rows: rows, topK: topK, baseline: baselineNote.map { "unavailable: " + $0 }
                                ?? (noBaseline ? "skipped" : "PyTorch CPU eager float32 (sdpa), \(script)"))
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
            return
        }
        print("model               thr  tokens  blocks s  head s  fused-\(topK) s  forward tok/s  GFLOP/s  top-K cost  torch tok/s  speedup")
        for r in rows {
            print([pad(r.model, -18), pad(r.threads, 3), pad(r.tokens, 6), pad(format(r.blocksSeconds, 4), 8),
                   pad(format(r.headSeconds, 4), 6), pad(format(r.fusedHeadSeconds, 4), 11 + String(topK).count - 2),
                   pad(format(r.forwardTokensPerSecond, 1), 13), pad(format(r.forwardGFLOPs, 1), 7),
                   pad(format(r.topKOverheadPercent, 2) + "%", 10),
                   pad(r.torchTokensPerSecond.map { format($0, 1) } ?? "-", 11),
                   pad(r.speedupVsTorch.map { format($0, 2) + "x" } ?? "-", 7)].joined(separator: "  "))
        }
        print("forward = blocks + full-logits head; GFLOP/s counts 2 per multiply-add incl. attention and head;")
        print("top-K cost = (fused head - GEMM head) / forward; speedup = torch seconds / our forward seconds.")
        print("")
        print("model               thr  FMA peak GFLOP/s  ours % of peak  torch % of peak  1.5x torch needs")
        for r in rows {
            let need = r.torchGFLOPs.map { 1.5 * $0 }
            print([pad(r.model, -18), pad(r.threads, 3), pad(format(r.peakGFLOPs, 1), 16),
                   pad(format(100 * r.forwardGFLOPs / r.peakGFLOPs, 1) + "%", 14),
                   pad(r.torchGFLOPs.map { format(100 * $0 / r.peakGFLOPs, 1) + "%" } ?? "-", 15),
                   pad(need.map { format($0, 1) + " GFLOP/s = " + format(100 * $0 / r.peakGFLOPs, 0) + "% of peak" } ?? "-", 16)
                  ].joined(separator: "  "))
        }
        print("FMA peak: independent SIMD16 multiply-add chains on registers, per thread over its own CPU time, summed;")
        print("our and torch GFLOP/s are wall-clock, so the % columns mean something only on an otherwise idle machine.")
        if let baselineNote { print("PyTorch baseline unavailable: \(baselineNote)") }
    }

    /// Median-of-`repeats` timings of the blocks, the GEMM head and the fused head.
    func measure(_ model: Transformer, name: String, tokens: [Int32], threads: Int) throws -> Row {
        let pool = ThreadPool(threadCount: threads)
        let T = tokens.count, V = model.config.vocabSize, k = min(topK, V)
        let a = model.makeActivations(batch: 1, length: T)
        var logits = [Float](repeating: 0, count: T * V)
        var ids = [Int32](repeating: 0, count: T * k), top = [Float](repeating: 0, count: T * k)
        var lse = [Float](repeating: 0, count: T)
        var blocks: [Double] = [], head: [Double] = [], fused: [Double] = []
        for i in 0...repeats {
            let t0 = now()
            try tokens.withUnsafeBufferPointer { (buffer) throws(ModelError) in
                // Safe because the bench never passes an empty window.
                try model.forwardHidden(tokens: buffer.baseAddress!, activations: a, pool: pool)
            }
            let t1 = now()
            try logits.withUnsafeMutableBufferPointer { (out) throws(ModelError) in
                try model.headLogits(activations: a, out: out, pool: pool)
            }
            let t2 = now()
            try model.topK(activations: a, k: k, ids: &ids, logits: &top, logsumexp: &lse, pool: pool)
            let t3 = now()
            if i > 0 {  // the first round warms caches and page-faults the mapping in
                blocks.append(t1 - t0)
                head.append(t2 - t1)
                fused.append(t3 - t2)
            }
        }
        let b = median(blocks), h = median(head), f = median(fused)
        let forward = b + h
        return Row(model: name, threads: threads, tokens: T, blocksSeconds: b, headSeconds: h, fusedHeadSeconds: f,
                   forwardTokensPerSecond: Double(T) / forward,
                   forwardGFLOPs: model.forwardFLOPs(batch: 1, length: T) / forward / 1e9,
                   fusedForwardTokensPerSecond: Double(T) / (b + f),
                   topKOverheadPercent: 100 * (f - h) / forward,
                   peakGFLOPs: GemmBench.peakFMA(threads: threads))
    }

    struct BaselineError: Error, CustomStringConvertible { var description: String }

    /// Runs the PyTorch script and returns its median seconds per forward.
    func torchSeconds(dir: String, length: Int, threads: Int) -> Result<Double, BaselineError> {
        guard FileManager.default.fileExists(atPath: script) else {
            return .failure(BaselineError(description: "\(script) not found (run from the repository root or pass --script)"))
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [python, script, "--model", dir, "--length", "\(length)", "--threads", "\(threads)",
                             "--repeats", "\(repeats)"]
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        do { try process.run() } catch {
            return .failure(BaselineError(description: "cannot start \(python): \(error)"))
        }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        let errors = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0,
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let seconds = object["median_seconds"] as? Double
        else {
            let last = String(decoding: errors, as: UTF8.self).split(separator: "\n").last.map(String.init) ?? "no output"
            return .failure(BaselineError(description: "\(python) \(script) failed (exit \(process.terminationStatus)): \(last)"))
        }
        return .success(seconds)
    }
}

func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

func median(_ xs: [Double]) -> Double {
    let s = xs.sorted()
    return s.isEmpty ? .nan : s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}
