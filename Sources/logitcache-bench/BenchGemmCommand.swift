import ArgumentParser
import CommandLineSupport
import Foundation
import Kernels

/// `logitcache-bench gemm`: GFLOP/s of our packed SIMD GEMM on the transformer shapes of
/// SmolLM-135M (forward and both backward forms), beside numpy/OpenBLAS sgemm at the same
/// thread counts, plus the fused LM head (top-K + logsumexp) against the plain head GEMM.
struct BenchGemmCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gemm",
        abstract: "GEMM GFLOP/s on SmolLM-135M shapes beside numpy/OpenBLAS sgemm, and the fused LM head's overhead.",
        discussion: """
            Shapes: 512 positions through hidden 576, k/v 192, intermediate 1536, vocabulary 49152;
            forward y = x·Wᵀ (weights packed beforehand, as at load), backward dX = dY·W and
            dW = dYᵀ·X (packing timed). Best of repeated runs.
              logitcache-bench gemm --python python3
            """)

    @Option(help: "Python interpreter with numpy, to run tools/bench_gemm_numpy.py as the baseline.")
    var python: String?

    @Option(help: "Baseline script (default: tools/bench_gemm_numpy.py under the working directory).")
    var script: String?

    @Option(help: "Comma-separated thread counts.")
    var threads = "1,2"

    @Option(help: "Top-K of the fused head measurement.")
    var topK = 64

    @Option(help: "Minimum timed seconds per case and thread count.")
    var minSeconds = 0.3

    @Option(help: "wall (elapsed) or cpu (process CPU time / threads: excludes waiting for a busy core). Both sides use the same clock.")
    var clock: GemmBench.Clock = .wall

    @Option(help: "Only cases whose name contains this text.")
    var only: String?

    @Flag(help: "Print JSON results instead of a table.")
    var json = false

    func run() throws {
        let counts = threads.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !counts.isEmpty, counts.allSatisfy({ $0 >= 1 }) else {
            throw ValidationError("--threads: expected positive integers like 1,2, got \(threads)")
        }
        guard topK >= 0 && topK <= 49152 else { throw ValidationError("--top-k: must be in 0...49152") }
        let cases = GemmBench.smolLM135M.filter { only == nil || $0.name.contains(only!) }
        var rows = GemmBench.run(cases, threads: counts, minSeconds: minSeconds, clock: clock)
        var baseline: GemmBench.Baseline?
        if let python {
            let script = try baselineScript(self.script, default: "bench_gemm_numpy.py")
            baseline = try GemmBench.numpyBaseline(python: python, script: script, cases: cases, threads: counts,
                                                   minSeconds: minSeconds, clock: clock)
            GemmBench.attach(baseline!, to: &rows)
        }
        let head = only.map { !"fused lm head".contains($0) } ?? false ? [] : GemmBench.head(rows: 512, hidden: 576, vocab: 49152, k: topK, threads: counts, minSeconds: minSeconds, clock: clock)
        if json {
            struct Output: Encodable {
                var gemm: [GemmBench.Row]
                var openblasKernel: [String: String]
                var geometricMeanRatio: [String: Double]
                var fusedHead: [GemmBench.HeadRow]
                var clock: GemmBench.Clock
            }
            var kernels: [String: String] = [:], means: [String: Double] = [:]
            for t in counts {
                if let k = baseline?.kernels[t] { kernels["\(t)"] = k }
                if let g = GemmBench.geometricMeanRatio(rows, threads: t) { means["\(t)"] = g }
            }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(Output(gemm: rows, openblasKernel: kernels,
                                                             geometricMeanRatio: means, fusedHead: head, clock: clock)), as: UTF8.self))
            return
        }
        print("bench gemm: SmolLM-135M shapes, float32, best of runs >= \(minSeconds) s, \(clock.rawValue) clock")
        print(GemmBench.table(rows))
        for t in counts {
            if let g = GemmBench.geometricMeanRatio(rows, threads: t) {
                print(String(format: "geometric mean vs numpy, %d thread(s): %.2fx (OpenBLAS kernel %@)", t, g,
                             baseline?.kernels[t] ?? "unknown"))
            }
        }
        if python == nil { print("(no baseline: pass --python python3 to run numpy/OpenBLAS beside it)") }
        print("\nfused LM head, \(512) x \(49152) x \(576), top-\(topK) + logsumexp vs plain head GEMM")
        for h in head {
            print(String(format: "threads %d: plain %.1f ms, fused %.1f ms, overhead %+.1f%% (selection alone on full logits %.1f ms)",
                         h.threads, h.plainSeconds * 1e3, h.fusedSeconds * 1e3, h.overhead * 100, h.selectSeconds * 1e3))
        }
    }
}

extension GemmBench.Clock: ExpressibleByArgument {}
