import Foundation
import Testing
@testable import Distillation
@testable import ScalingLaws
@testable import Sweep

/// The report's scaling-law and compute sections, and its PNG step, on hand-made results.
@Suite struct SweepReportTests {
    static func evaluation(_ ce: Double) -> Evaluation {
        Evaluation(crossEntropy: ce, tokens: 1000, accuracy: 0.3, calibrationError: 0.02, overconfidence: 0.01, klToTeacher: 0.5)
    }

    static func result(_ policy: SweepArm, k: Int = 0, lambda: Float = 1, seed: Int = 1, ce: Double, flops: Double) -> SettingResult {
        SettingResult(setting: SweepSetting(policy: policy, k: k, lambda: lambda, seed: seed), evaluation: evaluation(ce),
                      trainLoss: ce, tokens: 102_400, seconds: 1, flops: flops, cacheBytesPerToken: policy == .ce ? 0 : 10,
                      capturedMass: nil)
    }

    static let sizes = SweepModelSizes(studentNonEmbedding: 400_000, teacherNonEmbedding: 3_200_000, aspectRatio: 64,
                                       contextLength: 256, vocabularySize: 8000)

    static func report(law: DistillationLaw? = nil, results: [SettingResult]? = nil) -> SweepReport {
        var o = SweepOptions(teacherDirectory: "t", tokenizerPath: "tok", corpus: ["c"], evalCorpus: ["e"],
                             studentConfigPath: "s", output: "o")
        if let law { o.law = law; o.lawSource = "test coefficients" }
        let pass = TeacherPassSummary(policy: "top-k", tokens: 300_000, bytes: 30_000_000, seconds: 60, flops: 2e15,
                                      parameters: 5_000_000, teacherEval: evaluation(3.9))
        let rs = results ?? [result(.ce, ce: 4.8, flops: 1e15), result(.topk, k: 1, ce: 6.2, flops: 1.1e15),
                             result(.topk, k: 64, ce: 4.5, flops: 1.2e15), result(.online, ce: 4.4, flops: 3e15)]
        return SweepReport(options: o, teacherPass: pass, results: rs, studentParameters: 1_420_000, sizes: sizes)
    }

    @Test func baselineIsComparedWithEquation1AndStudentsWithEquation8() throws {
        let distillation = DistillationCoefficients(c0: 0.5, c1: 0.8, d1: 1.2, f1: 0.3, A: 2000, B: 9000, alpha: 0.4,
                                                    beta: 0.45, gamma: 0.5)
        let law = DistillationLaw(supervised: .busbridge2025, distillation: distillation)
        let c = try #require(Self.report(law: law).law)
        // Independent evaluation of Eq. 1 and Eq. 8 at N_S = 4e5, D_S = 102,400, L_T = 3.9.
        let s = SupervisedCoefficients.busbridge2025
        let N = 400_000.0, D = 102_400.0, LT = 3.9
        let supervised = s.E + pow(s.A / pow(N, s.alpha) + s.B / pow(D, s.beta), s.gamma)
        let gap = pow(1 + pow(LT / (supervised * 1.2), 1 / 0.3), -0.8 * 0.3)
        let distilled = LT + pow(LT, -0.5) * gap * pow(2000 / pow(N, 0.4) + 9000 / pow(D, 0.45), 0.5)
        #expect(abs(c.supervisedPrediction - supervised) < 1e-12)
        #expect(c.teacherLoss == 3.9 && c.studentTokens == D && c.studentParameters == N)
        let baseline = try #require(c.rows.first { $0.name == "ce" })
        let basePredicted = try #require(baseline.predicted), baseError = try #require(baseline.relativeError)
        #expect(baseline.law == "Eq. 1" && abs(basePredicted - supervised) < 1e-12)
        #expect(abs(baseError - (supervised - 4.8) / 4.8) < 1e-12)
        let top1 = try #require(c.rows.first { $0.name == "topk k=1 λ=1" })
        let top1Predicted = try #require(top1.predicted)
        #expect(top1.law == "Eq. 8" && abs(top1Predicted - distilled) < 1e-12 && top1.observed == 6.2)
        #expect(Self.report(law: law).lawMarkdown().contains("| topk k=1 λ=1 | Eq. 8 | \(String(format: "%.3f", distilled)) | 6.200 |"))
    }

    @Test func withoutDistillationCoefficientsEquation8RowsStayEmpty() throws {
        let r = Self.report(law: DistillationLaw(supervised: .busbridge2025, distillation: nil))
        let c = try #require(r.law)
        #expect(c.rows.filter { $0.law == "Eq. 8" }.allSatisfy { $0.predicted == nil && $0.relativeError == nil })
        #expect(c.rows.first { $0.law == "Eq. 1" }?.predicted != nil)
        #expect(r.lawMarkdown().contains("no distillation coefficients"))
        #expect(r.summary.contains { $0.hasPrefix("Supervised law (Eq. 1") })
    }

    @Test func publishedCoefficientsAreTheDefaultAndPredictEveryDistilledStudent() throws {
        let r = Self.report()
        let c = try #require(r.law)
        #expect(c.coefficientsSource == "Busbridge et al. 2025, Table 6" && c.coefficients == .busbridge2025)
        let expected = try #require(DistillationLaw.busbridge2025.studentLoss(studentParameters: 400_000, studentTokens: 102_400,
                                                                              teacherLoss: 3.9))
        let distilled = c.rows.filter { $0.law == "Eq. 8" }
        #expect(distilled.count == 3 && distilled.allSatisfy { $0.predicted == expected })
        #expect(!r.lawMarkdown().contains("no distillation coefficients"))
        let finding = try #require(r.summary.first { $0.hasPrefix("Supervised law (Eq. 1") })
        #expect(finding.contains(String(format: "Eq. 8) at the measured L_T = 3.900 predicts %.3f", expected)))
        #expect(finding.contains("observed 4.400 to 6.200"))
    }

    @Test func measuredComputeAccumulatesTheRealStudents() throws {
        let r = Self.report(results: [Self.result(.ce, ce: 4.8, flops: 1e15), Self.result(.topk, k: 1, ce: 6, flops: 1e15),
                                      Self.result(.tail, k: 4, ce: 5, flops: 2e15), Self.result(.sampled, k: 50, ce: 5, flops: 4e15),
                                      Self.result(.online, ce: 4.4, flops: 3e15), Self.result(.online, seed: 2, ce: 4.4, flops: 5e15)])
        let m = try #require(r.measuredCompute)
        #expect(m.map(\.students) == [1, 2, 3])
        // The supervised baseline reads no cache and is not a cache student.
        #expect(m.map(\.cachedFLOPs) == [3e15, 5e15, 9e15])
        #expect(m.map(\.onlineFLOPs) == [3e15, 8e15, nil])
    }

    @Test func modelledCurveIsThePapersAccounting() throws {
        let r = Self.report()
        let m = try #require(r.modelledAmortisation)
        let model = AmortisationModel(teacherParameters: 3_200_000, studentParameters: 400_000, studentTokens: 102_400, students: 1,
                                      forward: Self.sizes.forward)
        #expect(m.points.count == r.amortisation.count)
        for p in m.points {
            let FT = model.teacherForward, FS = model.studentForward, S = Double(p.students), D = 102_400.0
            #expect(abs(p.cachedFLOPs - (S * 3 * FS * D + FT * D)) <= 1e-9 * p.cachedFLOPs)
            #expect(abs(p.onlineFLOPs - (S * 3 * FS * D + S * FT * D)) <= 1e-9 * p.onlineFLOPs)
        }
        #expect(m.breakEvenStudents == 2)
        let svg = try #require(r.plots().first { $0.0 == "compute_vs_students.svg" }).1.render()
        #expect(svg.contains("cached, measured") && svg.contains("paper&apos;s F(N)") == false && svg.contains("paper's F(N)"))
    }

    @Test func plotsBecomePNGsThroughTheConverterAndAFailingConverterIsNamed() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sweep-report-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // A stand-in with rsvg-convert's command line: -f png -o OUT IN.
        let fake = dir + "/fake-convert"
        try "#!/bin/sh\nprintf 'PNG of %s' \"$5\" > \"$4\"\n".write(toFile: fake, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: fake)
        let r = Self.report()
        try r.write(to: dir, pngConverter: fake)
        for name in ["ce_vs_k", "ce_vs_bytes", "compute_vs_students"] {
            let png = try String(contentsOfFile: dir + "/\(name).png", encoding: .utf8)
            #expect(png == "PNG of \(dir)/\(name).svg")
        }
        let failing = dir + "/failing-convert"
        try "#!/bin/sh\necho 'cannot parse' >&2\nexit 3\n".write(toFile: failing, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: failing)
        do {
            try r.write(to: dir, pngConverter: failing)
            Issue.record("a failing converter must throw")
        } catch let e as SweepError {
            #expect(e.description.contains("ce_vs_k.svg") && e.description.contains("exit 3") && e.description.contains("cannot parse"))
        }
        // The real converter, when this machine has it, writes real PNGs.
        if let real = SweepReport.defaultPNGConverter() {
            try r.write(to: dir, pngConverter: real)
            let bytes = try Data(contentsOf: URL(fileURLWithPath: dir + "/ce_vs_k.png"))
            #expect(bytes.prefix(8) == Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]))
        }
    }
}
