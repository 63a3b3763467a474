import Foundation
import Distillation
import ScalingLaws

/// The sweep's results: what `report.json` holds (schema: `Schemas/report.schema.json`).
public struct SweepReport: Codable, Sendable {
    /// Mean and spread over seeds of one setting.
    public struct Group: Codable, Sendable {
        public var name: String
        public var policy: SweepArm
        public var k: Int
        public var lambda: Float
        /// Distillation temperature τ.
        public var temperature: Float
        public var seeds: Int
        public var evalCrossEntropy: Double
        /// Standard deviation over seeds (0 for one seed).
        public var evalCrossEntropySpread: Double
        /// Eval CE minus the untruncated reference's (online full teacher), when measured.
        public var deltaToReference: Double?
        /// Eval CE minus the supervised baseline's.
        public var deltaToBaseline: Double
        public var calibrationError: Double
        public var overconfidence: Double
        public var klToTeacher: Double
        public var cacheBytesPerToken: Double
        public var capturedMass: Double?
        public var seconds: Double
        public var flops: Double
    }

    /// Total compute for n students.
    public struct AmortisationPoint: Codable, Sendable {
        public var students: Int
        public var cachedFLOPs: Double
        public var onlineFLOPs: Double
    }

    public var version = 1
    public var createdAt: String
    public var settings: [String: String]
    public var studentParameters: Int
    public var teacherPass: TeacherPassSummary
    public var results: [SettingResult]
    public var groups: [Group]
    public var amortisation: [AmortisationPoint]
    /// Smallest number of students for which one cached pass costs less than online teachers.
    public var breakEvenStudents: Int?
    /// What the break-even rests on: epochs over the cache and measured times.
    public var amortisationEvidence: AmortisationEvidence?
    /// Model sizes behind the law and the modelled compute.
    public var sizes: SweepModelSizes?
    /// The same comparison under the paper's FLOP accounting (the modelled curve).
    public var modelledAmortisation: ModelledAmortisation?
    /// Cumulative compute this sweep really spent, student by student (the measured points).
    public var measuredCompute: [MeasuredCompute]?
    /// Predicted (Eq. 1 / Eq. 8) vs observed student cross-entropy.
    public var law: LawComparison?
    public var summary: [String]

    init(options o: SweepOptions, teacherPass: TeacherPassSummary, results: [SettingResult], studentParameters: Int,
         sizes: SweepModelSizes? = nil) {
        createdAt = ISO8601DateFormatter().string(from: Date())
        settings = ["teacher": o.teacherDirectory, "student": o.studentConfigPath, "corpus": o.corpus.joined(separator: " "),
                    "eval": o.evalCorpus.joined(separator: " "), "k": o.ks.map(String.init).joined(separator: ","),
                    "policies": o.policies.map(\.rawValue).joined(separator: ","), "lambda": o.lambdas.map { String(format: "%g", $0) }.joined(separator: ","),
                    "temperatures": o.temperatures.map { String(format: "%g", $0) }.joined(separator: ","),
                    "samples": "\(o.samples)", "seeds": "\(o.seeds)", "tokens_per_student": "\(o.tokens)",
                    "context": "\(o.context)", "batch": "\(o.batch)", "lr": String(format: "%g", o.learningRate),
                    "eval_windows": "\(o.evalWindows)", "threads": "\(o.threads)"]
        self.studentParameters = studentParameters
        self.teacherPass = teacherPass
        self.results = results
        var order: [String] = []
        var bySetting: [String: [SettingResult]] = [:]
        for r in results {
            if bySetting[r.setting.group] == nil { order.append(r.setting.group) }
            bySetting[r.setting.group, default: []].append(r)
        }
        func mean(_ v: [Double]) -> Double { v.reduce(0, +) / Double(max(v.count, 1)) }
        func spread(_ v: [Double]) -> Double {
            guard v.count > 1 else { return 0 }
            let m = mean(v)
            return (v.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Double(v.count - 1)).squareRoot()
        }
        let baseline = mean(bySetting["ce"]?.map(\.evaluation.crossEntropy) ?? [])
        let reference = bySetting["online"].map { mean($0.map(\.evaluation.crossEntropy)) }
        groups = order.map { name in
            let rs = bySetting[name]!, s = rs[0].setting
            let ce = rs.map(\.evaluation.crossEntropy)
            return Group(name: name, policy: s.policy, k: s.k, lambda: s.lambda, temperature: s.temperature, seeds: rs.count,
                         evalCrossEntropy: mean(ce),
                         evalCrossEntropySpread: spread(ce), deltaToReference: reference.map { mean(ce) - $0 },
                         deltaToBaseline: mean(ce) - baseline, calibrationError: mean(rs.map(\.evaluation.calibrationError)),
                         overconfidence: mean(rs.map(\.evaluation.overconfidence)),
                         klToTeacher: mean(rs.map { $0.evaluation.klToTeacher ?? .nan }),
                         cacheBytesPerToken: rs[0].cacheBytesPerToken, capturedMass: rs[0].capturedMass,
                         seconds: mean(rs.map(\.seconds)), flops: mean(rs.map(\.flops)))
        }
        // Compute for n students: one cached pass + n students, against n students each running
        // the teacher over its own training tokens.
        let cacheStudents = results.filter { $0.setting.policy != .online }
        let studentFLOPs = mean(cacheStudents.map(\.flops))
        let studentTokens = mean(cacheStudents.map { Double($0.tokens) })
        let teacherPerToken = teacherPass.flops / Double(max(teacherPass.tokens, 1))
        let onlinePerStudent = results.first { $0.setting.policy == .online }?.flops ?? (studentFLOPs + teacherPerToken * studentTokens)
        amortisation = (1...32).map { n in
            AmortisationPoint(students: n, cachedFLOPs: teacherPass.flops + Double(n) * studentFLOPs,
                              onlineFLOPs: Double(n) * onlinePerStudent)
        }
        breakEvenStudents = amortisation.first { $0.cachedFLOPs < $0.onlineFLOPs }?.students
        amortisationEvidence = AmortisationEvidence(results: results, teacherPass: teacherPass)
        measuredCompute = Self.measuredCompute(results: results, teacherPassFLOPs: teacherPass.flops)
        self.sizes = sizes
        if let sizes {
            modelledAmortisation = Self.modelledAmortisation(sizes: sizes, studentTokens: studentTokens,
                                                             upTo: max(amortisation.count, measuredCompute?.count ?? 0))
            law = Self.lawComparison(groups: groups, law: o.law, source: o.lawSource, sizes: sizes, studentTokens: studentTokens,
                                     teacherLoss: teacherPass.teacherEval.crossEntropy)
        }
        summary = []
        summary = Self.findings(groups: groups, results: results, baseline: baseline, teacher: teacherPass,
                                breakEven: breakEvenStudents, evidence: amortisationEvidence)
        if let law, let line = Self.lawFinding(law) { summary.insert(line, at: summary.count - 1) }
    }

    /// Plain-language findings, each stated from the measured numbers. Every comparison is
    /// paired by seed with a 95% interval (``PairedDifference``) and stated as a finding only
    /// where the interval excludes zero; agreements and contradictions with the papers alike.
    static func findings(groups: [Group], results: [SettingResult], baseline: Double, teacher: TeacherPassSummary,
                         breakEven: Int?, evidence: AmortisationEvidence? = nil) -> [String] {
        var out: [String] = []
        func f(_ v: Double) -> String { String(format: "%.3f", v) }
        func perSeed(_ g: Group, _ value: (SettingResult) -> Double) -> [Int: Double] {
            Dictionary(results.filter { $0.setting.group == g.name }.map { ($0.setting.seed, value($0)) }, uniquingKeysWith: { a, _ in a })
        }
        func ce(_ g: Group) -> [Int: Double] { perSeed(g) { $0.evaluation.crossEntropy } }
        func diff(_ a: Group, _ b: Group) -> PairedDifference? { PairedDifference(ce(a), ce(b)) }
        out.append("Teacher eval CE \(f(teacher.teacherEval.crossEntropy)) nats/token; supervised student baseline \(f(baseline)).")
        let distilled = groups.filter { $0.policy != .ce }
        let base = groups.first { $0.policy == .ce }
        if let best = distilled.min(by: { $0.evalCrossEntropy < $1.evalCrossEntropy }), let base {
            out.append(finding("Best distilled student \(best.name) (\(f(best.evalCrossEntropy))) against the supervised baseline (\(f(baseline)))",
                               diff(best, base), lower: "distillation beat supervised training",
                               higher: "no distilled student beat the supervised baseline: at this budget distillation did not help"))
        }
        let topk = distilled.filter { $0.policy == .topk && $0.lambda == 1 && $0.temperature == 1 }.sorted { $0.k < $1.k }
        if topk.count >= 2, let lo = topk.first, let hi = topk.last {
            out.append(finding("Top-k renormalised (λ=1), k=\(hi.k) (\(f(hi.evalCrossEntropy))) against k=\(lo.k) (\(f(lo.evalCrossEntropy)))",
                               diff(hi, lo), lower: "more entries help, as Busbridge et al. (App. G.4) report",
                               higher: "more entries cost loss here, contrary to Busbridge et al. (App. G.4)"))
            if lo.k == 1 {
                let over = PairedDifference(perSeed(lo) { $0.evaluation.overconfidence }, perSeed(hi) { $0.evaluation.overconfidence })
                out.append(finding("Top-1 overconfidence (mean confidence − accuracy) \(String(format: "%+.3f", lo.overconfidence)) against k=\(hi.k)'s \(String(format: "%+.3f", hi.overconfidence))",
                                   over, lower: "top-1 students are less overconfident here, unlike the paper's warning",
                                   higher: "top-1 students are the more overconfident, in the direction the paper warns of"))
            }
        }
        if let reference = groups.first(where: { $0.policy == .online }), let hi = topk.last {
            out.append(finding("Top-\(hi.k) renormalised (\(f(hi.evalCrossEntropy))) against the untruncated online teacher (\(f(reference.evalCrossEntropy)))",
                               diff(hi, reference), lower: "the truncated cache beat the full distribution here",
                               higher: "truncation costs loss against the full distribution, as App. G.4 reports"))
        }
        for g in distilled where g.temperature != 1 {
            if let same = distilled.first(where: { $0.policy == g.policy && $0.k == g.k && $0.lambda == g.lambda && $0.temperature == 1 }) {
                out.append(finding("τ=\(String(format: "%g", g.temperature)) for \(g.policy) k=\(g.k) λ=\(String(format: "%g", g.lambda)) (\(f(g.evalCrossEntropy))) against τ=1 (\(f(same.evalCrossEntropy)))",
                                   diff(g, same), lower: "τ=\(String(format: "%g", g.temperature)) helped here",
                                   higher: "τ=1 stays best here, as Busbridge et al. (App. G) recommend"))
            }
        }
        for g in distilled where g.lambda < 1 && g.policy == .topk && g.temperature == 1 {
            if let same = topk.first(where: { $0.k == g.k }) {
                out.append(finding("λ=\(String(format: "%g", g.lambda)) at k=\(g.k) (\(f(g.evalCrossEntropy))) against λ=1 (\(f(same.evalCrossEntropy)))",
                                   diff(g, same), lower: "mixing in hard labels recovers loss, as in App. G.4",
                                   higher: "mixing in hard labels cost loss here, contrary to App. G.4"))
            }
        }
        for tail in distilled where tail.policy == .tail && tail.temperature == 1 {
            if let same = topk.first(where: { $0.k == tail.k }) {
                out.append(finding("Tail bucket at k=\(tail.k) (\(f(tail.evalCrossEntropy))) against renormalised top-k (\(f(same.evalCrossEntropy)))",
                                   diff(tail, same), lower: "the exact tail mass helps", higher: "the tail bucket loses to renormalised top-k"))
            }
        }
        if let sampled = distilled.first(where: { $0.policy == .sampled }),
           let c = topk.min(by: { abs($0.cacheBytesPerToken - sampled.cacheBytesPerToken) < abs($1.cacheBytesPerToken - sampled.cacheBytesPerToken) }) {
            out.append(finding("Sampled (\(sampled.k) draws, \(String(format: "%.1f", sampled.cacheBytesPerToken)) B/token, \(f(sampled.evalCrossEntropy))) against the top-k cache closest in bytes (k=\(c.k), \(String(format: "%.1f", c.cacheBytesPerToken)) B/token, \(f(c.evalCrossEntropy)))",
                               diff(sampled, c), lower: "sampling wins at similar bytes, as Anshumann et al. report",
                               higher: "sampling lost at similar bytes here, contrary to Anshumann et al."))
        }
        if let n = breakEven {
            var line = "Compute: one cached teacher pass plus n students costs fewer FLOPs than n online-teacher students from n = \(n)"
            if let e = evidence {
                line += String(format: "; each student reads %.2f epochs of the %d-token cache, so an online teacher runs %.2f passes' worth per student", e.epochs, e.cacheTokens, e.epochs)
                if let s = e.breakEvenSeconds {
                    line += String(format: ". Measured time agrees from n = %d (pass %.1f s; a cached student %.1f s, an online one %.1f s)", s, e.passSeconds, e.cachedStudentSeconds, e.onlineStudentSeconds ?? .nan)
                } else if let o = e.onlineStudentSeconds {
                    line += String(format: ". Measured time does not agree: a cached student took %.1f s against %.1f s online, so the %.1f s pass never pays back", e.cachedStudentSeconds, o, e.passSeconds)
                } else {
                    line += "; no online student was timed (--online), so only FLOPs speak for it"
                }
            }
            out.append(line + ".")
        }
        let seeds = Set(results.map(\.setting.seed)).count
        out.append(seeds >= 2
                   ? "Differences are paired by seed (\(seeds) seeds) with 95% Student-t intervals; a finding is stated only where the interval excludes zero. Small models and one corpus: these say what happened here, not what holds at scale."
                   : "One seed: no difference above is a supported finding (run with --seeds 2 or more for intervals).")
        return out
    }

    /// Writes report.json, report.md and the SVG plots into `directory`, and a PNG beside each
    /// plot when a converter is given (by default `rsvg-convert` when it is on the PATH; Debian
    /// package `librsvg2-bin`).
    ///
    /// - Throws: file errors; ``SweepError/failed(_:)`` naming the plot when the converter fails.
    public func write(to directory: String, pngConverter: String? = SweepReport.defaultPNGConverter()) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        try encoder.encode(self).write(to: URL(fileURLWithPath: directory + "/report.json"), options: .atomic)
        try markdown().write(toFile: directory + "/report.md", atomically: true, encoding: .utf8)
        for (name, plot) in plots() {
            let svg = directory + "/" + name
            try plot.render().write(toFile: svg, atomically: true, encoding: .utf8)
            if let pngConverter { try Self.convertToPNG(svg: svg, converter: pngConverter) }
        }
    }

    /// `rsvg-convert` from the PATH, or nil.
    public static func defaultPNGConverter() -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for dir in path.split(separator: ":") where !dir.isEmpty {
            let candidate = String(dir) + "/rsvg-convert"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }

    /// Runs `converter -f png -o X.png X.svg` (rsvg-convert's command line).
    static func convertToPNG(svg: String, converter: String) throws {
        let png = String(svg.dropLast(4)) + ".png"
        let p = Process()
        p.executableURL = URL(fileURLWithPath: converter)
        p.arguments = ["-f", "png", "-o", png, svg]
        p.standardOutput = FileHandle.nullDevice
        let errors = Pipe()
        p.standardError = errors
        do { try p.run() } catch { throw SweepError.failed("cannot run PNG converter \(converter) for \(svg): \(error)") }
        let message = errors.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0, FileManager.default.fileExists(atPath: png) else {
            let text = String(decoding: message, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            throw SweepError.failed("PNG converter \(converter) failed on \(svg) (exit \(p.terminationStatus))\(text.isEmpty ? "" : ": " + text)")
        }
    }

    func plots() -> [(String, SVGPlot)] {
        var references: [SVGPlot.Reference] = []
        if let b = groups.first(where: { $0.policy == .ce }) { references.append(.init(label: "supervised", y: b.evalCrossEntropy)) }
        if let r = groups.first(where: { $0.policy == .online }) { references.append(.init(label: "online full teacher", y: r.evalCrossEntropy)) }
        references.append(.init(label: "teacher", y: teacherPass.teacherEval.crossEntropy))
        var byK: [String: [(x: Double, y: Double)]] = [:], byBytes: [String: [(x: Double, y: Double)]] = [:]
        var labels: [String] = []
        for g in groups where g.policy.targetMode != nil {
            let label = g.policy == .sampled ? "sampled" : "\(g.policy) λ=\(String(format: "%g", g.lambda))"
            if byK[label] == nil { labels.append(label) }
            byK[label, default: []].append((Double(g.k), g.evalCrossEntropy))
            byBytes[label, default: []].append((g.cacheBytesPerToken, g.evalCrossEntropy))
        }
        var ceK = SVGPlot(title: "Student eval CE vs k", xLabel: "k (entries per token; draws for sampled)", yLabel: "eval CE (nats/token)", logX: true)
        var ceBytes = SVGPlot(title: "Student eval CE vs cache bytes", xLabel: "cache bytes per token", yLabel: "eval CE (nats/token)", logX: true)
        for l in labels {
            ceK.series.append(.init(label: l, points: byK[l]!))
            ceBytes.series.append(.init(label: l, points: byBytes[l]!))
        }
        ceK.references = references
        ceBytes.references = references
        var compute = SVGPlot(title: "Total compute vs number of students", xLabel: "students", yLabel: "PFLOPs")
        let curve = modelledAmortisation?.points ?? amortisation
        let model = modelledAmortisation == nil ? "measured cost per student" : "paper's F(N)"
        compute.series.append(.init(label: "cached, \(model)", points: curve.map { (Double($0.students), $0.cachedFLOPs / 1e15) }, markers: false))
        compute.series.append(.init(label: "online, \(model)", points: curve.map { (Double($0.students), $0.onlineFLOPs / 1e15) }, dashed: true, markers: false))
        let measured = measuredCompute ?? []
        let cachedPoints = measured.compactMap { m in m.cachedFLOPs.map { (Double(m.students), $0 / 1e15) } }
        let onlinePoints = measured.compactMap { m in m.onlineFLOPs.map { (Double(m.students), $0 / 1e15) } }
        if !cachedPoints.isEmpty { compute.series.append(.init(label: "cached, measured", points: cachedPoints, line: false)) }
        if !onlinePoints.isEmpty { compute.series.append(.init(label: "online, measured", points: onlinePoints, line: false)) }
        return [("ce_vs_k.svg", ceK), ("ce_vs_bytes.svg", ceBytes), ("compute_vs_students.svg", compute)]
    }

    func markdown() -> String {
        func f(_ v: Double?, _ p: Int = 3) -> String { v.map { $0.isFinite ? String(format: "%.\(p)f", $0) : "–" } ?? "–" }
        var s = "# LogitCache truncation sweep\n\n"
        s += "Teacher pass: \(teacherPass.policy), \(teacherPass.tokens) tokens, \(teacherPass.bytes) bytes "
        s += "(\(f(Double(teacherPass.bytes) / Double(max(teacherPass.tokens, 1)), 1)) B/token), \(f(teacherPass.seconds, 1)) s. "
        s += "Teacher: \(teacherPass.parameters) parameters, eval CE \(f(teacherPass.teacherEval.crossEntropy)). "
        s += "Students: \(studentParameters) parameters, \(settings["tokens_per_student"] ?? "?") tokens each.\n\n"
        s += "| setting | seeds | eval CE | ± | Δ baseline | Δ reference | KL to teacher | ECE | overconf. | B/token | mass | s |\n"
        s += "|---|---|---|---|---|---|---|---|---|---|---|---|\n"
        for g in groups {
            s += "| \(g.name) | \(g.seeds) | \(f(g.evalCrossEntropy)) | \(f(g.evalCrossEntropySpread)) | \(String(format: "%+.3f", g.deltaToBaseline)) | "
            s += "\(g.deltaToReference.map { String(format: "%+.3f", $0) } ?? "–") | \(f(g.klToTeacher)) | \(f(g.calibrationError)) | "
            s += "\(String(format: "%+.3f", g.overconfidence)) | \(g.cacheBytesPerToken > 0 ? f(g.cacheBytesPerToken, 1) : "–") | \(f(g.capturedMass)) | \(f(g.seconds, 0)) |\n"
        }
        s += "\nΔ reference: against the student distilled from the full teacher run inside the loop (when `--online`). "
        s += "Mass: mean teacher probability of the entries the student reads (for sampled: of the distinct drawn ids found in the stored head, a lower bound).\n\n"
        s += "## Findings\n\n" + summary.map { "- " + $0 }.joined(separator: "\n") + "\n\n"
        s += lawMarkdown()
        s += "## Plots\n\n![CE vs k](ce_vs_k.svg)\n\n![CE vs bytes](ce_vs_bytes.svg)\n\n![compute](compute_vs_students.svg)\n"
        return s
    }
}
