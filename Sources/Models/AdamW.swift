#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Kernels

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
    /// The parameters cut into runs that all take weight decay or all do not, in order.
    private let runs: [(range: Range<Int>, decays: Bool)]

    public init(count: Int, settings: Settings = .init(), decayRanges: [Range<Int>]) {
        precondition(decayRanges.allSatisfy { $0.lowerBound >= 0 && $0.upperBound <= count }, "decay range outside parameters")
        self.count = count
        self.settings = settings
        self.decayRanges = decayRanges
        m = .allocate(capacity: count); m.initialize(repeating: 0, count: count)
        v = .allocate(capacity: count); v.initialize(repeating: 0, count: count)
        var flags = [Bool](repeating: false, count: count)
        for r in decayRanges { for i in r { flags[i] = true } }
        var runs: [(range: Range<Int>, decays: Bool)] = []
        var start = 0
        while start < count {
            var end = start + 1
            while end < count && flags[end] == flags[start] { end += 1 }
            runs.append((start..<end, flags[start]))
            start = end
        }
        self.runs = runs
    }

    deinit { m.deallocate(); v.deallocate() }

    /// One update of `params` (count) from `grads` (count) at learning rate `lr`.
    ///
    /// Element-wise, 16 lanes at a time with the same operations in the same order as the
    /// formula above, so the result is the same for every `pool` (and as a scalar loop).
    public func update(params p: UnsafeMutablePointer<Float>, grads g: UnsafePointer<Float>, lr: Float,
                       pool: ThreadPool = .serial) {
        step += 1
        let s = settings
        let t = Float(step)
        let bc1 = 1 - powf(s.beta1, t), bc2 = 1 - powf(s.beta2, t)
        let constants = AdamWStep(beta1: s.beta1, beta2: s.beta2, epsilon: s.epsilon, stepSize: lr / bc1,
                                  bc2Sqrt: bc2.squareRoot(), decay: 1 - lr * s.weightDecay)
        let m = self.m, v = self.v, runs = self.runs
        pool.parallelFor(count, granule: 1 << 14) { chunk in
            for run in runs where run.range.overlaps(chunk) {
                let r = run.range.clamped(to: chunk)
                // Safe because r lies inside 0..<count, the length of all four buffers.
                constants.apply(p + r.lowerBound, g + r.lowerBound, m + r.lowerBound, v + r.lowerBound,
                                count: r.count, decays: run.decays)
            }
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

/// The scalars of one AdamW step and its element-wise update.
struct AdamWStep {
    let beta1: Float, beta2: Float, epsilon: Float, stepSize: Float, bc2Sqrt: Float, decay: Float

    /// p, g, m, v (n): one step over a run that takes weight decay or does not.
    @inline(__always)
    func apply(_ p: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>, _ m: UnsafeMutablePointer<Float>,
               _ v: UnsafeMutablePointer<Float>, count n: Int, decays: Bool) {
        typealias F = SIMD16<Float>
        let b1 = F(repeating: beta1), b2 = F(repeating: beta2), c1 = F(repeating: 1 - beta1), c2 = F(repeating: 1 - beta2)
        let eps = F(repeating: epsilon), step = F(repeating: stepSize), bc = F(repeating: bc2Sqrt), d = F(repeating: decay)
        let rp = UnsafeMutableRawPointer(p), rg = UnsafeRawPointer(g)
        let rm = UnsafeMutableRawPointer(m), rv = UnsafeMutableRawPointer(v)
        var i = 0
        while i + 16 <= n {
            // Safe because i+16 <= n elements exist in all four buffers.
            let o = i * 4
            var pv = rp.loadUnaligned(fromByteOffset: o, as: F.self)
            if decays { pv *= d }
            let gv = rg.loadUnaligned(fromByteOffset: o, as: F.self)
            let mv = rm.loadUnaligned(fromByteOffset: o, as: F.self) * b1 + c1 * gv
            let vv = rv.loadUnaligned(fromByteOffset: o, as: F.self) * b2 + c2 * gv * gv
            pv -= step * mv / (vv.squareRoot() / bc + eps)
            rp.storeBytes(of: pv, toByteOffset: o, as: F.self)
            rm.storeBytes(of: mv, toByteOffset: o, as: F.self)
            rv.storeBytes(of: vv, toByteOffset: o, as: F.self)
            i += 16
        }
        while i < n {
            if decays { p[i] *= decay }
            let gi = g[i]
            m[i] = m[i] * beta1 + (1 - beta1) * gi
            v[i] = v[i] * beta2 + (1 - beta2) * gi * gi
            p[i] -= stepSize * m[i] / (v[i].squareRoot() / bc2Sqrt + epsilon)
            i += 1
        }
    }
}

/// Elements per partial sum of ``clipGradientNorm``: the sum of squares is a sum of these
/// blocks' sums in block order, so it does not depend on the thread count.
let clipBlock = 1 << 14

/// Scales gradients so their global L2 norm is at most `maxNorm`, as PyTorch's
/// `clip_grad_norm_`: coefficient `maxNorm / (norm + 1e-6)`, applied only when below 1.
/// The sum of squares is taken in double precision over fixed blocks, so the result is the
/// same for every `pool`.
///
/// grads (count) updated in place; returns the norm before clipping.
@discardableResult
public func clipGradientNorm(_ g: UnsafeMutablePointer<Float>, count: Int, maxNorm: Float,
                             pool: ThreadPool = .serial) -> Float {
    let blocks = (count + clipBlock - 1) / clipBlock
    var partial = [Double](repeating: 0, count: blocks)
    partial.withUnsafeMutableBufferPointer { out in
        let out = out.baseAddress!  // Safe because partial has `blocks` elements (parallelFor skips 0).
        pool.parallelFor(blocks) { bs in
            for b in bs {
                let start = b * clipBlock, n = min(clipBlock, count - start)
                let raw = UnsafeRawPointer(g + start)
                var s0 = SIMD8<Double>(), s1 = SIMD8<Double>()
                var i = 0
                while i + 16 <= n {
                    // Safe because i+16 <= n elements of this block exist.
                    let x = raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
                    let lo = SIMD8<Double>(x.lowHalf), hi = SIMD8<Double>(x.highHalf)
                    s0 = s0.addingProduct(lo, lo); s1 = s1.addingProduct(hi, hi)
                    i += 16
                }
                var sum = (s0 + s1).sum()
                while i < n { sum += Double(g[start + i]) * Double(g[start + i]); i += 1 }
                out[b] = sum
            }
        }
    }
    let norm = Float(partial.reduce(0, +).squareRoot())
    let coefficient = maxNorm / (norm + 1e-6)
    if coefficient < 1 {
        pool.parallelFor(count, granule: clipBlock) { r in
            // Safe because r lies inside 0..<count.
            let base = UnsafeMutableRawPointer(g + r.lowerBound), n = r.count
            let c = SIMD16<Float>(repeating: coefficient)
            var i = 0
            while i + 16 <= n {
                base.storeBytes(of: base.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self) * c,
                                toByteOffset: i * 4, as: SIMD16<Float>.self)
                i += 16
            }
            while i < n { g[r.lowerBound + i] *= coefficient; i += 1 }
        }
    }
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
