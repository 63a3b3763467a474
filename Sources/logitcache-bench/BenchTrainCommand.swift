import ArgumentParser
import CommandLineSupport
import Capture
import Checkpoints
import Distillation
import Foundation
import Kernels
import Models

/// `logitcache-bench train`: training tokens/s of the Swift trainer beside PyTorch CPU eager
/// training of the same model, batch, loss, optimizer and thread count.
struct BenchTrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Training tokens/s (forward + backward + AdamW, hard-label CE) beside PyTorch CPU eager.",
        discussion: """
        Two Llama-style students with vocabulary 8000 and tied embeddings — 2 layers × 128
        (about 1.4M parameters) and 6 layers × 320 (about 10M) — train on one batch of B
        windows of T random tokens: `Trainer.trainStep` (forward, hard-label cross-entropy,
        backward, global-norm clip 1, AdamW with weight decay 0.1 on matrices, constant
        learning rate). The initial weights and the tokens are written to a temporary directory
        and tools/bench_train_torch.py trains the same model (transformers LlamaForCausalLM,
        sdpa attention, float32, eager) on the same batch with torch.set_num_threads(n).
        Both sides skip --warmup steps and report the median of --steps timed steps (--clock
        wall or cpu); the loss of each step is compared (same weights and data, so they agree
        to float rounding).
        """)

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    @Option(help: "Python interpreter with torch and transformers for the baseline.")
    var python: String = "python3"

    @Option(help: "Baseline script (default: tools/bench_train_torch.py under the working directory).")
    var script = "tools/bench_train_torch.py"

    @Flag(help: "Skip the PyTorch baseline.")
    var noBaseline = false

    @Option(help: "Comma-separated thread counts.")
    var threadsList: String = "1,2"

    @Option(help: "Timed steps per measurement (median reported).")
    var steps: Int = 5

    @Option(help: "Untimed steps before the timed ones.")
    var warmup: Int = 2

    @Option(help: "Windows per step (B).")
    var batch: Int = 8

    @Option(help: "Window length (T).")
    var context: Int = 256

    @Option(help: "Comma-separated students to run: 1m, 10m.")
    var models: String = "1m,10m"

    @Option(help: "Learning rate (constant).")
    var lr: Float = 3e-3

    @Option(help: "wall (elapsed) or cpu (process CPU time / threads: excludes waiting for a busy core, but counts busy-waiting). Both sides use the same clock.")
    var clock: GemmBench.Clock = .wall

    func validate() throws {
        if steps < 1 || warmup < 0 { throw ValidationError("--steps must be >= 1 and --warmup >= 0") }
        if batch < 1 || context < 2 || context > 4096 { throw ValidationError("--batch must be >= 1, --context in 2...4096") }
        if threadCounts.isEmpty { throw ValidationError("--threads-list must list positive integers, e.g. 1,2") }
        if let bad = modelNames.first(where: { Self.student($0) == nil }) {
            throw ValidationError("--models: unknown student \"\(bad)\" (known: 1m, 10m)")
        }
        if !(lr.isFinite && lr > 0) { throw ValidationError("--lr must be > 0") }
    }

    var threadCounts: [Int] { threadsList.split(separator: ",").compactMap { Int($0) }.filter { $0 > 0 } }
    var modelNames: [String] { models.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces).lowercased() } }

    /// The students: (layers, hidden, heads); FFN width from ModelSpec's 8/3 rule.
    static func student(_ name: String) -> (layers: Int, hidden: Int, heads: Int)? {
        switch name {
        case "1m": return (2, 128, 4)
        case "10m": return (6, 320, 5)
        default: return nil
        }
    }

    struct Row: Codable {
        var model: String
        var layers: Int
        var hidden: Int
        var parameters: Int
        /// Parameters outside the (tied) embedding.
        var nonEmbeddingParameters: Int
        var threads: Int
        var batch: Int
        var context: Int
        /// Median seconds per step on the chosen clock.
        var seconds: Double
        var tokensPerSecond: Double
        /// Training FLOPs (3 × forward, with attention and head) per second, in 10⁹.
        var gflops: Double
        var losses: [Double]
        var torchSeconds: Double?
        var torchTokensPerSecond: Double?
        var torchLosses: [Double]?
        /// Our tokens/s over PyTorch's.
        var speedupVsTorch: Double?
        /// Largest |Swift loss − PyTorch loss| over all steps.
        var maxLossDifference: Double?
    }

    func run() throws {
        let root = NSTemporaryDirectory() + "/logitcache-bench-train-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: root) }
        var rows: [Row] = []
        var baselineNote: String?
        var threadIndependent = true
        for name in modelNames {
            guard let shape = Self.student(name) else { continue }  // validate() refused the rest
            let config = try ModelConfig.llama(
                vocabSize: 8000, hiddenSize: shape.hidden, layerCount: shape.layers, headCount: shape.heads,
                kvHeadCount: shape.heads, intermediateSize: (shape.hidden * 8 / 3 + 63) / 64 * 64,
                maxPositions: max(context, 256), tieWordEmbeddings: true)
            let dir = root + "/" + name
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            try TrainableLlama(config: config, seed: 1).export(to: dir)
            var rng = CounterRandom(seed: 7, position: 0)
            let tokens = (0...batch * context).map { _ in Int32(truncatingIfNeeded: rng.next() % 8000) }
            let tokenFile = dir + "/tokens.bin"
            try tokens.withUnsafeBytes { Data($0) }.write(to: URL(fileURLWithPath: tokenFile))
            var firstLosses: [Double]?
            for n in threadCounts {
                var row = try measure(config: config, name: name, directory: dir, tokens: tokens, threads: n)
                if let firstLosses, firstLosses != row.losses { threadIndependent = false }
                firstLosses = firstLosses ?? row.losses
                if !noBaseline && baselineNote == nil {
                    switch torchRun(dir: dir, tokenFile: tokenFile, threads: n) {
                    case let .success(t) where t.parameters != row.parameters:
                        baselineNote = "PyTorch counts \(t.parameters) parameters, we \(row.parameters): not the same model"
                    case let .success(t):
                        let s = median(Array((clock == .wall ? t.seconds : t.cpu_seconds).dropFirst(warmup)))
                        row.torchSeconds = s
                        row.torchTokensPerSecond = Double(batch * context) / s
                        row.torchLosses = t.losses
                        row.speedupVsTorch = s / row.seconds
                        row.maxLossDifference = zip(row.losses, t.losses).map { abs($0 - $1) }.max()
                    case let .failure(note):
                        baselineNote = note.description
                    }
                }
                rows.append(row)
                if !json { FileHandle.standardError.write(Data("bench train: \(name) × \(n) threads done\n".utf8)) }
            }
        }
        let baseline = baselineNote.map { "unavailable: " + $0 }
            ?? (noBaseline ? "skipped" : "PyTorch CPU eager float32 (transformers LlamaForCausalLM, sdpa, torch.optim.AdamW), \(script)")
        if json {
            struct Report: Codable {
                var rows: [Row]; var baseline: String; var warmupSteps: Int; var timedSteps: Int
                var clock: GemmBench.Clock
                /// Whether every thread count gave bit-identical losses at every step.
                var lossesIdenticalAcrossThreads: Bool
            }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            let report = Report(rows: rows, baseline: baseline, warmupSteps: warmup, timedSteps: steps, clock: clock,
                                lossesIdenticalAcrossThreads: threadIndependent)
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
            return
        }
        print("model  layers×hidden  parameters  thr  tokens/step  step s  tok/s     GFLOP/s  torch s  torch tok/s  speedup  max |Δloss|")
        for r in rows {
            print([pad(r.model, -5), pad("\(r.layers)×\(r.hidden)", 13), pad(r.parameters, 10), pad(r.threads, 3),
                   pad(r.batch * r.context, 11), pad(format(r.seconds, 3), 6), pad(format(r.tokensPerSecond, 0), 8),
                   pad(format(r.gflops, 1), 7), pad(r.torchSeconds.map { format($0, 3) } ?? "-", 7),
                   pad(r.torchTokensPerSecond.map { format($0, 0) } ?? "-", 11),
                   pad(r.speedupVsTorch.map { format($0, 2) + "x" } ?? "-", 7),
                   pad(r.maxLossDifference.map { String(format: "%.1e", $0) } ?? "-", 11)].joined(separator: "  "))
        }
        print("median of \(steps) steps after \(warmup) warm-up, \(clock.rawValue) clock; step = forward + CE + backward + clip + AdamW;")
        print("speedup = our tokens/s / PyTorch's; Δloss compares the per-step losses (same weights and batch).")
        print("losses \(threadIndependent ? "identical" : "DIFFER") across thread counts; baseline: \(baseline)")
    }

    /// Trains a fresh copy of the exported model for warmup + steps steps on `threads` threads.
    func measure(config: ModelConfig, name: String, directory: String, tokens: [Int32], threads: Int) throws -> Row {
        let pool = ThreadPool(threadCount: threads)
        let model = try TrainableLlama(directory: directory)
        let source = try CorpusSource(tokens: tokens, batchSize: batch, length: context, seed: 0,
                                      vocabularySize: config.vocabSize)
        let settings = TrainingSettings(steps: warmup + steps, learningRate: lr, minLearningRateFraction: 1,
                                        warmupSteps: 0, weightDecay: 0.1, gradientClip: 1)
        let trainer = try Trainer(model: model, source: source, settings: settings, pool: pool)
        var seconds: [Double] = [], losses: [Double] = []
        for i in 0..<(warmup + steps) {
            let c0 = GemmBench.processCPUSeconds()
            let r = try trainer.trainStep()
            let cpu = (GemmBench.processCPUSeconds() - c0) / Double(threads)
            losses.append(r.loss)
            if i >= warmup { seconds.append(clock == .wall ? r.seconds : cpu) }
        }
        let s = median(seconds), N = batch * context
        return Row(model: name, layers: config.layerCount, hidden: config.hiddenSize, parameters: model.parameterCount,
                   nonEmbeddingParameters: model.nonEmbeddingParameterCount,
                   threads: threads, batch: batch, context: context, seconds: s, tokensPerSecond: Double(N) / s,
                   gflops: model.trainingFLOPs(batch: batch, length: context) / s / 1e9, losses: losses)
    }

    struct BaselineError: Error, CustomStringConvertible { var description: String }

    /// What tools/bench_train_torch.py prints (the fields used here).
    struct TorchOutput: Decodable {
        // Names as the script prints them; both lists include the warm-up steps.
        var seconds: [Double]
        var cpu_seconds: [Double]
        var losses: [Double]
        var parameters: Int
    }

    /// Runs the PyTorch script on the exported model and token file.
    func torchRun(dir: String, tokenFile: String, threads: Int) -> Result<TorchOutput, BaselineError> {
        guard FileManager.default.fileExists(atPath: script) else {
            return .failure(BaselineError(description: "\(script) not found (pass --script)"))
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python.contains("/") ? python : "/usr/bin/env")
        process.arguments = (python.contains("/") ? [] : [python]) + [
            script, "--model", dir, "--tokens", tokenFile, "--batch", "\(batch)", "--length", "\(context)",
            "--threads", "\(threads)", "--warmup", "\(warmup)", "--steps", "\(steps)", "--lr", "\(lr)",
            "--weight-decay", "0.1", "--clip", "1"]
        var env = ProcessInfo.processInfo.environment
        env["OMP_NUM_THREADS"] = "\(threads)"
        process.environment = env
        // stderr to a file: a chatty library must not fill a pipe nobody reads while we wait on stdout.
        let errPath = dir + "/torch-\(threads).stderr"
        FileManager.default.createFile(atPath: errPath, contents: nil)
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle(forWritingAtPath: errPath)
        do { try process.run() } catch {
            return .failure(BaselineError(description: "cannot start \(python): \(error)"))
        }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0, let output = try? JSONDecoder().decode(TorchOutput.self, from: data) else {
            let errors = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? ""
            let last = errors.split(separator: "\n").last.map(String.init) ?? "no output"
            return .failure(BaselineError(description: "\(python) \(script) failed (exit \(process.terminationStatus)): \(last)"))
        }
        return .success(output)
    }
}
