import Foundation
import Kernels
import Models

/// Optimisation settings of a training run (everything that changes the result besides the
/// model and the data).
public struct TrainingSettings: Codable, Sendable, Equatable {
    /// Optimizer steps in the whole run.
    public var steps: Int
    /// Peak learning rate, reached after ``warmupSteps``; cosine decay to
    /// ``minLearningRateFraction`` of it at the last step.
    public var learningRate: Float
    public var minLearningRateFraction: Float
    public var warmupSteps: Int
    public var weightDecay: Float
    /// Global gradient-norm clip (0 disables).
    public var gradientClip: Float
    /// λ of Eq. 7: (1 − λ)·CE + λ·τ²·KD (ignored for sources without teacher targets).
    public var lambda: Float
    /// τ applied to the student's logits in the distillation term.
    public var temperature: Float
    /// z-loss coefficient c_z (0 disables).
    public var zLoss: Float

    public init(steps: Int, learningRate: Float = 3e-3, minLearningRateFraction: Float = 0.1, warmupSteps: Int? = nil,
                weightDecay: Float = 0.1, gradientClip: Float = 1, lambda: Float = 1, temperature: Float = 1,
                zLoss: Float = 0) {
        self.steps = steps; self.learningRate = learningRate; self.minLearningRateFraction = minLearningRateFraction
        self.warmupSteps = warmupSteps ?? max(1, min(100, steps / 10))
        self.weightDecay = weightDecay; self.gradientClip = gradientClip
        self.lambda = lambda; self.temperature = temperature; self.zLoss = zLoss
    }

    /// - Throws: ``TrainingError/badSetting(_:)`` naming the value out of range.
    public func validate() throws {
        func check(_ ok: Bool, _ m: String) throws { if !ok { throw TrainingError.badSetting(m) } }
        try check(steps >= 1, "steps \(steps) must be >= 1")
        try check(learningRate.isFinite && learningRate > 0, "learning rate \(learningRate) must be > 0")
        try check((0...1).contains(minLearningRateFraction), "minimum learning-rate fraction must be in 0...1")
        try check(warmupSteps >= 0, "warmup steps must be >= 0")
        try check(weightDecay >= 0 && gradientClip >= 0 && zLoss >= 0, "weight decay, clip and z-loss must be >= 0")
        try check((0...1).contains(lambda), "lambda \(lambda) must be in 0...1")
        try check(temperature.isFinite && temperature > 0, "temperature \(temperature) must be > 0")
    }

    var schedule: LearningRateSchedule {
        LearningRateSchedule(maxLR: learningRate, minLR: learningRate * minLearningRateFraction,
                             warmupSteps: warmupSteps, totalSteps: steps)
    }
}

/// What one optimizer step did, for logs.
public struct StepRecord: Codable, Sendable, Equatable {
    /// 1-based index of the step just taken.
    public var step: Int
    /// Mean optimised loss (mixed, with z-loss), hard-label CE and distillation CE, nats/token.
    public var loss: Double
    public var crossEntropy: Double
    public var distillation: Double
    public var learningRate: Float
    /// Global gradient norm before clipping.
    public var gradientNorm: Float
    /// Labelled tokens in this step's batch.
    public var tokens: Int
    /// Wall seconds of the step.
    public var seconds: Double
}

/// The training loop's state: a model, AdamW, a data source and the loss settings. Each
/// ``trainStep()`` is forward, loss, backward, clip, update — deterministic for the seeds and
/// thread count.
public final class Trainer {
    public let model: TrainableLlama
    public let optimizer: AdamW
    public let source: TrainingSource
    public let settings: TrainingSettings
    public let pool: ThreadPool
    /// Steps taken so far.
    public internal(set) var step = 0
    /// Labelled tokens trained on so far.
    public internal(set) var tokensSeen = 0
    /// Student + teacher FLOPs spent so far (6·N per token approximated by 3 × forward).
    public internal(set) var flops = 0.0
    let activations: TrainingActivations
    let batch = TrainingBatch()

    public init(model: TrainableLlama, source: TrainingSource, settings: TrainingSettings, pool: ThreadPool) throws {
        try settings.validate()
        guard source.length <= model.config.maxPositions else {
            throw TrainingError.badSetting("context \(source.length) exceeds the model's \(model.config.maxPositions) positions")
        }
        self.model = model; self.source = source; self.settings = settings; self.pool = pool
        optimizer = AdamW(count: model.parameterCount,
                          settings: .init(beta1: 0.9, beta2: 0.95, epsilon: 1e-8, weightDecay: settings.weightDecay),
                          decayRanges: model.layout.decayRanges)
        activations = TrainingActivations(batch: source.batchSize, length: source.length, config: model.config)
    }

    public var mix: LossMix { LossMix(lambda: settings.lambda, temperature: settings.temperature, zLoss: settings.zLoss) }

    /// Takes one optimizer step on the source's next batch.
    /// - Throws: the source's errors; ``TrainingError/diverged(step:loss:)`` on a non-finite loss
    ///   (parameters are left as they were before the step).
    public func trainStep() throws -> StepRecord {
        let started = DispatchTime.now().uptimeNanoseconds
        try source.next(into: batch)
        model.zeroGradients()
        try batch.inputs.withUnsafeBufferPointer { try model.forward(tokens: $0.baseAddress!, activations: activations, pool: pool) }
        let (parts, rows) = batch.withTargets { targets in
            batch.labels.withUnsafeBufferPointer {
                model.loss(labels: $0.baseAddress!, targets: targets, mix: mix, activations: activations, pool: pool)
            }
        }
        let n = Double(max(rows, 1))
        guard parts.total.isFinite else { throw TrainingError.diverged(step: step + 1, loss: parts.total / n) }
        try batch.inputs.withUnsafeBufferPointer { try model.backward(tokens: $0.baseAddress!, activations: activations, pool: pool) }
        let norm = clipGradientNorm(model.grads, count: model.parameterCount,
                                    maxNorm: settings.gradientClip > 0 ? settings.gradientClip : .infinity, pool: pool)
        let lr = settings.schedule.rate(at: step)
        optimizer.update(params: model.params, grads: model.grads, lr: lr, pool: pool)
        step += 1
        tokensSeen += rows
        flops += model.trainingFLOPs(batch: source.batchSize, length: source.length) + source.teacherFLOPsPerBatch
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
        return StepRecord(step: step, loss: parts.total / n, crossEntropy: parts.crossEntropy / n,
                          distillation: parts.distillation / n, learningRate: lr, gradientNorm: norm,
                          tokens: rows, seconds: seconds)
    }
}
