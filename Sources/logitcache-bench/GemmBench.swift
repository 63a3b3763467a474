import Dispatch
import Foundation
import Kernels

/// The GEMM benchmark behind `logitcache-bench gemm`, reusable by other benchmarks (e.g.
/// `bench forward` reports the same table for its model's shapes).
///
/// Forms (all float32, row-major, as the engine uses them):
/// - `forward`:         y (M,N) = x (M,K) · Wᵀ, W (N,K) packed once beforehand (as at load);
/// - `backward_input`:  dX (M,N) = dY (M,K) · W (K,N); packing W is part of the timed call;
/// - `backward_weight`: dW (M,N) = dYᵀ · X with dY stored (K,M), X (K,N); packing included.
enum GemmBench {
    enum Form: String, Codable, CaseIterable { case forward, backward_input, backward_weight }

    struct Case: Codable {
        var name: String
        var form: Form
        var m: Int, n: Int, k: Int
        var flops: Double { 2 * Double(m) * Double(n) * Double(k) }
    }

    struct Row: Codable {
        var name: String
        var form: Form
        var m: Int, n: Int, k: Int
        var threads: Int
        var seconds: Double
        var gflops: Double
        /// numpy/OpenBLAS on the same case and thread count, when measured.
        var numpyGflops: Double?
        /// gflops / numpyGflops.
        var ratio: Double?
    }

    /// Result of a baseline run: per (name, threads) GFLOP/s and the OpenBLAS kernel used.
    struct Baseline {
        var gflops: [String: Double] = [:]
        var kernels: [Int: String] = [:]
        var note: String?
        func key(_ name: String, _ threads: Int) -> String { "\(name)@\(threads)" }
    }

    /// The linear layers of one transformer block plus the LM head, at `rows` positions, in
    /// all three forms. `kv` is the key/value projection width (GQA).
    static func transformerCases(rows M: Int, hidden C: Int, kv: Int, intermediate I: Int, vocab V: Int) -> [Case] {
        var out: [Case] = []
        let linears: [(String, Int, Int)] = [
            ("attn q/o \(C)->\(C)", C, C), ("attn k/v \(C)->\(kv)", C, kv), ("mlp up \(C)->\(I)", C, I),
            ("mlp down \(I)->\(C)", I, C), ("lm head \(C)->\(V)", C, V),
        ]
        for (name, inF, outF) in linears {
            out.append(Case(name: "fwd " + name, form: .forward, m: M, n: outF, k: inF))
        }
        for (name, inF, outF) in linears where outF != V {
            out.append(Case(name: "dX " + name, form: .backward_input, m: M, n: inF, k: outF))
            out.append(Case(name: "dW " + name, form: .backward_weight, m: outF, n: inF, k: M))
        }
        return out
    }

    /// SmolLM-135M at context 512: hidden 576, 3 kv heads of 64, intermediate 1536, vocab 49152.
    static var smolLM135M: [Case] { transformerCases(rows: 512, hidden: 576, kv: 192, intermediate: 1536, vocab: 49152) }

    /// Deterministic operand values in [-1, 1).
    static func randomFloats(_ n: Int, seed: UInt64) -> UnsafeMutablePointer<Float> {
        let p = UnsafeMutablePointer<Float>.allocate(capacity: max(1, n))
        var s = seed | 1
        for i in 0..<n {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17
            p[i] = Float(Double(s >> 40) / Double(1 << 24) * 2 - 1)
        }
        return p
    }

    /// How a run is timed.
    enum Clock: String, Codable, CaseIterable {
        /// Elapsed time: what a user waits for.
        case wall
        /// Process CPU time divided by the thread count: the time the threads would take with
        /// the cores to themselves. On a machine shared with other work, wall time includes
        /// waiting for a core; this does not (but it does count a thread's busy-waiting).
        case cpu
    }

    static func processCPUSeconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    /// Best time of `body` over at least 3 runs and `minSeconds` total, after a warm-up.
    static func time(minSeconds: Double, clock: Clock = .wall, threads: Int = 1, _ body: () -> Void) -> Double {
        body()
        var best = Double.infinity, total = 0.0, reps = 0
        while reps < 3 || total < minSeconds {
            let c0 = processCPUSeconds()
            let t0 = DispatchTime.now().uptimeNanoseconds
            body()
            let wall = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
            let dt = clock == .wall ? wall : (processCPUSeconds() - c0) / Double(threads)
            best = min(best, dt); total += wall; reps += 1
        }
        return best
    }

    /// Measures our GEMM on every case at every thread count.
    static func run(_ cases: [Case], threads: [Int], minSeconds: Double = 0.3, clock: Clock = .wall) -> [Row] {
        var rows: [Row] = []
        for c in cases {
            // a: left operand as stored; b: right operand as stored; out: C (m, n).
            let aCount = c.m * c.k, bCount = c.n * c.k
            let a = randomFloats(aCount, seed: 1), b = randomFloats(bCount, seed: 2)
            let out = UnsafeMutablePointer<Float>.allocate(capacity: max(1, c.m * c.n))
            defer { a.deallocate(); b.deallocate(); out.deallocate() }
            for t in threads {
                let pool = ThreadPool(threadCount: t)
                let seconds: Double
                switch c.form {
                case .forward:
                    // Packing happens once at load, outside the timed region.
                    let w = PackedMatrix(rows: c.n, columns: c.k, float32: b, pool: pool)
                    seconds = time(minSeconds: minSeconds, clock: clock, threads: t) {
                        matmulForward(out: out, input: a, weight: w, rows: c.m, pool: pool)
                    }
                case .backward_input:
                    seconds = time(minSeconds: minSeconds, clock: clock, threads: t) {
                        gemm(m: c.m, n: c.n, k: c.k, a: a, lda: c.k, b: b, ldb: c.n, c: out, ldc: c.n, pool: pool)
                    }
                case .backward_weight:
                    seconds = time(minSeconds: minSeconds, clock: clock, threads: t) {
                        gemm(m: c.m, n: c.n, k: c.k, a: a, lda: c.m, transposeA: true, b: b, ldb: c.n,
                             c: out, ldc: c.n, accumulate: true, pool: pool)
                    }
                }
                rows.append(Row(name: c.name, form: c.form, m: c.m, n: c.n, k: c.k, threads: t,
                                seconds: seconds, gflops: c.flops / seconds / 1e9))
            }
        }
        return rows
    }

    /// Runs `tools/bench_gemm_numpy.py` with `python` once per thread count. OPENBLAS_CORETYPE
    /// and OPENBLAS_L2_SIZE are removed from the child's environment only (they can pin
    /// OpenBLAS to a slower kernel); the thread count goes through OPENBLAS_NUM_THREADS /
    /// OMP_NUM_THREADS (and threadpoolctl when installed).
    static func numpyBaseline(python: String, script: String, cases: [Case], threads: [Int],
                              minSeconds: Double = 0.3, clock: Clock = .wall) throws -> Baseline {
        var baseline = Baseline()
        let input = try JSONEncoder().encode(cases)
        for t in threads {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: python.contains("/") ? python : "/usr/bin/env")
            process.arguments = (python.contains("/") ? [] : [python]) + [script, "--threads", "\(t)", "--min-seconds", "\(minSeconds)", "--clock", clock.rawValue]
            var env = ProcessInfo.processInfo.environment
            env["OPENBLAS_CORETYPE"] = nil
            env["OPENBLAS_L2_SIZE"] = nil
            env["OPENBLAS_NUM_THREADS"] = "\(t)"
            env["OMP_NUM_THREADS"] = "\(t)"
            process.environment = env
            let stdin = Pipe(), stdout = Pipe(), stderr = Pipe()
            process.standardInput = stdin
            process.standardOutput = stdout
            process.standardError = stderr
            try process.run()
            stdin.fileHandleForWriting.write(input)
            try stdin.fileHandleForWriting.close()
            let data = stdout.fileHandleForReading.readDataToEndOfFile()
            let err = stderr.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            guard process.terminationStatus == 0 else {
                throw BenchError("\(script) with \(python) failed (status \(process.terminationStatus)): "
                                 + String(decoding: err, as: UTF8.self).split(separator: "\n").suffix(3).joined(separator: " | "))
            }
            struct Output: Decodable {
                struct Result: Decodable { var name: String; var gflops: Double }
                struct Info: Decodable { var kernel: String?; var library: String?; var version: String? }
                var results: [Result]
                var openblas: Info?
            }
            let decoded: Output
            do { decoded = try JSONDecoder().decode(Output.self, from: data) } catch {
                throw BenchError("\(script): unreadable output: \(String(decoding: data.prefix(200), as: UTF8.self))")
            }
            for r in decoded.results { baseline.gflops[baseline.key(r.name, t)] = r.gflops }
            baseline.kernels[t] = decoded.openblas?.kernel ?? "unknown"
        }
        return baseline
    }

    /// Fills the numpy columns of `rows` from `baseline`.
    static func attach(_ baseline: Baseline, to rows: inout [Row]) {
        for i in rows.indices {
            if let g = baseline.gflops[baseline.key(rows[i].name, rows[i].threads)] {
                rows[i].numpyGflops = g
                rows[i].ratio = rows[i].gflops / g
            }
        }
    }

    /// The human table: one line per case and thread count, with the ratio to numpy.
    static func table(_ rows: [Row]) -> String {
        func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : s + String(repeating: " ", count: n - s.count) }
        var lines = [pad("case", 30) + pad("M x N x K", 20) + "threads   GFLOP/s   numpy   ratio"]
        for r in rows {
            let np = r.numpyGflops.map { String(format: "%7.1f", $0) } ?? "      -"
            let ratio = r.ratio.map { String(format: "%6.2fx", $0) } ?? "      -"
            lines.append(pad(r.name, 30) + pad("\(r.m) x \(r.n) x \(r.k)", 20)
                         + String(format: "%7d %9.1f", r.threads, r.gflops) + " " + np + " " + ratio)
        }
        return lines.joined(separator: "\n")
    }

    /// Geometric mean of the ratios per thread count (nil when no baseline).
    static func geometricMeanRatio(_ rows: [Row], threads: Int) -> Double? {
        let rs = rows.filter { $0.threads == threads }.compactMap(\.ratio)
        guard !rs.isEmpty else { return nil }
        return Foundation.exp(rs.map { Foundation.log($0) }.reduce(0, +) / Double(rs.count))
    }

    /// The machine's float32 multiply-add ceiling at `threads` threads, GFLOP/s (2 per FMA):
    /// every thread runs 16 independent SIMD16 FMA chains on registers only, so no GEMM or
    /// forward pass can exceed it. Each thread's rate is taken over its own CPU time, so other
    /// work on a shared machine does not lower it; the threads' rates are summed. Best of 3.
    static func peakFMA(threads: Int, iterations: Int = 4_000_000) -> Double {
        let pool = ThreadPool(threadCount: threads)
        var best = 0.0
        for _ in 0..<3 {
            var rates = [Double](repeating: 0, count: threads)
            rates.withUnsafeMutableBufferPointer { out in
                pool.parallelFor(threads) { parts in
                    for part in parts {
                        let b = SIMD16<Float>(repeating: 0.999_999), c = SIMD16<Float>(repeating: 1e-7)
                        var (a0, a1, a2, a3) = (SIMD16<Float>(repeating: 0), SIMD16<Float>(repeating: 1), SIMD16<Float>(repeating: 2), SIMD16<Float>(repeating: 3))
                        var (a4, a5, a6, a7) = (a0 + 4, a1 + 4, a2 + 4, a3 + 4)
                        var (a8, a9, a10, a11) = (a0 + 8, a1 + 8, a2 + 8, a3 + 8)
                        var (a12, a13, a14, a15) = (a0 + 12, a1 + 12, a2 + 12, a3 + 12)
                        var ts = timespec()
                        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
                        let t0 = Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
                        for _ in 0..<iterations {
                            a0 = c.addingProduct(a0, b); a1 = c.addingProduct(a1, b); a2 = c.addingProduct(a2, b); a3 = c.addingProduct(a3, b)
                            a4 = c.addingProduct(a4, b); a5 = c.addingProduct(a5, b); a6 = c.addingProduct(a6, b); a7 = c.addingProduct(a7, b)
                            a8 = c.addingProduct(a8, b); a9 = c.addingProduct(a9, b); a10 = c.addingProduct(a10, b); a11 = c.addingProduct(a11, b)
                            a12 = c.addingProduct(a12, b); a13 = c.addingProduct(a13, b); a14 = c.addingProduct(a14, b); a15 = c.addingProduct(a15, b)
                        }
                        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
                        let seconds = Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9 - t0
                        let s0 = (a0 + a1 + a2 + a3) + (a4 + a5 + a6 + a7), s1 = (a8 + a9 + a10 + a11) + (a12 + a13 + a14 + a15)
                        // Using the sum keeps the chains alive; it is finite by construction.
                        let rate = Double(iterations) * 16 * 16 * 2 / seconds / 1e9
                        out[part] = (s0 + s1).sum().isFinite ? rate : .nan
                    }
                }
            }
            best = max(best, rates.reduce(0, +))
        }
        return best
    }

    struct HeadRow: Codable {
        var rows: Int, vocab: Int, hidden: Int, k: Int, threads: Int
        var plainSeconds: Double
        var fusedSeconds: Double
        /// topKLogsumexp alone over precomputed full logits.
        var selectSeconds: Double
        /// fused / plain - 1.
        var overhead: Double
    }

    /// The fused LM head (top-K + logsumexp) against the plain head GEMM on the same shape.
    static func head(rows T: Int, hidden C: Int, vocab V: Int, k: Int, threads: [Int], minSeconds: Double = 0.3,
                     clock: Clock = .wall) -> [HeadRow] {
        let x = randomFloats(T * C, seed: 3), wSrc = randomFloats(V * C, seed: 4)
        let logits = UnsafeMutablePointer<Float>.allocate(capacity: T * V)
        let ids = UnsafeMutablePointer<Int32>.allocate(capacity: max(1, T * k))
        let vals = UnsafeMutablePointer<Float>.allocate(capacity: max(1, T * k))
        let lse = UnsafeMutablePointer<Float>.allocate(capacity: T)
        defer { [x, wSrc, logits, vals, lse].forEach { $0.deallocate() }; ids.deallocate() }
        let w = PackedMatrix(rows: V, columns: C, float32: wSrc, pool: ThreadPool())
        var out: [HeadRow] = []
        for t in threads {
            let pool = ThreadPool(threadCount: t)
            let plain = time(minSeconds: minSeconds, clock: clock, threads: t) {
                matmulForward(out: logits, input: x, weight: w, rows: T, pool: pool)
            }
            let fused = time(minSeconds: minSeconds, clock: clock, threads: t) {
                // Cannot throw: no targets are passed.
                try? lmHeadTopK(hidden: x, rows: T, weight: w, k: k, topIds: ids, topLogits: vals, logsumexp: lse, pool: pool)
            }
            let select = time(minSeconds: minSeconds, clock: clock, threads: t) {
                topKLogsumexp(logits: logits, rows: T, vocab: V, k: k, topIds: ids, topLogits: vals, logsumexp: lse, pool: pool)
            }
            out.append(HeadRow(rows: T, vocab: V, hidden: C, k: k, threads: t, plainSeconds: plain,
                               fusedSeconds: fused, selectSeconds: select, overhead: fused / plain - 1))
        }
        return out
    }
}

/// An error of a benchmark run, with its message.
struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}
