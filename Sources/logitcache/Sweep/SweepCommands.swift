import ArgumentParser
import CommandLineSupport
import Foundation
import Kernels
import Sweep

/// Commands of the sweep area (sweep, demo).
enum SweepCommands {
    static var top: [ParsableCommand.Type] { [SweepCommand.self, DemoCommand.self] }
}

func logLine(_ s: String) { FileHandle.standardError.write(Data((s + "\n").utf8)) }

func printTable(_ r: SweepReport, output: String) {
    func pad(_ t: String, _ n: Int) -> String { t.count >= n ? t : t + String(repeating: " ", count: n - t.count) }
    print(pad("setting", 22) + "eval CE   Δ baseline  KL→teacher   ECE    B/token")
    for g in r.groups {
        print(pad(g.name, 22) + String(format: "%7.4f   %+8.4f    %8.4f   %6.3f  ", g.evalCrossEntropy, g.deltaToBaseline,
                                       g.klToTeacher, g.calibrationError)
              + (g.cacheBytesPerToken > 0 ? String(format: "%7.1f", g.cacheBytesPerToken) : "      –"))
    }
    print(pad("teacher", 22) + String(format: "%7.4f", r.teacherPass.teacherEval.crossEntropy))
    print("")
    for line in r.summary { print("- " + line) }
    if let law = r.law {
        print("\nscaling law (\(law.coefficientsSource)): predicted vs observed eval CE")
        for row in law.rows {
            print(pad(row.name, 22) + row.law + (row.predicted.map { String(format: "  %7.4f", $0) } ?? "        –")
                  + String(format: "  observed %7.4f", row.observed))
        }
    }
    let pngs = SweepReport.defaultPNGConverter() == nil ? "" : " and .png"
    print("\nreport: \(output)/report.md (report.json, ce_vs_k.svg, ce_vs_bytes.svg, compute_vs_students.svg\(pngs))")
}

/// `logitcache sweep`: one teacher pass, many students, one report.
struct SweepCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sweep",
        abstract: "What does truncating the teacher cost a student? One teacher pass, one student per setting, a report.",
        discussion: "Resumable: a rerun reuses the teacher pass and every finished student.")

    @Option(help: "Teacher model directory.") var teacher: String
    @Option(help: "tokenizer.json.") var tokenizer: String
    @Option(parsing: .upToNextOption, help: "Student-training corpus (the teacher pass runs over it).") var corpus: [String]
    @Option(parsing: .upToNextOption, help: "Held-out evaluation corpus.") var eval: [String]
    @Option(help: "Student architecture JSON.") var student: String
    @Option(help: "Output directory.") var out: String
    @Option(help: "Comma-separated k values.") var k = "1,4,16,64"
    @Option(help: "Comma-separated policies: topk, tail, sampled.") var policies = "topk"
    @Option(help: "Comma-separated λ values.") var lambda = "1"
    @Option(help: "Comma-separated distillation temperatures τ of the top-k and tail students (sampled students read at the capture temperature).")
    var temperatures = "1"
    @Option(help: "Draws per token for sampled.") var samples = 50
    @Option(help: "Seeds per setting.") var seeds = 1
    @Option(help: "Training tokens per student.") var tokens = 200_000
    @Option(help: "Window length.") var context = 256
    @Option(help: "Windows per step.") var batch = 8
    @Option(help: "Peak learning rate.") var lr: Float = 2e-3
    @Option(help: "Evaluation windows.") var evalWindows = 64
    @Flag(help: "Also distil a student from the full teacher run inside the loop (reference and cost baseline).") var online = false
    @Option(help: "Scaling-law coefficients for the report's predicted vs observed CE (as `law predict --coefficients`; default: the paper's supervised law).") var law: String?
    @Option(help: "Threads.") var threads = ThreadPool.defaultThreadCount

    func run() throws {
        var o = SweepOptions(teacherDirectory: teacher, tokenizerPath: tokenizer, corpus: corpus, evalCorpus: eval,
                             studentConfigPath: student, output: out)
        func list<T>(_ s: String, _ name: String, _ parse: (String) -> T?) throws -> [T] {
            let v = s.split(separator: ",").map { parse(String($0).trimmingCharacters(in: .whitespaces)) }
            guard !v.isEmpty, v.allSatisfy({ $0 != nil }) else { throw ValidationError("--\(name) \(s): expected a comma-separated list") }
            return v.map { $0! }
        }
        o.ks = try list(k, "k") { Int($0) }
        o.policies = try list(policies, "policies") { $0 }.map { p in
            guard let arm = SweepArm(rawValue: p), SweepArm.cached.contains(arm) else {
                throw ValidationError("--policies \(p): expected topk, tail or sampled")
            }
            return arm
        }
        o.lambdas = try list(lambda, "lambda") { Float($0) }
        o.temperatures = try list(temperatures, "temperatures") { Float($0) }
        o.samples = samples; o.seeds = seeds; o.tokens = tokens; o.context = context; o.batch = batch
        o.learningRate = lr; o.evalWindows = evalWindows; o.online = online; o.threads = threads
        if let law { o.law = try loadLawCoefficients(law, option: "--law"); o.lawSource = law }
        let report = try SweepRunner(options: o, log: logLine).run()
        printTable(report, output: out)
    }
}

/// `logitcache demo`: the whole pipeline on the built-in data.
struct DemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Run the whole pipeline on the built-in corpus, tokenizer and teacher (about 10 minutes; --quick about 2).",
        discussion: """
            Teacher pass over Data/corpus/student-train into a cache, students distilled from that one cache
            (top-k 1, 8, 64 and sampled) plus a supervised baseline, evaluation on Data/corpus/eval, a report.
            Resumable: a rerun reuses what exists.
            """)

    @Flag(help: "A small version: a slice of the corpus, fewer and shorter students.") var quick = false
    @Option(help: "Output directory.") var out: String?
    @Option(help: "Repository data directory (default: ./Data, or the one beside the executable's checkout).") var data: String?
    @Option(help: "Threads.") var threads = ThreadPool.defaultThreadCount

    func dataDirectory() throws -> String {
        var candidates = [data ?? "Data"]
        var url = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        for _ in 0..<5 { candidates.append(url.appendingPathComponent("Data").path); url.deleteLastPathComponent() }
        for c in candidates where FileManager.default.fileExists(atPath: c + "/teacher/model.safetensors") { return c }
        throw ValidationError("built-in data not found (looked for teacher/model.safetensors in \(candidates.first!)); run from the repository root or pass --data DIR")
    }

    func run() throws {
        let d = try dataDirectory()
        let output = out ?? (quick ? "demo-quick" : "demo")
        var o = SweepOptions(teacherDirectory: d + "/teacher", tokenizerPath: d + "/tokenizer.json",
                             corpus: [d + "/corpus/student-train.jsonl.zst"], evalCorpus: [d + "/corpus/eval.jsonl.zst"],
                             studentConfigPath: d + "/student.json", output: output)
        o.threads = threads
        o.context = 256; o.batch = 8
        if quick {
            o.ks = [1, 16]; o.policies = [.topk]; o.tokens = 81_920; o.teacherWindowLimit = 200; o.evalWindows = 16
            o.learningRate = 4e-3
        } else {
            o.ks = [1, 8, 64]; o.policies = [.topk, .sampled]; o.tokens = 409_600; o.evalWindows = 64
            o.learningRate = 3e-3
        }
        logLine("demo: built-in teacher \(d)/teacher, corpus \(d)/corpus -> \(output)\(quick ? " (quick)" : "")")
        let report = try SweepRunner(options: o, log: logLine).run()
        printTable(report, output: output)
    }
}
