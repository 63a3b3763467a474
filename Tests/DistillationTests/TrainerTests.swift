import Foundation
import Truncation
import SyntheticData
import Testing
import TestSupport
import Checkpoints
import Kernels
import Models
import ShardFormat
import StudentLoader
@testable import Distillation


func tinyConfig(vocab: Int = 50, context: Int = 16) throws -> ModelConfig {
    try ModelConfig.llama(vocabSize: vocab, hiddenSize: 16, layerCount: 2, headCount: 4, kvHeadCount: 2,
                          intermediateSize: 32, maxPositions: context, tieWordEmbeddings: true)
}

/// A token stream with structure a model can learn: a repeating pattern with noise.
func patternTokens(_ n: Int, vocab: Int = 50) -> [Int32] {
    var rng = CounterRandomLike(seed: 3)
    return (0..<n).map { i in rng.next() % 10 == 0 ? Int32(rng.next() % UInt64(vocab)) : Int32((i * 7) % 13) }
}

struct CounterRandomLike {
    var s: UInt64
    init(seed: UInt64) { s = seed }
    mutating func next() -> UInt64 {
        s &+= 0x9E37_79B9_7F4A_7C15
        var z = s
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

func params(_ m: TrainableLlama) -> [Float] { Array(UnsafeBufferPointer(start: m.params, count: m.parameterCount)) }

@Suite struct TrainerTests {
    let pool = ThreadPool(threadCount: 2)

    func makeTrainer(steps: Int, tokens: [Int32], teacher: OnlineTeacher? = nil, lambda: Float = 1) throws -> Trainer {
        let model = try TrainableLlama(config: tinyConfig(), seed: 5)
        let source = try CorpusSource(tokens: tokens, batchSize: 3, length: 16, seed: 9, vocabularySize: 50, teacher: teacher)
        return try Trainer(model: model, source: source, settings: TrainingSettings(steps: steps, learningRate: 1e-2, lambda: lambda), pool: pool)
    }

    /// Hard-label training lowers held-out cross-entropy on learnable data.
    @Test func crossEntropyTrainingLearnsThePattern() throws {
        let data = patternTokens(4000)
        let t = try makeTrainer(steps: 60, tokens: Array(data[..<3000]))
        let held = Array(data[3000...])
        let before = try evaluate(model: t.model, tokens: held, length: 16, batch: 4, pool: pool)
        var first = 0.0, last = 0.0
        for s in 0..<60 {
            let r = try t.trainStep()
            if s == 0 { first = r.loss }
            last = r.loss
        }
        let after = try evaluate(model: t.model, tokens: held, length: 16, batch: 4, pool: pool)
        #expect(last < first - 1, "train loss \(first) -> \(last)")
        #expect(after.crossEntropy < before.crossEntropy - 1, "eval CE \(before.crossEntropy) -> \(after.crossEntropy)")
        #expect(t.step == 60 && t.tokensSeen == 60 * 3 * 16)
    }

    /// A run checkpointed, dropped and resumed in fresh objects ends with the same parameters,
    /// bit for bit, as an uninterrupted run; the log reads as one run.
    @Test func resumeContinuesToTheSameWeights() throws {
        let data = patternTokens(3000)
        let straight = try makeTrainer(steps: 8, tokens: data)
        for _ in 0..<8 { _ = try straight.trainStep() }

        let dir = freshDirectory("resume")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        do {
            let t = try makeTrainer(steps: 8, tokens: data)
            let run = try TrainingRun(directory: dir, trainer: t, fingerprint: "f")
            #expect(try run.resumeIfPossible() == 0)
            for _ in 0..<3 { let r = try t.trainStep(); try run.log(["step": r.step]) }
            try run.save(seconds: 1)
            // Steps after the checkpoint that a killed run logged but never saved.
            for _ in 0..<2 { let r = try t.trainStep(); try run.log(["step": r.step]) }
        }
        let t = try makeTrainer(steps: 8, tokens: data)
        let run = try TrainingRun(directory: dir, trainer: t, fingerprint: "f")
        #expect(try run.resumeIfPossible() == 3)
        #expect(t.optimizer.step == 3)
        while t.step < 8 { let r = try t.trainStep(); try run.log(["step": r.step]) }
        #expect(params(t.model) == params(straight.model))
        let steps = try String(contentsOfFile: run.logPath, encoding: .utf8).split(separator: "\n").count
        #expect(steps == 8)

        // A different run's settings are refused, and the checkpoint stays.
        let other = try TrainingRun(directory: dir, trainer: try makeTrainer(steps: 8, tokens: data), fingerprint: "g")
        #expect(throws: TrainingError.self) { try other.resumeIfPossible() }
        #expect(FileManager.default.fileExists(atPath: dir + "/resume/state.json"))
        // The exported model loads in the inference engine.
        #expect(try Transformer(directory: dir).config == t.model.config)
    }

    /// Online teacher targets: full rows are the teacher's softmax; top-k renormalised rows sum
    /// to one; top-k + tail rows sum to one with the tail; sampled weights are counts / draws.
    @Test func onlineTeacherTargets() throws {
        let dir = freshDirectory("teacher")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let teacherModel = try TrainableLlama(config: tinyConfig(), seed: 77)
        try teacherModel.export(to: dir)
        let teacher = try Transformer(directory: dir, pool: pool)
        let data = patternTokens(600)
        for (mode, k) in [(nil, 0), (.renormalized, 5), (.tail, 5), (.sampled, 20)] as [(TargetMode?, Int)] {
            let source = try CorpusSource(tokens: data, batchSize: 2, length: 16, seed: 1, vocabularySize: 50,
                                          teacher: OnlineTeacher(model: teacher, mode: mode, k: k, pool: pool))
            let b = TrainingBatch()
            try source.next(into: b)
            let logits = try teacher.logits(tokens: b.inputs, batch: 2, pool: pool)
            for r in 0..<32 {
                let z = Array(logits[(r * 50)..<(r * 50 + 50)])
                let lse = Double(z.map { exp(Double($0)) }.reduce(0, +)).log()
                switch mode {
                case nil:
                    for j in 0..<50 { #expect(abs(Double(b.weights[r * 50 + j]) - exp(Double(z[j]) - lse)) < 1e-6) }
                case .renormalized?, .tail?:
                    let w = (0..<k).map { Double(b.weights[r * k + $0]) }
                    let top = z.enumerated().sorted { $0.element > $1.element }.prefix(k).map { Int32($0.offset) }
                    #expect(Array(b.ids[(r * k)..<(r * k + k)]) == top)
                    if mode == .tail {
                        #expect(abs(w.reduce(0, +) + Double(b.tail[r]) - 1) < 1e-5)
                        #expect(abs(w[0] - exp(Double(z[Int(top[0])]) - lse)) < 1e-5)
                    } else {
                        #expect(abs(w.reduce(0, +) - 1) < 1e-5)
                    }
                case .sampled?:
                    let w = (0..<k).map { b.weights[r * k + $0] }
                    #expect(abs(w.reduce(0, +) - 1) < 1e-5)
                    #expect(w.allSatisfy { ($0 * Float(k)).rounded() == $0 * Float(k) })
                }
            }
        }
    }

    /// Distilling from an online teacher (full distribution) lowers the KL to it.
    @Test func onlineDistillationApproachesTheTeacher() throws {
        let dir = freshDirectory("teacher2")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let data = patternTokens(3000)
        let teacherTrainer = try makeTrainer(steps: 40, tokens: data)
        for _ in 0..<40 { _ = try teacherTrainer.trainStep() }
        try teacherTrainer.model.export(to: dir)
        let teacher = try Transformer(directory: dir, pool: pool)
        let student = try makeTrainer(steps: 30, tokens: data, teacher: OnlineTeacher(model: teacher, mode: nil, pool: pool))
        let held = Array(data[2000...])
        let before = try evaluate(model: student.model, tokens: held, length: 16, batch: 4, teacher: teacher, pool: pool)
        for _ in 0..<30 { _ = try student.trainStep() }
        let after = try evaluate(model: student.model, tokens: held, length: 16, batch: 4, teacher: teacher, pool: pool)
        #expect(after.klToTeacher! < before.klToTeacher! * 0.5, "KL \(before.klToTeacher!) -> \(after.klToTeacher!)")
        #expect(student.flops > 3 * student.model.forwardFLOPs(batch: 3, length: 16) * 30, "teacher FLOPs are counted")
    }

    /// Evaluation against a naive double-precision computation on the same logits.
    @Test func evaluationMatchesANaiveReference() throws {
        let model = try TrainableLlama(config: tinyConfig(), seed: 12)
        let data = patternTokens(16 * 5 + 1)
        let e = try evaluate(model: model, tokens: data, length: 16, batch: 2, pool: pool)  // 5 windows: last batch padded
        let a = TrainingActivations(batch: 1, length: 16, config: model.config)
        var ce = 0.0, hits = 0, n = 0
        for w in 0..<5 {
            let inputs = Array(data[(w * 16)..<(w * 16 + 16)])
            try inputs.withUnsafeBufferPointer { try model.forward(tokens: $0.baseAddress!, activations: a, pool: pool) }
            for t in 0..<16 {
                let z = (0..<50).map { Double(a.logits[t * 50 + $0]) }
                let lse = z.map { exp($0) }.reduce(0, +).log()
                let y = Int(data[w * 16 + t + 1])
                ce += lse - z[y]
                if z.indices.max(by: { z[$0] < z[$1] }) == y { hits += 1 }
                n += 1
            }
        }
        #expect(e.tokens == 80)
        #expect(abs(e.crossEntropy - ce / Double(n)) < 1e-5)
        #expect(abs(e.accuracy - Double(hits) / Double(n)) < 1e-12)
    }

    /// Training from a cache: every loader mode maps to its loss kind and training lowers the
    /// distillation loss.
    @Test(arguments: [TargetMode.renormalized, .tail, .sampled]) func trainsFromACache(mode: TargetMode) throws {
        let dir = freshDirectory("cache")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let g = TeacherLikeGenerator(vocabularySize: 50, k: 6, seed: 3, draws: mode == .sampled ? 12 : 0)
        let desc = CacheDescription(vocabularySize: 50, fingerprints: Fingerprints(teacher: "t", tokenizer: "tok", corpus: "c"),
                                    capture: CaptureSettings(policy: mode == .sampled ? .topKAndSampled(k: 6, draws: 12) : .topK(k: 6)))
        let w = try CacheWriter(directory: dir, description: desc, options: WriterOptions())
        for i in 0..<40 { try w.append(g.sequence(i, length: 40)) }
        _ = try w.finish()
        let loader = try StudentLoader(cache: dir, configuration: LoaderConfiguration(batchSize: 4, contextLength: 16, k: mode == .sampled ? 12 : 4, mode: mode, seed: 2),
                                       student: StudentVocabulary(tokenizerFingerprint: "tok", vocabularySize: 50))
        let source = CacheSource(loader: loader, vocabularySize: 50)
        let t = try Trainer(model: try TrainableLlama(config: tinyConfig(), seed: 1), source: source,
                            settings: TrainingSettings(steps: 40, learningRate: 1e-2), pool: pool)
        var first = 0.0, last = 0.0
        for s in 0..<40 {
            let r = try t.trainStep()
            if s == 0 { first = r.distillation; #expect(t.batch.kind == CacheSource.kind(of: mode)) }
            last = r.distillation
        }
        #expect(last < first - 0.3, "KD \(first) -> \(last)")
    }
}

extension Double {
    func log() -> Double { Foundation.log(self) }
}
