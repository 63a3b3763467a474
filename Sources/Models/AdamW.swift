#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// AdamW with decoupled weight decay (Loshchilov & Hutter, 2019), computed exactly as
/// PyTorch's `torch.optim.AdamW` (non-fused, non-amsgrad) so training runs track PyTorch
/// step by step:
///
///     p ← p · (1 − lr·wd)                       (only where decay applies)
///     m ← β₁·m + (1 − β₁)·g
///     v ← β₂·v + (1 − β₂)·g²
///     p ← p − (lr / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + ε)
///
/// Parameters, gradients and both moments are single flat buffers of `count` floats; the
/// optimizer owns its moments. `decayRanges` lists the parameter ranges that take weight
/// decay (by convention every matrix, embeddings included as in nanoGPT; not norms or biases).
public final class AdamW: @unchecked Sendable {
    public struct Settings: Sendable, Equatable, Codable {
        public var beta1: Float = 0.9
        public var beta2: Float = 0.95
        public var epsilon: Float = 1e-8
        public var weightDecay: Float = 0.1
        public init(beta1: Float = 0.9, beta2: Float = 0.95, epsilon: Float = 1e-8, weightDecay: Float = 0.1) {
            self.beta1 = beta1; self.beta2 = beta2; self.epsilon = epsilon; self.weightDecay = weightDecay
        }
    }

    public let count: Int
    public let settings: Settings
    public let decayRanges: [Range<Int>]
    /// Steps taken so far (t after the last step).
    public private(set) var step: Int = 0
    /// First moment m. Shape [count].
    public let m: UnsafeMutablePointer<Float>
    /// Second moment v. Shape [count].
    public let v: UnsafeMutablePointer<Float>
    private let decays: UnsafeMutablePointer<Bool>

    public init(count: Int, settings: Settings = .init(), decayRanges: [Range<Int>]) {
        precondition(decayRanges.allSatisfy { $0.lowerBound >= 0 && $0.upperBound <= count }, "decay range outside parameters")
        self.count = count
        self.settings = settings
        self.decayRanges = decayRanges
        m = .allocate(capacity: count); m.initialize(repeating: 0, count: count)
        v = .allocate(capacity: count); v.initialize(repeating: 0, count: count)
        decays = .allocate(capacity: count); decays.initialize(repeating: false, count: count)
        for r in decayRanges { for i in r { decays[i] = true } }
    }

    deinit { m.deallocate(); v.deallocate(); decays.deallocate() }

    /// One update of `params` (count) from `grads` (count) at learning rate `lr`.
    public func update(params p: UnsafeMutablePointer<Float>, grads g: UnsafePointer<Float>, lr: Float) {
        step += 1
        let s = settings
        let t = Float(step)
        let bc1 = 1 - powf(s.beta1, t), bc2 = 1 - powf(s.beta2, t)
        let stepSize = lr / bc1, bc2Sqrt = bc2.squareRoot()
        let decay = 1 - lr * s.weightDecay
        for i in 0..<count {
            if decays[i] { p[i] *= decay }
            let gi = g[i]
            m[i] = m[i] * s.beta1 + (1 - s.beta1) * gi
            v[i] = v[i] * s.beta2 + (1 - s.beta2) * gi * gi
            let denom = v[i].squareRoot() / bc2Sqrt + s.epsilon
            p[i] -= stepSize * m[i] / denom
        }
    }

    /// Restores a saved state (from a training checkpoint).
    /// - Precondition: `m` and `v` hold `count` floats each.
    public func restore(step: Int, m mSaved: [Float], v vSaved: [Float]) {
        precondition(mSaved.count == count && vSaved.count == count, "optimizer state of another size")
        self.step = step
        for i in 0..<count { m[i] = mSaved[i]; v[i] = vSaved[i] }
    }
}

/// Scales gradients so their global L2 norm is at most `maxNorm`, as PyTorch's
/// `clip_grad_norm_`: coefficient `maxNorm / (norm + 1e-6)`, applied only when below 1.
///
/// grads (count) updated in place; returns the norm before clipping.
@discardableResult
public func clipGradientNorm(_ g: UnsafeMutablePointer<Float>, count: Int, maxNorm: Float) -> Float {
    var sum = 0.0
    for i in 0..<count { sum += Double(g[i]) * Double(g[i]) }
    let norm = Float(sum.squareRoot())
    let coefficient = maxNorm / (norm + 1e-6)
    if coefficient < 1 { for i in 0..<count { g[i] *= coefficient } }
    return norm
}

/// Learning rate with linear warmup then cosine decay to `minLR` (llm.c's schedule):
/// step `t` (0-based) of `total`: `maxLR·(t+1)/warmup` while t < warmup, then
/// `minLR + ½(1 + cos(π·(t − warmup)/(total − warmup)))·(maxLR − minLR)`.
public struct LearningRateSchedule: Sendable, Equatable, Codable {
    public var maxLR: Float
    public var minLR: Float
    public var warmupSteps: Int
    public var totalSteps: Int

    public init(maxLR: Float, minLR: Float = 0, warmupSteps: Int, totalSteps: Int) {
        self.maxLR = maxLR; self.minLR = minLR; self.warmupSteps = warmupSteps; self.totalSteps = totalSteps
    }

    public func rate(at t: Int) -> Float {
        if t < warmupSteps { return maxLR * Float(t + 1) / Float(warmupSteps) }
        if t >= totalSteps { return minLR }
        let progress = Double(t - warmupSteps) / Double(max(1, totalSteps - warmupSteps))
        return minLR + Float(0.5 * (1 + cos(Double.pi * progress))) * (maxLR - minLR)
    }
}
