import Foundation
import Truncation
import SyntheticData
import Testing
@testable import Distillation
@testable import ShardFormat
@testable import Sweep

/// A rerun reuses a finished student only when it was made with the same settings.
@Suite struct SweepReuseTests {
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    static func scratch() throws -> String {
        let d = NSTemporaryDirectory() + "logitcache-sweep-reuse-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        return d
    }

    static func runner(_ out: String, tokens: Int = 20_480, evalWindows: Int = 16) throws -> SweepRunner {
        var o = SweepOptions(teacherDirectory: "t", tokenizerPath: "tok", corpus: ["c"], evalCorpus: ["e"],
                             studentConfigPath: repo + "/Data/student.json", output: out)
        o.tokens = tokens; o.evalWindows = evalWindows
        return try SweepRunner(options: o, log: { _ in })
    }

    /// A small real cache: its manifest is what students' fingerprints name.
    static func manifest(in dir: String, k: Int) throws -> CacheManifest {
        let g = TeacherLikeGenerator(vocabularySize: 8000, k: k, seed: 3)
        let w = try CacheWriter(directory: dir, description: CacheDescription(
            vocabularySize: 8000, fingerprints: Fingerprints(teacher: "xxh3:1", tokenizer: "xxh3:2", corpus: "xxh3:3"),
            capture: CaptureSettings(policy: .topK(k: k))))
        try w.append(g.sequence(0, length: 64))
        return try w.finish()
    }

    static func fingerprint(_ r: SweepRunner, _ m: CacheManifest, k: Int = 4, eval: [Int32] = [1, 2, 3]) throws -> String {
        let config = try ModelSpec.load(path: r.options.studentConfigPath)
        let settings = TrainingSettings(steps: max(1, r.options.tokens / (r.options.batch * r.options.context)),
                                        learningRate: r.options.learningRate, lambda: 1)
        return r.studentFingerprint(SweepSetting(policy: .topk, k: k, lambda: 1, seed: 1), config: config, settings: settings,
                                  evalTokens: eval, pass: m)
    }

    @Test func fingerprintNamesTokensEvaluationAndTheCache() throws {
        let d = try Self.scratch(); defer { try? FileManager.default.removeItem(atPath: d) }
        let m16 = try Self.manifest(in: d + "/c16", k: 16), m8 = try Self.manifest(in: d + "/c8", k: 8)
        let base = try Self.fingerprint(Self.runner(d), m16)
        #expect(try Self.fingerprint(Self.runner(d), m16) == base)
        #expect(try Self.fingerprint(Self.runner(d, tokens: 40_960), m16) != base)
        #expect(try Self.fingerprint(Self.runner(d, evalWindows: 8), m16) != base)
        #expect(try Self.fingerprint(Self.runner(d), m8) != base)
        #expect(try Self.fingerprint(Self.runner(d), m16, eval: [1, 2, 4]) != base)
        #expect(try Self.fingerprint(Self.runner(d), m16, k: 1) != base)
    }

    @Test func finishedStudentIsReusedOnlyWithTheSameSettings() throws {
        let d = try Self.scratch(); defer { try? FileManager.default.removeItem(atPath: d) }
        let m = try Self.manifest(in: d + "/cache", k: 16)
        let r = try Self.runner(d), student = d + "/students/topk-k4-l1-s1"
        let fp = try Self.fingerprint(r, m)
        // First run: nothing finished; the settings are recorded.
        #expect(try r.finishedResult(in: student, fingerprint: fp) == nil)
        #expect(try String(contentsOfFile: student + "/sweep-settings.txt", encoding: .utf8) == fp)
        let result = SweepReportTests.result(.topk, k: 4, ce: 5.0, flops: 1e12)
        try JSONEncoder().encode(result).write(to: URL(fileURLWithPath: student + "/result.json"))
        #expect(try r.finishedResult(in: student, fingerprint: fp) == result)
        // Other --tokens: refused, naming the training settings; nothing is changed.
        let other = try Self.fingerprint(Self.runner(d, tokens: 40_960), m)
        do {
            _ = try r.finishedResult(in: student, fingerprint: other)
            Issue.record("a student made with other settings was reused")
        } catch let e as SweepError {
            #expect(e.description.contains("other settings") && e.description.contains("training"))
            #expect(e.description.contains(student))
        }
        #expect(try String(contentsOfFile: student + "/sweep-settings.txt", encoding: .utf8) == fp)
        #expect(FileManager.default.fileExists(atPath: student + "/result.json"))
        // A damaged result is an error naming the file, not a silent retrain over it.
        try Data("{\"setting\":".utf8).write(to: URL(fileURLWithPath: student + "/result.json"))
        #expect(throws: SweepError.self) { try r.finishedResult(in: student, fingerprint: fp) }
    }

    @Test func resultWithoutRecordedSettingsIsReusedWithAWarning() throws {
        let d = try Self.scratch(); defer { try? FileManager.default.removeItem(atPath: d) }
        let student = d + "/students/ce-s1"
        try FileManager.default.createDirectory(atPath: student, withIntermediateDirectories: true)
        let result = SweepReportTests.result(.ce, ce: 5.5, flops: 1e12)
        try JSONEncoder().encode(result).write(to: URL(fileURLWithPath: student + "/result.json"))
        var lines: [String] = []
        var o = SweepOptions(teacherDirectory: "t", tokenizerPath: "tok", corpus: ["c"], evalCorpus: ["e"],
                             studentConfigPath: "s", output: d)
        o.tokens = 20_480
        let r = try SweepRunner(options: o, log: { lines.append($0) })
        #expect(try r.finishedResult(in: student, fingerprint: "anything") == result)
        #expect(lines.contains { $0.contains("reused unchecked") })
        #expect(!FileManager.default.fileExists(atPath: student + "/sweep-settings.txt"))
    }
}
