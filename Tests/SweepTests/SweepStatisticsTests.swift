import Foundation
import Testing
@testable import Distillation
@testable import Sweep

/// The report's findings: paired by seed, with 95% intervals, stated only where they exclude zero.
@Suite struct SweepStatisticsTests {
    @Test func pairedDifferenceAndItsInterval() throws {
        // d = 0.1, 0.2, 0.3: mean 0.2, sd 0.1, se 0.1/√3 = 0.057735; t(2) = 4.303 → ±0.248434.
        let a = [1: 1.1, 2: 1.2, 3: 1.3, 9: 5.0], b = [1: 1.0, 2: 1.0, 3: 1.0, 4: 7.0]
        let d = try #require(PairedDifference(a, b))
        #expect(d.seeds == 3 && abs(d.mean - 0.2) < 1e-12)
        let i = try #require(d.interval)
        #expect(abs(i.lower - (0.2 - 0.248434)) < 1e-5 && abs(i.upper - (0.2 + 0.248434)) < 1e-5)
        #expect(!d.isMeasurable)
        // d = -0.30, -0.32, -0.31, -0.29: mean -0.305, sd 0.012910, se 0.006455; t(3) = 3.182 → ±0.020540.
        let e = try #require(PairedDifference([1: 2.70, 2: 2.68, 3: 2.69, 4: 2.71], [1: 3, 2: 3, 3: 3, 4: 3]))
        let j = try #require(e.interval)
        #expect(abs(e.mean + 0.305) < 1e-12 && abs(j.upper - (-0.305 + 0.020540)) < 1e-5 && e.isMeasurable)
        // One common seed: a difference, no interval; none: nothing to compare.
        let one = try #require(PairedDifference([1: 2.0], [1: 2.5, 2: 1.0]))
        #expect(one.interval == nil && !one.isMeasurable && one.text == "Δ -0.500 (one seed)")
        #expect(PairedDifference([1: 2.0], [2: 2.0]) == nil)
    }

    static func report(_ ce: [(SweepArm, Int, Int, Double)]) -> SweepReport {
        let results = ce.map { policy, k, seed, value in
            SettingResult(setting: SweepSetting(policy: policy, k: k, lambda: 1, seed: seed), evaluation: SweepReportTests.evaluation(value),
                          trainLoss: value, tokens: 1000, seconds: 1, flops: 1e12, cacheBytesPerToken: policy == .ce ? 0 : Double(k),
                          capturedMass: nil)
        }
        return SweepReportTests.report(results: results)
    }

    @Test func findingsNeedTheirIntervalToExcludeZero() throws {
        // k=64 beats k=8 in every seed by ~0.3; the tail bucket differs from top-k by noise only.
        let r = Self.report([
            (.ce, 0, 1, 5.0), (.ce, 0, 2, 5.1), (.ce, 0, 3, 4.9),
            (.topk, 8, 1, 4.80), (.topk, 8, 2, 4.90), (.topk, 8, 3, 4.70),
            (.topk, 64, 1, 4.50), (.topk, 64, 2, 4.62), (.topk, 64, 3, 4.41),
            (.tail, 64, 1, 4.55), (.tail, 64, 2, 4.57), (.tail, 64, 3, 4.45),
        ])
        let more = try #require(r.summary.first { $0.hasPrefix("Top-k renormalised") })
        #expect(more.hasSuffix("more entries help, as Busbridge et al. (App. G.4) report.") && more.contains("3 seeds"))
        let tail = try #require(r.summary.first { $0.hasPrefix("Tail bucket at k=64") })
        #expect(tail.hasSuffix("no measurable difference."), "\(tail)")
        let best = try #require(r.summary.first { $0.hasPrefix("Best distilled student") })
        #expect(best.hasSuffix("distillation beat supervised training."))
        #expect(r.summary.last!.hasPrefix("Differences are paired by seed (3 seeds)"))
    }

    @Test func aContradictionIsStatedAsPlainlyAsAnAgreement() throws {
        // The tail bucket loses to renormalised top-k in every seed.
        let r = Self.report([
            (.ce, 0, 1, 5.0), (.ce, 0, 2, 5.0),
            (.topk, 64, 1, 4.50), (.topk, 64, 2, 4.52),
            (.tail, 64, 1, 4.80), (.tail, 64, 2, 4.81),
        ])
        let tail = try #require(r.summary.first { $0.hasPrefix("Tail bucket at k=64") })
        #expect(tail.hasSuffix("the tail bucket loses to renormalised top-k."), "\(tail)")
    }

    @Test func oneSeedSupportsNoFinding() throws {
        let r = Self.report([(.ce, 0, 1, 5.0), (.topk, 8, 1, 4.9), (.topk, 64, 1, 4.2)])
        let more = try #require(r.summary.first { $0.hasPrefix("Top-k renormalised") })
        #expect(more.hasSuffix("one seed, so no finding is supported."))
        #expect(r.summary.last!.hasPrefix("One seed: no difference above is a supported finding"))
    }
}

@Suite struct AmortisationEvidenceTests {
    static func result(_ policy: SweepArm, seconds: Double) -> SettingResult {
        SettingResult(setting: SweepSetting(policy: policy, k: policy == .topk ? 8 : 0, lambda: 1, seed: 1),
                      evaluation: SweepReportTests.evaluation(4.5), trainLoss: 4.5, tokens: 102_400, seconds: seconds,
                      flops: policy == .online ? 1e15 : 1e12, cacheBytesPerToken: 8, capturedMass: nil)
    }

    /// Pass 60 s (SweepReportTests' teacher pass, 300,000 tokens); cached students 10 s, online 40 s:
    /// n cached cost 60 + 10 n, online 40 n, so the cache is faster from n = 3 (90 < 120; 80 = 80 at 2).
    @Test func breakEvenInMeasuredSecondsAndEpochs() throws {
        let r = SweepReportTests.report(results: [Self.result(.ce, seconds: 9), Self.result(.topk, seconds: 10),
                                                  Self.result(.online, seconds: 40)])
        let e = try #require(r.amortisationEvidence)
        #expect(e.cacheTokens == 300_000 && abs(e.epochs - 102_400.0 / 300_000) < 1e-12)
        #expect(e.cachedStudentSeconds == 10 && e.onlineStudentSeconds == 40 && e.breakEvenSeconds == 3)
        let line = try #require(r.summary.first { $0.hasPrefix("Compute:") })
        #expect(line.contains("0.34 epochs of the 300000-token cache") && line.contains("Measured time agrees from n = 3"))
        // An online student faster than a cached one: time never pays the pass back, and says so.
        let slow = SweepReportTests.report(results: [Self.result(.ce, seconds: 9), Self.result(.topk, seconds: 50),
                                                     Self.result(.online, seconds: 40)])
        #expect(slow.amortisationEvidence?.breakEvenSeconds == nil)
    }
}

@Suite struct TemperatureAxisTests {
    @Test func temperaturesMultiplyTheTopKAndTailStudentsOnly() throws {
        var o = SweepOptions(teacherDirectory: "t", tokenizerPath: "tok", corpus: ["c"], evalCorpus: ["e"], studentConfigPath: "s", output: "o")
        o.ks = [4, 16]; o.policies = [.topk, .tail, .sampled]; o.temperatures = [1, 2]
        let names = try SweepRunner(options: o, log: { _ in }).settings.map(\.name)
        #expect(names == ["ce-s1",
                          "topk-k4-l1-s1", "topk-k4-l1-t2-s1", "topk-k16-l1-s1", "topk-k16-l1-t2-s1",
                          "tail-k4-l1-s1", "tail-k4-l1-t2-s1", "tail-k16-l1-s1", "tail-k16-l1-t2-s1",
                          "sampled-k50-l1-s1"])
        o.temperatures = [0]
        #expect(throws: SweepError.self) { try o.validate() }
    }

    @Test func aSettingWithoutTemperatureReadsAsTauOne() throws {
        let old = try JSONDecoder().decode(SweepSetting.self, from: Data(#"{"policy": "topk", "k": 16, "lambda": 1, "seed": 2}"#.utf8))
        #expect(old == SweepSetting(policy: .topk, k: 16, lambda: 1, seed: 2) && old.temperature == 1 && old.name == "topk-k16-l1-s2")
    }

    @Test func aTemperatureIsComparedWithTauOne() throws {
        let results = [(Float(1), 4.50), (1, 4.52), (2, 4.80), (2, 4.83)].enumerated().map { i, x in
            SettingResult(setting: SweepSetting(policy: .topk, k: 16, lambda: 1, seed: i % 2 + 1, temperature: x.0),
                          evaluation: SweepReportTests.evaluation(x.1), trainLoss: x.1, tokens: 1000, seconds: 1, flops: 1e12,
                          cacheBytesPerToken: 16, capturedMass: nil)
        } + [SweepReportTests.result(.ce, seed: 1, ce: 5, flops: 1e12), SweepReportTests.result(.ce, seed: 2, ce: 5, flops: 1e12)]
        let r = SweepReportTests.report(results: results)
        let line = try #require(r.summary.first { $0.hasPrefix("τ=2 for topk k=16") })
        #expect(line.hasSuffix("τ=1 stays best here, as Busbridge et al. (App. G) recommend."), "\(line)")
        #expect(r.groups.contains { $0.name == "topk k=16 λ=1 τ=2" && $0.temperature == 2 })
    }
}
