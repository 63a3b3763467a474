import Foundation
import ScalingLaws

/// The sizes the scaling-law parts of a report need, read from the two model configs.
public struct SweepModelSizes: Codable, Sendable, Equatable {
    /// N_S: the student's non-embedding parameters (all parameters minus the token embedding
    /// and, when untied, the output head), as the paper counts N.
    public var studentNonEmbedding: Double
    /// N_T: the teacher's non-embedding parameters.
    public var teacherNonEmbedding: Double
    /// d_model / n_layers of the student (the paper's F(N) assumes one aspect ratio for all sizes).
    public var aspectRatio: Double
    /// Attention context of the students, tokens.
    public var contextLength: Double
    /// Vocabulary size (the output-logits term of F(N)).
    public var vocabularySize: Double

    public init(studentNonEmbedding: Double, teacherNonEmbedding: Double, aspectRatio: Double,
                contextLength: Double, vocabularySize: Double) {
        self.studentNonEmbedding = studentNonEmbedding; self.teacherNonEmbedding = teacherNonEmbedding
        self.aspectRatio = aspectRatio; self.contextLength = contextLength; self.vocabularySize = vocabularySize
    }

    /// F(N) with the attention-context and vocabulary terms for these shapes.
    var forward: ForwardCost {
        .shaped(TransformerShape(contextLength: contextLength, vocabularySize: vocabularySize, aspectRatio: aspectRatio))
    }
}

extension SweepReport {
    /// Student cross-entropy predicted by the scaling laws beside what the sweep measured.
    public struct LawComparison: Codable, Sendable {
        public struct Row: Codable, Sendable {
            /// The setting group (as in ``SweepReport/groups``).
            public var name: String
            /// Measured eval cross-entropy, mean over seeds, nats/token.
            public var observed: Double
            /// `Eq. 1` for the supervised baseline, `Eq. 8` for distilled students.
            public var law: String
            /// The law's prediction; absent when the law has no coefficients (Eq. 8 without
            /// distillation coefficients).
            public var predicted: Double?
            /// (predicted − observed) / observed, when predicted.
            public var relativeError: Double?
        }
        /// Where the coefficients came from (the built-in paper values, or a file).
        public var coefficientsSource: String
        public var coefficients: DistillationLaw
        /// N_S, non-embedding parameters.
        public var studentParameters: Double
        /// D_S, training tokens per student.
        public var studentTokens: Double
        /// L_T: the teacher's measured eval cross-entropy, the input Eq. 8 takes.
        public var teacherLoss: Double
        /// L~_S: Eq. 1 at (N_S, D_S).
        public var supervisedPrediction: Double
        public var rows: [Row]
    }

    /// Compares every group with the law: the supervised baseline with Eq. 1, the distilled
    /// students with Eq. 8 (given the measured teacher loss).
    static func lawComparison(groups: [Group], law: DistillationLaw, source: String, sizes: SweepModelSizes,
                              studentTokens DS: Double, teacherLoss LT: Double) -> LawComparison {
        let NS = sizes.studentNonEmbedding
        let supervised = law.supervised.loss(parameters: NS, tokens: DS)
        let distilled = law.studentLoss(studentParameters: NS, studentTokens: DS, teacherLoss: LT)
        let rows = groups.map { g -> LawComparison.Row in
            let isBaseline = g.policy == .ce
            let p = isBaseline ? supervised : distilled
            return .init(name: g.name, observed: g.evalCrossEntropy, law: isBaseline ? "Eq. 1" : "Eq. 8", predicted: p,
                         relativeError: p.map { ($0 - g.evalCrossEntropy) / g.evalCrossEntropy })
        }
        return LawComparison(coefficientsSource: source, coefficients: law, studentParameters: NS, studentTokens: DS,
                             teacherLoss: LT, supervisedPrediction: supervised, rows: rows)
    }

    /// Total compute for n students under the paper's accounting (Eq. 9 with the shaped F(N)):
    /// teacher-inference scenario, one cached pass over D_S against the teacher inside every loop.
    public struct ModelledAmortisation: Codable, Sendable {
        public var forward: ForwardCost
        public var points: [AmortisationPoint]
        /// Smallest n for which the cached arm is strictly cheaper (``BreakEven``).
        public var breakEvenStudents: Int?
    }

    static func modelledAmortisation(sizes: SweepModelSizes, studentTokens DS: Double, upTo n: Int) -> ModelledAmortisation {
        let model = AmortisationModel(teacherParameters: sizes.teacherNonEmbedding, studentParameters: sizes.studentNonEmbedding,
                                      studentTokens: DS, students: 1, forward: sizes.forward)
        let points = model.curve(.teacherInference, students: 1...max(1, n)).map {
            AmortisationPoint(students: $0.students, cachedFLOPs: $0.cached, onlineFLOPs: $0.online)
        }
        return ModelledAmortisation(forward: sizes.forward, points: points, breakEvenStudents: model.breakEven.students)
    }

    /// What the sweep really spent after its n-th student: the teacher pass plus the first n
    /// cache students' measured FLOPs, and the first n online students' measured FLOPs.
    public struct MeasuredCompute: Codable, Sendable {
        public var students: Int
        public var cachedFLOPs: Double?
        public var onlineFLOPs: Double?
    }

    static func measuredCompute(results: [SettingResult], teacherPassFLOPs: Double) -> [MeasuredCompute] {
        let cached = results.filter { $0.setting.policy.targetMode != nil }.map(\.flops)
        let online = results.filter { $0.setting.policy == .online }.map(\.flops)
        var out: [MeasuredCompute] = []
        var c = teacherPassFLOPs, o = 0.0
        for n in 1..<(max(cached.count, online.count) + 1) {
            if n <= cached.count { c += cached[n - 1] }
            if n <= online.count { o += online[n - 1] }
            out.append(MeasuredCompute(students: n, cachedFLOPs: n <= cached.count ? c : nil,
                                       onlineFLOPs: n <= online.count ? o : nil))
        }
        return out
    }

    /// The law section of report.md.
    func lawMarkdown() -> String {
        guard let law else { return "" }
        func f(_ v: Double?) -> String { v.map { String(format: "%.3f", $0) } ?? "–" }
        var s = "## Scaling law: predicted vs observed\n\n"
        s += "Coefficients: \(law.coefficientsSource). N_S = \(String(format: "%.4g", law.studentParameters)) non-embedding parameters, "
        s += "D_S = \(String(format: "%.4g", law.studentTokens)) tokens, L_T = \(f(law.teacherLoss)) (measured teacher eval CE); "
        s += "Eq. 1 gives L~_S = \(f(law.supervisedPrediction)).\n\n"
        s += "| setting | law | predicted | observed | rel. error |\n|---|---|---|---|---|\n"
        for r in law.rows {
            s += "| \(r.name) | \(r.law) | \(f(r.predicted)) | \(f(r.observed)) | "
            s += (r.relativeError.map { String(format: "%+.1f%%", 100 * $0) } ?? "–") + " |\n"
        }
        if law.coefficients.distillation == nil {
            s += "\nEq. 8 rows are empty: no distillation coefficients were given (`--law FILE`, see `logitcache law predict --help`).\n"
        }
        return s + "\n"
    }

    /// One plain-language finding about the law, from the numbers.
    static func lawFinding(_ c: LawComparison) -> String? {
        guard let b = c.rows.first(where: { $0.law == "Eq. 1" }), let p = b.predicted, let e = b.relativeError else { return nil }
        let fit = abs(e) < 0.05
        var s = String(format: "Supervised law (Eq. 1, %@) predicts %.3f for the baseline; observed %.3f (%+.1f%%)", c.coefficientsSource, p, b.observed, 100 * e)
            + (fit ? "." : " — these coefficients do not describe this corpus, tokenizer and model scale; fit your own runs with `logitcache law fit` and pass them with --law.")
        let distilled = c.rows.filter { $0.law == "Eq. 8" }
        let predicted = distilled.compactMap(\.predicted), errors = distilled.compactMap(\.relativeError)
        if let q = predicted.first, let lo = distilled.map(\.observed).min(), let hi = distilled.map(\.observed).max(),
           let eLo = errors.min(), let eHi = errors.max() {
            s += String(format: " Distillation law (Eq. 8) at the measured L_T = %.3f predicts %.3f for every distilled student "
                        + "(it has no term for truncation, λ or sampling); observed %.3f to %.3f (%+.1f%% to %+.1f%%).",
                        c.teacherLoss, q, lo, hi, 100 * eLo, 100 * eHi)
        }
        return s
    }
}
