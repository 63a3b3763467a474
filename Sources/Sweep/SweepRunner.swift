import Foundation
import Corpus
import Truncation
import Capture
import Checkpoints
import Distillation
import Kernels
import Models
import ShardFormat
import StudentLoader
import TeacherPass

/// What one student measured.
public struct SettingResult: Codable, Sendable, Equatable {
    public var setting: SweepSetting
    public var evaluation: Evaluation
    /// Final training loss (optimised mix), nats/token.
    public var trainLoss: Double
    public var tokens: Int
    public var seconds: Double
    /// Student training FLOPs (+ the teacher's forward FLOPs for online students).
    public var flops: Double
    /// Bytes per token of a cache holding exactly what this student reads (0 for ce/online).
    public var cacheBytesPerToken: Double
    /// Mean teacher probability mass of the entries this student reads (top-k prefix, or the
    /// sampled ids), over the cache.
    public var capturedMass: Double?
}

/// The teacher pass of a sweep.
public struct TeacherPassSummary: Codable, Sendable, Equatable {
    public var policy: String
    public var tokens: Int
    public var bytes: Int
    public var seconds: Double
    public var flops: Double
    public var parameters: Int
    public var teacherEval: Evaluation
}

/// Runs a sweep: the teacher pass once, then every student, each resumable and skipped when
/// already finished with the same settings (see SweepRunner+Reuse.swift); then the report.
public final class SweepRunner {
    public let options: SweepOptions
    let log: (String) -> Void
    let pool: ThreadPool

    public init(options: SweepOptions, log: @escaping (String) -> Void) throws {
        try options.validate()
        self.options = options
        self.log = log
        pool = ThreadPool(threadCount: options.threads)
    }

    var cacheDirectory: String { options.output + "/cache" }

    /// Every student, in the order they are trained: baseline first, then by policy, k, λ.
    public var settings: [SweepSetting] {
        let o = options
        var out: [SweepSetting] = []
        for seed in 1...o.seeds {
            out.append(SweepSetting(policy: .ce, k: 0, lambda: 0, seed: seed))
            for p in o.policies {
                for l in o.lambdas {
                    if p == .sampled { out.append(SweepSetting(policy: p, k: o.samples, lambda: l, seed: seed)); continue }
                    for k in o.ks.sorted() {
                        for tau in o.temperatures { out.append(SweepSetting(policy: p, k: k, lambda: l, seed: seed, temperature: tau)) }
                    }
                }
            }
            if o.online { out.append(SweepSetting(policy: .online, k: 0, lambda: 1, seed: seed)) }
        }
        return out
    }

    /// Runs everything and writes `report.json`, `report.md` and the plots into the output.
    public func run() throws -> SweepReport {
        let o = options
        try FileManager.default.createDirectory(atPath: o.output, withIntermediateDirectories: true)
        let studentConfig = try ModelSpec.load(path: o.studentConfigPath)
        let teacher = try Transformer(directory: o.teacherDirectory, pool: pool)
        guard teacher.config.vocabSize == studentConfig.vocabSize else {
            throw SweepError.failed("teacher vocabulary \(teacher.config.vocabSize) differs from the student's \(studentConfig.vocabSize)")
        }
        let evalTokens = try corpusTokens(corpus: o.evalCorpus, tokenizerPath: o.tokenizerPath, vocabularySize: studentConfig.vocabSize)

        // 1. The one teacher pass.
        let manifest = try teacherPass()
        let teacherModel = try TrainableLlama(directory: o.teacherDirectory)
        let teacherEval = try evaluate(model: teacherModel, tokens: evalTokens, length: o.context, batch: o.batch,
                                       maxWindows: o.evalWindows, pool: pool)
        let passSummary = TeacherPassSummary(
            policy: manifest.capture.policy.name, tokens: manifest.totals.tokens, bytes: manifest.totals.bytes,
            seconds: manifest.teacherCost.seconds, flops: manifest.teacherCost.flops,
            parameters: teacherModel.parameterCount, teacherEval: teacherEval)
        log(String(format: "teacher: eval CE %.4f nats/token", teacherEval.crossEntropy))

        // 2. Byte cost and captured mass per read setting (exact: each is a real cache).
        var bytes: [String: Double] = [:], mass: [String: Double] = [:]
        for s in settings where s.policy.targetMode != nil {
            let key = s.policy == .sampled ? "sampled" : "k\(s.k)"
            if bytes[key] != nil { continue }
            let (b, m) = try prefixCacheCost(k: s.policy == .sampled ? 0 : s.k, samples: s.policy == .sampled)
            bytes[key] = b; mass[key] = m
        }

        // 3. The students.
        var results: [SettingResult] = []
        for (i, s) in settings.enumerated() {
            log("student \(i + 1)/\(settings.count): \(s.name)")
            var r = try train(s, config: studentConfig, evalTokens: evalTokens, teacher: teacher, pass: manifest)
            let key = s.policy == .sampled ? "sampled" : "k\(s.k)"
            r.cacheBytesPerToken = bytes[key] ?? 0
            r.capturedMass = mass[key]
            results.append(r)
        }
        let student = try TrainableLlama(config: studentConfig, seed: 0)
        let studentParameters = student.parameterCount
        let sizes = SweepModelSizes(
            studentNonEmbedding: Double(student.nonEmbeddingParameterCount),
            teacherNonEmbedding: Double(teacherModel.nonEmbeddingParameterCount),
            aspectRatio: Double(studentConfig.hiddenSize) / Double(max(studentConfig.layerCount, 1)),
            contextLength: Double(o.context), vocabularySize: Double(studentConfig.vocabSize))
        let report = SweepReport(options: o, teacherPass: passSummary, results: results,
                                 studentParameters: studentParameters, sizes: sizes)
        try report.write(to: o.output)
        return report
    }

    /// Runs (or resumes, or finds finished) the teacher pass into `output/cache`.
    func teacherPass() throws -> CacheManifest {
        let o = options
        let marker = cacheDirectory + "/sweep-pass.done"
        if let m = try? CacheManifest.load(directory: cacheDirectory),
           let key = try? String(contentsOfFile: marker, encoding: .utf8), key == passKey {
            log("teacher pass: reusing \(cacheDirectory) (\(m.totals.tokens) tokens)")
            return m
        }
        var t = TeacherPassOptions(modelDirectory: o.teacherDirectory, tokenizerPath: o.tokenizerPath, corpus: o.corpus,
                                   output: cacheDirectory)
        t.context = o.context
        t.policy = o.wantsSamples ? .topKAndSampled(k: o.maxK, draws: o.samples) : .topK(k: o.maxK)
        t.threads = o.threads
        let job = try TeacherPassJob(options: t, windowLimit: o.teacherWindowLimit)
        log("teacher pass: \(t.policy) over \(job.windows.count) windows of \(o.context) tokens -> \(cacheDirectory)")
        var lastLog = Date.distantPast
        let m = try job.run { p in
            if Date().timeIntervalSince(lastLog) > 5 || p.tokensDone == p.tokensTotal {
                lastLog = Date()
                let rate = Double(p.tokensDone - p.tokensResumed) / max(p.seconds, 1e-9)
                self.log(String(format: "  teacher pass %d/%d tokens, %.0f tok/s, captured mass %.3f",
                                p.tokensDone, p.tokensTotal, rate, p.meanCapturedMass))
            }
        }
        do { try Data(passKey.utf8).write(to: URL(fileURLWithPath: marker), options: .atomic) } catch {
            throw SweepError.failed("cannot write \(marker): \(error.localizedDescription)")
        }
        return m
    }

    /// Writes a cache holding only the first `k` entries (or only the samples) of each token,
    /// and returns its bytes per token and the mean mass of those entries.
    func prefixCacheCost(k: Int, samples: Bool) throws -> (Double, Double) {
        let reader = try CacheReader(directory: cacheDirectory)
        let dir = options.output + "/bytes/" + (samples ? "sampled" : "k\(k)")
        if let m = try? CacheManifest.load(directory: dir), let saved = try? String(contentsOfFile: dir + "/mass.txt", encoding: .utf8),
           let massValue = Double(saved) {
            return (Double(m.totals.bytes) / Double(max(m.totals.tokens, 1)), massValue)
        }
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var capture = reader.manifest.capture
        capture.policy = samples ? .sampled(draws: capture.samples) : .topK(k: k)
        let w = try CacheWriter(directory: dir, description: CacheDescription(vocabularySize: reader.vocabularySize,
                                                                                fingerprints: reader.manifest.fingerprints,
                                                                                capture: capture))
        let batch = TargetBatch()
        var massSum = 0.0
        for i in 0..<reader.sequenceCount {
            let s = try reader.sequence(i)
            try reader.decode(tokens: s.firstToken..<(s.firstToken + s.length), k: samples ? reader.maxEntries : k,
                              samples: samples, into: batch)
            try w.beginSequence(documentKey: s.documentKey, documentOffset: s.documentOffset)
            let K = batch.k
            for t in 0..<s.length {
                let n = samples ? 0 : Int(batch.entryCounts[t])
                let ids = batch.entryIDs[(t * K)..<(t * K + n)], lps = batch.entryLogProbs[(t * K)..<(t * K + n)]
                let q = samples ? batch.sampleOffsets[t]..<batch.sampleOffsets[t + 1] : 0..<0
                try w.appendToken(inputID: batch.inputIDs[t], nextTokenLogProb: batch.nextTokenLogProbs[t],
                                  logSumExp: batch.logSumExps[t], entryIDs: ids, entryLogProbs: lps,
                                  sampleIDs: batch.sampleIDs[q], sampleDraws: batch.sampleDraws[q])
                if samples {
                    // Mass of the distinct sampled ids, from the head's log-probs where known.
                    massSum += sampledMass(batch, token: t, range: q)
                } else {
                    for lp in lps { massSum += exp(Double(lp)) }
                }
            }
            try w.endSequence()
        }
        let m = try w.finish()
        let meanMass = massSum / Double(max(m.totals.tokens, 1))
        try String(meanMass).write(toFile: dir + "/mass.txt", atomically: true, encoding: .utf8)
        return (Double(m.totals.bytes) / Double(max(m.totals.tokens, 1)), meanMass)
    }

    /// The teacher's mass of token t's distinct sampled ids, as far as the cache knows it: ids
    /// among the stored top-K head count exactly; the cache keeps no log-prob for the others,
    /// so they count 0 — a lower bound.
    func sampledMass(_ b: TargetBatch, token t: Int, range q: Range<Int>) -> Double {
        let K = b.k, n = Int(b.entryCounts[t])
        var m = 0.0
        for i in q {
            for j in 0..<n where b.entryIDs[t * K + j] == b.sampleIDs[i] { m += exp(Double(b.entryLogProbs[t * K + j])); break }
        }
        return m
    }

    /// Trains (or resumes, or reads back) one student and evaluates it.
    func train(_ s: SweepSetting, config: ModelConfig, evalTokens: [Int32], teacher: Transformer,
               pass: CacheManifest) throws -> SettingResult {
        let o = options
        let dir = o.output + "/students/" + s.name
        let resultPath = dir + "/result.json"
        let steps = max(1, o.tokens / (o.batch * o.context))
        let settings = TrainingSettings(steps: steps, learningRate: o.learningRate, lambda: s.policy == .ce ? 0 : s.lambda,
                                        temperature: s.temperature)
        if let r = try finishedResult(in: dir, fingerprint: studentFingerprint(s, config: config, settings: settings,
                                                                                evalTokens: evalTokens, pass: pass)) {
            log("  finished earlier: eval CE \(String(format: "%.4f", r.evaluation.crossEntropy))")
            return r
        }
        let model = try TrainableLlama(config: config, seed: UInt64(s.seed))
        let data: TrainingData
        switch s.policy {
        case .online:
            data = try .corpus(paths: o.corpus, tokenizerPath: o.tokenizerPath, vocabularySize: config.vocabSize,
                               teacher: OnlineTeacher(model: teacher, mode: nil, seed: UInt64(s.seed), pool: pool))
        default:
            // Every cache student (and the CE baseline) reads the same windows in the same order.
            // The CE baseline reads the same windows at k = 1 and ignores the targets.
            data = .cache(directory: cacheDirectory, mode: s.policy.targetMode ?? .renormalized, k: s.policy == .ce ? 1 : s.k,
                          student: nil)
        }
        let source = try data.source(batchSize: o.batch, contextLength: o.context, temperature: s.temperature,
                                     seed: UInt64(s.seed), vocabularySize: config.vocabSize)
        let trainer = try Trainer(model: model, source: source, settings: settings, pool: pool)
        let run = try TrainingRun(directory: dir, trainer: trainer, fingerprint: "\(s.name); \(settings); \(o.batch)x\(o.context)")
        let start: [String: Any] = ["parameters": model.parameterCount, "loss_kind": s.policy.loss.rawValue,
                                    "lambda": Double(settings.lambda), "temperature": Double(s.temperature), "k": s.k, "steps": steps, "batch": o.batch,
                                    "context": o.context, "data": source.summary, "seed": s.seed]
        var lastLog = Date()
        let outcome = try run.train(schedule: TrainingSchedule(steps: steps, checkpointEvery: 100), start: start, evaluate: {
            try evaluate(model: model, tokens: evalTokens, length: o.context, batch: o.batch, maxWindows: o.evalWindows,
                         teacher: teacher, pool: self.pool)
        }) { event in
            guard case let .step(r, _) = event, Date().timeIntervalSince(lastLog) > 10 else { return }
            lastLog = Date()
            self.log(String(format: "  step %d/%d loss %.4f", r.step, steps, r.loss))
        }
        // Safe because an evaluator was given.
        let e = outcome.evaluation!
        let result = SettingResult(setting: s, evaluation: e, trainLoss: outcome.last?.loss ?? .nan, tokens: trainer.tokensSeen,
                                   seconds: outcome.seconds, flops: trainer.flops, cacheBytesPerToken: 0, capturedMass: nil)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(result).write(to: URL(fileURLWithPath: resultPath), options: .atomic)
        log(String(format: "  eval CE %.4f  KL to teacher %.4f  ECE %.3f", e.crossEntropy, e.klToTeacher ?? .nan, e.calibrationError))
        return result
    }
}
