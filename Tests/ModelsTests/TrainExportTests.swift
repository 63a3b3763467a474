import Checkpoints
import Kernels
import Testing
@testable import Models

/// A checkpoint written by `logitcache train` (30 steps of a 2-layer untied GQA student, see
/// tools/check_train_export.py) against the logits transformers computes from the same files.
@Suite struct TrainExportTests {
    static let name = "trained_export"

    /// Largest |ours − transformers| over the fixture batch, and the reference logits' range.
    func compare(_ logits: [Float], _ reference: Reference) -> (worst: Double, range: Double) {
        let lo = reference.logits.min() ?? 0, hi = reference.logits.max() ?? 0
        let worst = zip(logits, reference.logits).map { abs(Double($0) - Double($1)) }.max() ?? .infinity
        return (logits.count == reference.logits.count ? worst : .infinity, Double(hi - lo))
    }

    @Test func inferenceEngineMatchesTransformers() throws {
        let reference = try Reference(Self.name)
        let pool = ThreadPool(threadCount: 2)
        let model = try Transformer(directory: fixtureRoot + "/" + Self.name, pool: pool)
        let logits = try model.logits(tokens: reference.tokens.flatMap { $0 }, batch: reference.tokens.count, pool: pool)
        let (worst, range) = compare(logits, reference)
        #expect(range > 1, "reference logits too flat to test anything")
        #expect(worst <= 1e-4 * range, "max |diff| \(worst), range \(range)")
    }

    /// The training graph reloaded from its own export gives the same logits too.
    @Test func trainingGraphReloadMatchesTransformers() throws {
        let reference = try Reference(Self.name)
        let model = try TrainableLlama(directory: fixtureRoot + "/" + Self.name)
        let B = reference.tokens.count, T = reference.tokens[0].count, V = model.config.vocabSize
        let a = TrainingActivations(batch: B, length: T, config: model.config)
        let tokens = reference.tokens.flatMap { $0 }
        try tokens.withUnsafeBufferPointer { try model.forward(tokens: $0.baseAddress!, activations: a, pool: ThreadPool(threadCount: 2)) }
        let logits = Array(UnsafeBufferPointer(start: a.logits, count: B * T * V))
        let (worst, range) = compare(logits, reference)
        #expect(worst <= 1e-4 * range, "max |diff| \(worst), range \(range)")
    }
}
