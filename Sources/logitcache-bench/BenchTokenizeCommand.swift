import ArgumentParser
import CommandLineSupport
import Dispatch
import Foundation
import Tokenizers

/// `logitcache-bench tokenize`: encoding speed of our tokenizer, and with `--python` of the
/// Hugging Face `tokenizers` library on the same documents (via `tools/bench_tokenize.py`),
/// side by side, with a check that both produced the same ids.
struct BenchTokenizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenize",
        abstract: "Tokens/s of encoding a text file, beside the Hugging Face tokenizers library.",
        discussion: """
            The text is cut into documents at blank lines ("\\n\\n"); each document is encoded on
            its own, without special tokens, on 1 thread and on 2 threads.
              logitcache-bench tokenize --tokenizer Data/tokenizer.json --text-file corpus.txt \\
                  --python /work/venv/bin/python
            """)

    @Option(help: "Path of the tokenizer.json file.")
    var tokenizer: String

    @Option(help: "UTF-8 text file to encode (a few MB is typical).")
    var textFile: String

    @Option(help: "Python interpreter with the `tokenizers` package, to run tools/bench_tokenize.py as the baseline.")
    var python: String?

    @Option(help: "Baseline script (default: tools/bench_tokenize.py under the working directory).")
    var script: String?

    @Option(help: "Timed repetitions; the best is reported.")
    var repeats = 3

    @Flag(help: "Print JSON results instead of a table.")
    var json = false

    struct Row: Codable {
        var name: String
        var threads: Int
        var seconds: Double
        var tokens: Int
        var tokensPerSecond: Double
        var megabytesPerSecond: Double
        var idsFNV1a: String
    }

    func run() throws {
        guard let data = FileManager.default.contents(atPath: textFile) else {
            throw ValidationError("--text-file: cannot read \(textFile)")
        }
        guard let text = String(validating: [UInt8](data), as: UTF8.self) else {
            throw ValidationError("--text-file: \(textFile) is not valid UTF-8")
        }
        let documents = Self.documents(text)
        let tok = try Tokenizer(contentsOfFile: tokenizer)
        let megabytes = Double(data.count) / 1e6
        var rows: [Row] = []
        for threads in [1, 2] {
            var best = Double.infinity
            var ids: [[UInt32]] = []
            for _ in 0..<max(1, repeats) {
                let t0 = DispatchTime.now().uptimeNanoseconds
                ids = Self.encodeAll(tok, documents, threads: threads)
                let dt = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
                best = min(best, dt)
            }
            let count = ids.reduce(0) { $0 + $1.count }
            rows.append(Row(name: "logitcache", threads: threads, seconds: best, tokens: count,
                            tokensPerSecond: Double(count) / best, megabytesPerSecond: megabytes / best,
                            idsFNV1a: Self.fnv1a(ids)))
        }
        if let python {
            rows += try runBaseline(python: python)
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(["results": rows]), as: UTF8.self))
            return
        }
        print("bench tokenize: \(textFile) (\(String(format: "%.2f", megabytes)) MB, \(documents.count) documents), best of \(repeats)")
        func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : s + String(repeating: " ", count: n - s.count) }
        print(pad("implementation", 24) + "threads    tokens/s      MB/s  vs library  ids")
        let reference = rows.first { $0.name != "logitcache" }
        for r in rows {
            let baseline = rows.first { $0.name != "logitcache" && $0.threads == r.threads }
            let ratio = baseline.flatMap { $0.tokensPerSecond > 0 ? String(format: "%.2fx", r.tokensPerSecond / $0.tokensPerSecond) : nil } ?? "-"
            let same = reference.map { $0.idsFNV1a == r.idsFNV1a && $0.tokens == r.tokens ? "same" : "DIFFERENT" } ?? r.idsFNV1a
            print(pad(r.name, 24) + String(format: "%7d %11.0f %9.2f", r.threads, r.tokensPerSecond, r.megabytesPerSecond)
                  + String(repeating: " ", count: max(1, 12 - ratio.count)) + ratio + "  " + same)
        }
        if let reference, rows.contains(where: { $0.idsFNV1a != reference.idsFNV1a || $0.tokens != reference.tokens }) {
            throw ValidationError("ids differ from the tokenizers library on this text")
        }
    }

    /// Documents separated by blank lines, cut on UTF-8 bytes (a Swift `Character` would
    /// treat "\r\n" as one unit), the same way `str.split("\n\n")` does in the Python script.
    static func documents(_ text: String) -> [String] {
        let b = Array(text.utf8)
        var out: [String] = []
        var start = 0, i = 0
        while i + 1 < b.count {
            if b[i] == 0x0A && b[i + 1] == 0x0A {
                out.append(String(decoding: b[start..<i], as: UTF8.self))
                i += 2
                start = i
            } else {
                i += 1
            }
        }
        out.append(String(decoding: b[start...], as: UTF8.self))
        return out
    }

    static func encodeAll(_ tok: Tokenizer, _ docs: [String], threads: Int) -> [[UInt32]] {
        if threads == 1 {
            var enc = tok.makeEncoder()
            return docs.map { enc.encode($0) }
        }
        // Contiguous halves, one encoder per thread; each thread writes only its own slots.
        let results = UnsafeMutableBufferPointer<[UInt32]>.allocate(capacity: docs.count)
        results.initialize(repeating: [])
        defer { results.deinitialize(); results.deallocate() }
        let out = SendableBuffer(results)
        DispatchQueue.concurrentPerform(iterations: threads) { t in
            let lo = docs.count * t / threads, hi = docs.count * (t + 1) / threads
            var enc = tok.makeEncoder()
            // Safe because the ranges [lo, hi) of different threads do not overlap.
            for d in lo..<hi { out.base[d] = enc.encode(docs[d]) }
        }
        return Array(results)
    }

    struct SendableBuffer: @unchecked Sendable {
        let base: UnsafeMutableBufferPointer<[UInt32]>
        init(_ base: UnsafeMutableBufferPointer<[UInt32]>) { self.base = base }
    }

    /// FNV-1a 64 over the ids as little-endian u32, documents in order; the Python script
    /// computes the same so the two can be compared without shipping the ids.
    static func fnv1a(_ ids: [[UInt32]]) -> String {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for doc in ids {
            for id in doc {
                var x = id
                for _ in 0..<4 { h = (h ^ UInt64(x & 0xFF)) &* 0x100_0000_01b3; x >>= 8 }
            }
        }
        return String(h, radix: 16)
    }

    func runBaseline(python: String) throws -> [Row] {
        let script = try baselineScript(self.script, default: "bench_tokenize.py")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = [script, "--tokenizer", tokenizer, "--text-file", textFile, "--repeats", String(repeats)]
        let pipe = Pipe()
        process.standardOutput = pipe
        do { try process.run() } catch {
            throw ValidationError("--python: cannot run \(python) \(script): \(error.localizedDescription)")
        }
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw ValidationError("tools/bench_tokenize.py failed with status \(process.terminationStatus)")
        }
        struct Baseline: Decodable { var results: [Row] }
        do {
            return try JSONDecoder().decode(Baseline.self, from: output).results
        } catch {
            throw ValidationError("tools/bench_tokenize.py printed unexpected output: \(error)")
        }
    }
}
