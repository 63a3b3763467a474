import Foundation
import Truncation

/// The loss a student trains with, by its name on the command line (`train --loss`) and in
/// sweeps: one mapping from the name to what the loader reads.
public enum TrainingLoss: String, Codable, Sendable, CaseIterable, CustomStringConvertible {
    /// Hard-label cross-entropy only (λ = 0).
    case ce
    /// Top-k probabilities renormalised (``TargetMode/renormalized``).
    case topk
    /// Exact top-k plus the uncovered mass as one class (``TargetMode/tail``).
    case tail
    /// Sampled ids weighted count / N (``TargetMode/sampled``).
    case sampled
    /// The whole distribution of a teacher run inside the loop.
    case full

    /// What a student reads for this loss: a cache's targets in this mode (nil for ce, and for
    /// full, which needs no truncation).
    public var targetMode: TargetMode? {
        switch self {
        case .topk: return .renormalized
        case .tail: return .tail
        case .sampled: return .sampled
        case .ce, .full: return nil
        }
    }

    public var description: String { rawValue }
}

/// How long a run trains and when it stops to checkpoint and evaluate.
public struct TrainingSchedule: Sendable, Equatable {
    /// Optimizer steps of the whole run (over all its sessions).
    public var steps: Int
    /// Checkpoint every N steps, and at the end.
    public var checkpointEvery: Int
    /// Evaluate every N steps (0: only at the end).
    public var evaluateEvery: Int

    public init(steps: Int, checkpointEvery: Int, evaluateEvery: Int = 0) {
        self.steps = steps
        self.checkpointEvery = max(1, checkpointEvery)
        self.evaluateEvery = max(0, evaluateEvery)
    }
}

/// What ``TrainingRun/train(schedule:start:evaluate:report:)`` reports while it runs.
public enum TrainingEvent {
    /// The run continues from the checkpoint of this step.
    case resumed(step: Int)
    /// A finished step, with the training throughput over the last up to 50 steps.
    case step(StepRecord, tokensPerSecond: Double)
    /// A periodic evaluation (not the final one, which the outcome carries).
    case evaluation(step: Int, Evaluation)
}

/// How a run ended.
public struct TrainingOutcome {
    /// The step this session resumed at (0 for a new run).
    public var resumedAt: Int
    /// The last step this session trained (nil when the run had already finished).
    public var last: StepRecord?
    /// The final evaluation, when an evaluator was given.
    public var evaluation: Evaluation?
    /// Wall seconds of all sessions of the run.
    public var seconds: Double
}

extension TrainingRun {
    /// Trains to `schedule.steps`: resumes from the last checkpoint, logs every step, evaluates
    /// and checkpoints on schedule, then evaluates once more and logs an `end` event.
    ///
    /// The log gets a `start` event with `start`'s fields when the run is new. Every step logs
    /// `step`, `loss`, `ce`, `kd`, `lr`, `grad_norm`, `tokens`, `tokens_per_s` and `seconds`.
    /// - Parameters:
    ///   - evaluate: the held-out evaluation, or nil for none.
    ///   - report: called after every step and periodic evaluation (progress lines).
    /// - Throws: the trainer's, the source's and ``TrainingError`` for checkpoint and log
    ///   failures; a checkpoint already written stays intact.
    public func train(schedule: TrainingSchedule, start: [String: Any], evaluate: (() throws -> Evaluation)?,
                      report: (TrainingEvent) -> Void) throws -> TrainingOutcome {
        let resumed = try resumeIfPossible()
        if resumed > 0 { report(.resumed(step: resumed)) }
        if resumed == 0 { try log(start.merging(["event": "start", "step": 0]) { _, fixed in fixed }) }
        let started = Date()
        var windowTokens = 0, windowStart = Date(), last: StepRecord?
        while trainer.step < schedule.steps {
            let r = try trainer.trainStep()
            last = r
            windowTokens += r.tokens
            let rate = Double(windowTokens) / max(Date().timeIntervalSince(windowStart), 1e-9)
            try log(["step": r.step, "loss": r.loss, "ce": r.crossEntropy, "kd": r.distillation,
                     "lr": Double(r.learningRate), "grad_norm": Double(r.gradientNorm), "tokens": trainer.tokensSeen,
                     "tokens_per_s": rate, "seconds": previousSeconds + Date().timeIntervalSince(started)])
            report(.step(r, tokensPerSecond: rate))
            if r.step % 50 == 0 { windowTokens = 0; windowStart = Date() }
            if schedule.evaluateEvery > 0, r.step % schedule.evaluateEvery == 0, r.step < schedule.steps, let evaluate {
                let e = try evaluate()
                try log(["step": r.step, "event": "eval", "eval_ce": e.crossEntropy, "eval_tokens": e.tokens])
                report(.evaluation(step: r.step, e))
            }
            if r.step % schedule.checkpointEvery == 0 || r.step == schedule.steps {
                try save(seconds: Date().timeIntervalSince(started))
            }
        }
        // A finished run rerun: export the model again (the run directory may have lost it).
        if resumed >= schedule.steps { try save(seconds: 0) }
        let seconds = previousSeconds + Date().timeIntervalSince(started)
        var summary: [String: Any] = ["event": "end", "step": trainer.step, "tokens": trainer.tokensSeen,
                                      "flops": trainer.flops, "seconds": seconds]
        if let last { summary["train_loss"] = last.loss }
        let evaluation = try evaluate?()
        if let e = evaluation {
            summary["eval_ce"] = e.crossEntropy
            summary["eval_tokens"] = e.tokens
            summary["eval_accuracy"] = e.accuracy
            summary["eval_ece"] = e.calibrationError
        }
        try log(summary)
        return TrainingOutcome(resumedAt: resumed, last: last, evaluation: evaluation, seconds: seconds)
    }
}
