import Foundation
import Testing
import Checkpoints
import Kernels
@testable import Models
import Random

@Suite struct TrainableLlamaTests {
    static func tinyConfig(tied: Bool) throws -> ModelConfig {
        try ModelConfig.llama(vocabSize: 29, hiddenSize: 16, layerCount: 2, headCount: 4, kvHeadCount: 2,
                              intermediateSize: 24, maxPositions: 16, tieWordEmbeddings: tied)
    }

    /// A tiny model with weights large enough that gradients stand well above float32 noise.
    static func tinyModel(tied: Bool, seed: UInt64 = 7) throws -> TrainableLlama {
        let m = try TrainableLlama(config: tinyConfig(tied: tied), seed: seed)
        var rng = SplitMix64(seed: seed &+ 99)
        for t in m.layout.tensors {
            for i in t.range { m.params[i] = t.shape.count == 1 ? 1 + 0.3 * rng.nextSymmetricUnit() : 0.4 * rng.nextSymmetricUnit() }
        }
        return m
    }

    static let B = 2, T = 6
    static let tokens: [Int32] = [3, 17, 5, 28, 0, 9, 11, 2, 2, 14, 7, 21]
    static let labels: [Int32] = [17, 5, 28, 0, 9, -1, 2, 2, 14, 7, 21, 4]

    func meanLoss(_ m: TrainableLlama, _ a: TrainingActivations, targets: DistillationTargets, mix: LossMix,
                  pool: ThreadPool) throws -> Double {
        try Self.tokens.withUnsafeBufferPointer { try m.forward(tokens: $0.baseAddress!, activations: a, pool: pool) }
        let (parts, rows) = Self.labels.withUnsafeBufferPointer {
            m.loss(labels: $0.baseAddress!, targets: targets, mix: mix, activations: a, pool: pool)
        }
        return parts.total / Double(rows)
    }

    /// Every parameter tensor's gradient against central finite differences of the mean loss,
    /// for hard-label CE and for a top-k-with-tail distillation mix (tied and untied heads).
    @Test(arguments: [true, false]) func gradientsMatchFiniteDifferences(tied: Bool) throws {
        let m = try Self.tinyModel(tied: tied)
        let pool = ThreadPool(threadCount: 2)
        let a = TrainingActivations(batch: Self.B, length: Self.T, config: m.config)
        let N = Self.B * Self.T, k = 3
        // Targets: ids (N, k), exact probabilities summing below one, tail = the rest.
        var ids = [Int32](repeating: -1, count: N * k), w = [Float](repeating: 0, count: N * k), tail = [Float](repeating: 0, count: N)
        for r in 0..<N {
            for j in 0..<(r % 4 == 3 ? 2 : k) { ids[r * k + j] = Int32((r * 5 + j * 7) % 29); w[r * k + j] = 0.5 / Float(j + 1) / 1.9 }
            tail[r] = 1 - (0..<k).map { w[r * k + $0] }.reduce(0, +)
        }
        for (kind, mix) in [(DistillationTargetKind.none, LossMix()), (.sparseWithTail, LossMix(lambda: 0.7, temperature: 1, zLoss: 1e-2))] {
            try ids.withUnsafeBufferPointer { idp in try w.withUnsafeBufferPointer { wp in try tail.withUnsafeBufferPointer { tp in
                let targets = DistillationTargets(kind: kind, k: k, ids: idp.baseAddress, weights: wp.baseAddress, tail: tp.baseAddress)
                m.zeroGradients()
                _ = try meanLoss(m, a, targets: targets, mix: mix, pool: pool)
                try Self.tokens.withUnsafeBufferPointer { try m.backward(tokens: $0.baseAddress!, activations: a, pool: pool) }
                let analytic = Array(UnsafeBufferPointer(start: m.grads, count: m.parameterCount))
                var checked = 0
                for t in m.layout.tensors {
                    for s in 0..<4 {
                        let i = t.offset + (s * 7919) % t.count
                        let saved = m.params[i], h: Float = 1e-2
                        m.params[i] = saved + h
                        let up = try meanLoss(m, a, targets: targets, mix: mix, pool: pool)
                        m.params[i] = saved - h
                        let down = try meanLoss(m, a, targets: targets, mix: mix, pool: pool)
                        m.params[i] = saved
                        let fd = (up - down) / Double(2 * h)
                        let g = Double(analytic[i])
                        #expect(abs(fd - g) <= 2e-3 + 2e-2 * abs(fd), "\(t.name)[\(i - t.offset)] \(kind): analytic \(g) vs FD \(fd)")
                        checked += 1
                    }
                }
                #expect(checked == 4 * m.layout.tensors.count)
            } } }
        }
    }

    /// The training forward equals the inference engine (itself checked against transformers)
    /// on the exported checkpoint, and a reload restores the parameters exactly.
    @Test func exportLoadsInTheInferenceEngineWithEqualLogits() throws {
        let m = try Self.tinyModel(tied: false)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("trainable-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try m.export(to: dir)
        let pool = ThreadPool(threadCount: 2)
        let a = TrainingActivations(batch: Self.B, length: Self.T, config: m.config)
        try Self.tokens.withUnsafeBufferPointer { try m.forward(tokens: $0.baseAddress!, activations: a, pool: pool) }
        let reference = try Transformer(directory: dir, pool: pool).logits(tokens: Self.tokens, batch: Self.B, pool: pool)
        var worst: Float = 0
        for i in reference.indices { worst = max(worst, abs(reference[i] - a.logits[i])) }
        #expect(worst < 1e-4, "largest logit difference \(worst)")
        let reloaded = try TrainableLlama(directory: dir)
        #expect((0..<m.parameterCount).allSatisfy { reloaded.params[$0] == m.params[$0] })
    }

    /// Same loss and gradients with 1 and 2 threads, bit for bit.
    @Test func gradientsAreThreadCountIndependent() throws {
        var results: [[Float]] = []
        for threads in [1, 2] {
            let m = try Self.tinyModel(tied: true)
            let pool = ThreadPool(threadCount: threads)
            let a = TrainingActivations(batch: Self.B, length: Self.T, config: m.config)
            _ = try meanLoss(m, a, targets: .none, mix: LossMix(), pool: pool)
            try Self.tokens.withUnsafeBufferPointer { try m.backward(tokens: $0.baseAddress!, activations: a, pool: pool) }
            results.append(Array(UnsafeBufferPointer(start: m.grads, count: m.parameterCount)))
        }
        #expect(results[0] == results[1])
    }

    @Test func refusesUnsupportedModels() throws {
        var c = try Self.tinyConfig(tied: true)
        c.qkvBias = true
        #expect(throws: ModelError.self) { try TrainableLlama(config: c, seed: 0) }
    }
}
