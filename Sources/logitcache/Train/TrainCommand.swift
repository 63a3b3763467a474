import ArgumentParser
import CommandLineSupport
import Corpus
import Checkpoints
import Distillation
import Foundation
import Truncation
import Kernels
import Models
import StudentLoader

/// `logitcache train`: train a Llama-style model from a cache, a corpus, or a teacher run
/// inside the loop.
struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train a student (or a teacher from scratch) in Swift; writes a Hugging Face checkpoint.",
        discussion: """
            Data: --cache CACHE (distil from cached teacher targets), --corpus PATH --tokenizer FILE
            (hard labels), or --teacher DIR --corpus PATH --tokenizer FILE (online teacher).
            Losses: ce | topk | tail | sampled | full; Eq. 7 mixing with --lambda, --temperature.
            Resumable: rerun the same command and it continues from the last checkpoint in --out.
            """)

    @Option(help: "Model architecture JSON (layers, hidden, heads, kv_heads, ffn, vocab, context, rope_theta, tied) or a config.json.")
    var config: String?
    @Option(help: "Initialise from this Hugging Face model directory instead of --config.") var initFrom: String?
    @Option(help: "Teacher-target cache to distil from.") var cache: String?
    @Option(parsing: .upToNextOption, help: "Corpus files, directories or globs to train on (with --tokenizer).")
    var corpus: [String] = []
    @Option(help: "tokenizer.json (for --corpus and --eval; with --cache it is checked against the cache).") var tokenizer: String?
    @Option(help: "Teacher model directory run inside the loop (online distillation).") var teacher: String?
    @Option(help: "Output directory: checkpoint, resume state, log.jsonl.") var out: String
    @Option(help: "Teacher entries per token used by the loss.") var k = 16
    @Option(help: "ce | topk | tail | sampled | full (default: topk with --cache, full with --teacher, ce otherwise).")
    var loss: String?
    @Option(help: "λ: weight of the distillation term; 1 − λ weighs hard-label CE.") var lambda: Float = 1
    @Option(help: "τ: distillation temperature.") var temperature: Float = 1
    @Option(help: "z-loss coefficient.") var zLoss: Float = 0
    @Option(help: "Optimizer steps.") var steps: Int?
    @Option(help: "Training tokens (sets --steps to tokens / (batch · context)).") var tokens: Int?
    @Option(help: "Windows per step.") var batch = 8
    @Option(help: "Window length (default: the model's context).") var context: Int?
    @Option(help: "Peak learning rate.") var lr: Float = 3e-3
    @Option(help: "Warmup steps (default: 10% of steps, at most 100).") var warmup: Int?
    @Option(help: "AdamW weight decay.") var weightDecay: Float = 0.1
    @Option(help: "Global gradient-norm clip (0: none).") var clip: Float = 1
    @Option(help: "Seed of initialisation and data order.") var seed: UInt64 = 0
    @Option(parsing: .upToNextOption, help: "Held-out corpus for evaluation (with --tokenizer).") var eval: [String] = []
    @Option(help: "Evaluate every N steps (0: only at the end).") var evalEvery = 0
    @Option(help: "At most this many evaluation windows.") var evalWindows = 64
    @Option(help: "Checkpoint every N steps (and at the end).") var checkpointEvery = 200
    @Option(help: "Threads (default: all cores).") var threads = ThreadPool.defaultThreadCount
    @Option(help: "Sampled draws per token for --teacher with --loss sampled.") var samples = 50

    func validate() throws {
        guard (config == nil) != (initFrom == nil) else { throw ValidationError("give exactly one of --config and --init-from") }
        guard (cache == nil) || corpus.isEmpty else { throw ValidationError("--cache and --corpus exclude each other") }
        guard cache != nil || !corpus.isEmpty else { throw ValidationError("give --cache CACHE or --corpus PATH") }
        guard cache != nil || tokenizer != nil else { throw ValidationError("--corpus needs --tokenizer") }
        guard eval.isEmpty || tokenizer != nil else { throw ValidationError("--eval needs --tokenizer") }
        guard teacher == nil || cache == nil else { throw ValidationError("--teacher runs on --corpus, not on a cache") }
        guard (steps == nil) != (tokens == nil) else { throw ValidationError("give exactly one of --steps and --tokens") }
        guard batch >= 1, threads >= 1, k >= 1, checkpointEvery >= 1, evalEvery >= 0 else {
            throw ValidationError("--batch, --threads, --k and --checkpoint-every must be >= 1")
        }
        let allowed: [TrainingLoss] = cache != nil ? [.ce, .topk, .tail, .sampled] : teacher != nil ? TrainingLoss.allCases : [.ce]
        guard let l = TrainingLoss(rawValue: lossName), allowed.contains(l) else {
            throw ValidationError("--loss \(lossName) is not available here; with \(cache != nil ? "--cache" : teacher != nil ? "--teacher" : "--corpus alone") use one of \(allowed.map(\.rawValue).joined(separator: ", "))")
        }
    }

    var lossName: String { loss ?? (cache != nil ? "topk" : teacher != nil ? "full" : "ce") }

    /// The batches: the cache's targets, or the corpus with the teacher run inside the loop.
    func data(_ l: TrainingLoss, vocabularySize V: Int, pool: ThreadPool) throws -> TrainingData {
        if let cache {
            let student = try tokenizer.map { StudentVocabulary(tokenizerFingerprint: try Fingerprint.tokenizer(path: $0), vocabularySize: V) }
            return .cache(directory: cache, mode: l.targetMode ?? .renormalized, k: k, student: student)
        }
        var online: OnlineTeacher?
        if let teacher, l != .ce {
            let t = try Transformer(directory: teacher, pool: pool)
            guard t.config.vocabSize == V else {
                throw ValidationError("teacher \(teacher) has vocabulary \(t.config.vocabSize), the student \(V)")
            }
            online = OnlineTeacher(model: t, mode: l.targetMode, k: l == .sampled ? samples : k, temperature: temperature,
                                   seed: seed, pool: pool)
        }
        return try .corpus(paths: corpus, tokenizerPath: tokenizer!, vocabularySize: V, teacher: online)
    }

    func run() throws {
        let pool = ThreadPool(threadCount: threads)
        let modelConfig = try initFrom.map { try ModelCheckpoint(directory: $0).config } ?? ModelSpec.load(path: config!)
        try TrainableLlama.check(modelConfig)
        let model = try initFrom.map { try TrainableLlama(directory: $0) } ?? TrainableLlama(config: modelConfig, seed: seed)
        let T = context ?? modelConfig.maxPositions
        let V = modelConfig.vocabSize
        let l = TrainingLoss(rawValue: lossName)!  // Safe because validate() parsed it.
        let source = try data(l, vocabularySize: V, pool: pool)
            .source(batchSize: batch, contextLength: T, temperature: temperature, seed: seed, vocabularySize: V)
        let lambda = l == .ce ? 0 : self.lambda
        let stepCount = steps ?? max(1, tokens! / (batch * T))
        let settings = TrainingSettings(steps: stepCount, learningRate: lr, warmupSteps: warmup, weightDecay: weightDecay,
                                        gradientClip: clip, lambda: lambda, temperature: temperature, zLoss: zLoss)
        let trainer = try Trainer(model: model, source: source, settings: settings, pool: pool)
        let evalTokens = eval.isEmpty ? nil : try corpusTokens(corpus: eval, tokenizerPath: tokenizer!, vocabularySize: V)

        let fingerprint = Self.fingerprint([
            "config": JSONValue.object(modelConfig.jsonObject).serialized, "init": initFrom ?? "seed \(seed)", "data": source.summary,
            "loss": l.rawValue, "k": "\(k)", "batch": "\(batch)", "context": "\(T)", "seed": "\(seed)",
            "settings": String(describing: settings),
        ])
        let run = try TrainingRun(directory: out, trainer: trainer, fingerprint: fingerprint)
        let params = Double(model.parameterCount)
        FileHandle.standardError.write(Data("""
            train: \(modelConfig.layerCount) layers × \(modelConfig.hiddenSize), \(humanCount(params)) parameters; \
            \(source.summary); loss \(l) λ=\(lambda) τ=\(temperature); \(stepCount) steps of \(batch)×\(T) tokens; \
            \(threads) threads -> \(out)\n
            """.utf8))
        let start: [String: Any] = ["parameters": model.parameterCount, "loss_kind": l.rawValue, "lambda": Double(lambda),
                                    "temperature": Double(temperature), "k": k, "steps": stepCount, "batch": batch, "context": T,
                                    "data": source.summary, "seed": Int(seed)]
        let evaluator = evalTokens.map { tokens in
            { try evaluate(model: model, tokens: tokens, length: T, batch: self.batch, maxWindows: self.evalWindows, pool: pool) }
        }
        let line = ProgressLine()
        let outcome = try run.train(schedule: TrainingSchedule(steps: stepCount, checkpointEvery: checkpointEvery, evaluateEvery: evalEvery),
                                    start: start, evaluate: evaluator) { event in
            switch event {
            case let .resumed(step):
                line.update("resumed at step \(step)", force: true)
            case let .step(r, rate):
                line.update(String(format: "step %d/%d  loss %.4f  ce %.4f  lr %.2e  %@ tok/s  ETA %@", r.step, stepCount, r.loss,
                                   r.crossEntropy, r.learningRate, humanCount(rate),
                                   humanDuration(Double(stepCount - r.step) * Double(batch * T) / max(rate, 1e-9))),
                            force: r.step == stepCount)
            case let .evaluation(step, e):
                line.update(String(format: "step %d  eval ce %.4f", step, e.crossEntropy), force: true)
            }
        }
        line.finish()
        if let e = outcome.evaluation {
            print(String(format: "eval cross-entropy %.4f nats/token over %d tokens (accuracy %.3f, ECE %.3f)",
                         e.crossEntropy, e.tokens, e.accuracy, e.calibrationError))
        }
        print("wrote \(out)/model.safetensors (step \(trainer.step), \(humanCount(Double(trainer.tokensSeen))) tokens)")
    }

    static func fingerprint(_ fields: [String: String]) -> String {
        fields.keys.sorted().map { "\($0)=\(fields[$0]!)" }.joined(separator: "; ")
    }
}

/// `logitcache eval`: held-out cross-entropy (and KL to a teacher) of a model directory.
struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Evaluate a model's next-token cross-entropy, accuracy and calibration on a corpus.")

    @Option(help: "Hugging Face model directory (LlamaForCausalLM without biases).") var model: String
    @Option(help: "tokenizer.json.") var tokenizer: String
    @Option(parsing: .upToNextOption, help: "Corpus files, directories or globs.") var corpus: [String]
    @Option(help: "Teacher directory: also report KL(teacher ‖ model).") var teacher: String?
    @Option(help: "Window length (default: the model's context).") var context: Int?
    @Option(help: "Windows per forward.") var batch = 8
    @Option(help: "At most this many windows.") var windows: Int?
    @Option(help: "Threads (default: all cores).") var threads = ThreadPool.defaultThreadCount
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        let pool = ThreadPool(threadCount: threads)
        let m = try TrainableLlama(directory: model)
        let ids = try corpusTokens(corpus: corpus, tokenizerPath: tokenizer, vocabularySize: m.config.vocabSize)
        let t = try teacher.map { try Transformer(directory: $0, pool: pool) }
        let e = try evaluate(model: m, tokens: ids, length: context ?? m.config.maxPositions, batch: batch,
                             maxWindows: windows, teacher: t, pool: pool)
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(e), as: UTF8.self))
        } else {
            print(String(format: "cross-entropy %.4f nats/token over %d tokens; accuracy %.3f; ECE %.3f; overconfidence %+.3f",
                         e.crossEntropy, e.tokens, e.accuracy, e.calibrationError, e.overconfidence)
                  + (e.klToTeacher.map { String(format: "; KL(teacher‖model) %.4f", $0) } ?? ""))
        }
    }
}
