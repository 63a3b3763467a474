import Foundation
import Kernels
import Models

/// Held-out quality of a model on a token stream.
public struct Evaluation: Codable, Sendable, Equatable {
    /// Mean next-token cross-entropy, nats/token.
    public var crossEntropy: Double
    /// Tokens evaluated.
    public var tokens: Int
    /// Fraction of tokens whose most probable id is the real next token.
    public var accuracy: Double
    /// Expected calibration error of the top-1 prediction (15 equal-width confidence bins).
    public var calibrationError: Double
    /// Mean confidence (top-1 probability) minus accuracy: > 0 is overconfident.
    public var overconfidence: Double
    /// Mean KL(teacher ‖ model) per token, nats, when a teacher was given.
    public var klToTeacher: Double?
}

/// Evaluates `model` on consecutive, non-overlapping windows of `length` tokens of `tokens`
/// (window w predicts tokens [w·T + 1, w·T + T]), at most `maxWindows` of them, in batches of
/// `batch`. With a `teacher` (same vocabulary) also the KL from the teacher's distribution.
///
/// - Throws: ``TrainingError/tooFewTokens(_:)`` for a stream shorter than one window; model
///   errors for ids outside the vocabulary.
public func evaluate(model: TrainableLlama, tokens: [Int32], length T: Int, batch B: Int, maxWindows: Int? = nil,
                     teacher: Transformer? = nil, pool: ThreadPool) throws -> Evaluation {
    let V = model.config.vocabSize
    let available = tokens.count > T ? (tokens.count - 1) / T : 0
    let windows = min(available, maxWindows ?? available)
    guard windows >= 1 else { throw TrainingError.tooFewTokens("evaluation needs more than \(T) tokens, got \(tokens.count)") }
    if let teacher, teacher.config.vocabSize != V {
        throw TrainingError.badSetting("teacher vocabulary \(teacher.config.vocabSize) differs from the student's \(V)")
    }
    let a = TrainingActivations(batch: B, length: T, config: model.config)
    let bins = 15
    var binCount = [Int](repeating: 0, count: bins), binConfidence = [Double](repeating: 0, count: bins)
    var binCorrect = [Int](repeating: 0, count: bins)
    var ce = 0.0, kl = 0.0, correct = 0, confidence = 0.0, n = 0
    var inputs = [Int32](repeating: 0, count: B * T), labels = [Int32](repeating: -1, count: B * T)
    var start = 0
    while start < windows {
        let rows = min(B, windows - start)
        for b in 0..<B {
            for t in 0..<T {
                let i = b * T + t
                if b < rows {
                    let s = (start + b) * T + t
                    inputs[i] = tokens[s]; labels[i] = tokens[s + 1]
                } else {
                    inputs[i] = 0; labels[i] = -1
                }
            }
        }
        try inputs.withUnsafeBufferPointer { try model.forward(tokens: $0.baseAddress!, activations: a, pool: pool) }
        let teacherLogits = try teacher.map { try $0.logits(tokens: inputs, batch: B, pool: pool) }
        // Per-row statistics in parallel, then summed in row order (thread-independent).
        let N = B * T
        var rowCE = [Double](repeating: 0, count: N), rowKL = [Double](repeating: 0, count: N)
        var rowTop = [Float](repeating: 0, count: N), rowHit = [Bool](repeating: false, count: N)
        rowCE.withUnsafeMutableBufferPointer { ceOut in rowKL.withUnsafeMutableBufferPointer { klOut in
        rowTop.withUnsafeMutableBufferPointer { topOut in rowHit.withUnsafeMutableBufferPointer { hitOut in
            pool.parallelFor(N, granule: 8) { rs in
                for r in rs where labels[r] >= 0 {
                    // Safe because row r spans V floats of the (N, V) logits.
                    let z = a.logits + r * V
                    let lse = logsumexp(z, count: V)
                    var best = 0
                    for j in 1..<V where z[j] > z[best] { best = j }
                    ceOut[r] = Double(lse - z[Int(labels[r])])
                    topOut[r] = expf(z[best] - lse)
                    hitOut[r] = best == Int(labels[r])
                    if let tl = teacherLogits {
                        tl.withUnsafeBufferPointer { tz in
                            let u = tz.baseAddress! + r * V
                            let tlse = logsumexp(u, count: V)
                            var s = 0.0
                            for j in 0..<V {
                                let lp = Double(u[j] - tlse)
                                s += exp(lp) * (lp - Double(z[j] - lse))
                            }
                            klOut[r] = s
                        }
                    }
                }
            }
        } } } }
        for r in 0..<N where labels[r] >= 0 {
            ce += rowCE[r]; kl += rowKL[r]; n += 1
            confidence += Double(rowTop[r])
            if rowHit[r] { correct += 1 }
            let bin = min(bins - 1, Int(Double(rowTop[r]) * Double(bins)))
            binCount[bin] += 1; binConfidence[bin] += Double(rowTop[r]); if rowHit[r] { binCorrect[bin] += 1 }
        }
        start += rows
    }
    var ece = 0.0
    for i in 0..<bins where binCount[i] > 0 {
        ece += abs(binConfidence[i] - Double(binCorrect[i])) / Double(n)
    }
    let accuracy = Double(correct) / Double(n)
    return Evaluation(crossEntropy: ce / Double(n), tokens: n, accuracy: accuracy, calibrationError: ece,
                      overconfidence: confidence / Double(n) - accuracy,
                      klToTeacher: teacher == nil ? nil : kl / Double(n))
}
