#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Training losses over student logits: hard-label cross-entropy, distillation against sparse
// teacher targets (renormalised top-k, top-k plus a tail bucket, sampled ids with weights)
// or a dense teacher distribution, temperature, mixing and z-loss — the paper's Eq. 7:
//     L = (1 - λ)·CE + λ·τ²·KD_τ + c_z·lse².
// Forward and backward are one fused pass per row, as llm.c fuses softmax and cross-entropy.

/// How the teacher targets of a row are to be read.
public enum DistillationTargetKind: Sendable, Equatable {
    /// No teacher: hard-label cross-entropy only.
    case none
    /// `weights` sum to one over the row's `ids` (renormalised top-k, or sampled draws
    /// count/N); KD = −Σ w_i log s_i.
    case sparse
    /// `weights` are the teacher's exact probabilities of `ids`, and the uncovered mass
    /// `tail` is one extra class: KD = −Σ w_i log s_i − t log(1 − Σ_{i∈ids} s_i).
    case sparseWithTail
    /// A full teacher distribution over the vocabulary (online teacher).
    case dense
}

/// Teacher targets for R rows in the loader's layout.
///
/// Sparse kinds: `ids` (R, k) with −1 marking unused slots, `weights` (R, k). Tail kind: also
/// `tail` (R). Dense kind: `weights` (R, V) teacher probabilities, `ids` unused.
public struct DistillationTargets {
    public var kind: DistillationTargetKind
    public var k: Int
    public var ids: UnsafePointer<Int32>?
    public var weights: UnsafePointer<Float>?
    public var tail: UnsafePointer<Float>?

    public init(kind: DistillationTargetKind, k: Int = 0, ids: UnsafePointer<Int32>? = nil,
                weights: UnsafePointer<Float>? = nil, tail: UnsafePointer<Float>? = nil) {
        self.kind = kind; self.k = k; self.ids = ids; self.weights = weights; self.tail = tail
    }

    public static let none = DistillationTargets(kind: .none)
}

/// Mixing of the loss terms.
public struct LossMix: Sendable, Equatable {
    /// λ: weight of the distillation term; 1 − λ weighs the hard-label term.
    public var lambda: Float
    /// τ: temperature applied to student logits (teacher targets arrive already at τ); the
    /// distillation term is scaled by τ² so its gradients keep their size (Hinton et al.).
    public var temperature: Float
    /// c_z: coefficient of the z-loss c_z·lse(z)² (0 disables).
    public var zLoss: Float

    public init(lambda: Float = 1, temperature: Float = 1, zLoss: Float = 0) {
        self.lambda = lambda; self.temperature = temperature; self.zLoss = zLoss
    }
}

/// Per-row parts of the loss, for logging.
public struct LossParts: Sendable, Equatable {
    /// Hard-label cross-entropy, nats.
    public var crossEntropy: Double = 0
    /// Distillation cross-entropy against the targets at τ (without τ²), nats.
    public var distillation: Double = 0
    /// Total as optimised (mixed, τ²-scaled, with z-loss), nats.
    public var total: Double = 0
    public init() {}
}

/// Loss and its gradient with respect to the logits, fused, for R rows.
///
/// logits (R, V), labels (R) -> dlogits (R, V) (overwritten; scaled by `scale`, e.g. 1/R for
/// a mean), returns the summed parts (unscaled). A row whose label is −1 is skipped (zero
/// gradient), as padding.
///
/// - Precondition: ids and labels are −1 or in 0..<V; `scratch` holds at least V floats.
public func distillationLossForwardBackward(
    logits: UnsafePointer<Float>, rows R: Int, vocab V: Int, labels: UnsafePointer<Int32>,
    targets: DistillationTargets, mix: LossMix, scale: Float,
    dlogits: UnsafeMutablePointer<Float>?, scratch: UnsafeMutablePointer<Float>
) -> LossParts {
    var parts = LossParts()
    let lambdaCE = targets.kind == .none ? 1 : 1 - mix.lambda
    let lambdaKD = targets.kind == .none ? 0 : mix.lambda
    let tau = mix.temperature, invTau = 1 / tau
    for r in 0..<R {
        let z = logits + r * V                // z (V)
        let y = Int(labels[r])
        let dz = dlogits.map { $0 + r * V }   // dz (V)
        if y < 0 {
            if let dz { dz.update(repeating: 0, count: V) }
            continue
        }
        let s = scratch
        var kd = 0.0
        if lambdaKD == 0, let dz {
            // Hard labels only: the exponentials go straight into dz and one pass scales them
            // (3 sweeps over the row instead of 5), with the general path's operations in the
            // same order, so the gradient is bit-identical to it.
            let (m, total) = expShiftedRow(z, V, scale: 1, into: dz)
            let lse = m + logf(total)
            let inverse = 1 / total
            let a = lambdaCE + 2 * mix.zLoss * lse
            let ey = dz[y]
            mapSIMD(dz, dz, V) { $0 * inverse * a * scale }
            dz[y] = (ey * inverse * a - lambdaCE) * scale
            let ce = Double(lse - z[y])
            parts.crossEntropy += ce
            parts.total += Double(lambdaCE) * ce + Double(mix.zLoss) * Double(lse) * Double(lse)
            continue
        }
        // s = softmax(z) at τ = 1, held in scratch (V).
        let lse = softmaxRow(z, V, scale: 1, into: s)
        let ce = Double(lse - z[y])
        // dz = (1-λ)(s - onehot(y)) + 2 c_z lse s, then the KD term below.
        if let dz {
            let a = lambdaCE + 2 * mix.zLoss * lse
            mapSIMD(dz, s, V) { $0 * a }
            dz[y] -= lambdaCE
        }
        if lambdaKD != 0 {
            // sτ = softmax(z/τ): reuse scratch when τ = 1, else recompute.
            let lseT = tau == 1 ? lse : softmaxRow(z, V, scale: invTau, into: s)
            // d(τ² KD)/dz = τ (sτ − q), with q the (effective) target distribution.
            let g = lambdaKD * tau
            switch targets.kind {
            case .none: break
            case .sparse, .sparseWithTail:
                let ids = targets.ids! + r * targets.k, w = targets.weights! + r * targets.k
                for i in 0..<targets.k where ids[i] >= 0 {
                    let id = Int(ids[i])
                    kd -= Double(w[i]) * Double(z[id] * invTau - lseT)
                }
                if targets.kind == .sparse {
                    if let dz {
                        axpy(dz, s, g, V)
                        for i in 0..<targets.k where ids[i] >= 0 { dz[Int(ids[i])] -= g * w[i] }
                    }
                } else {
                    let t = targets.tail![r]
                    // Student tail mass summed directly over the uncovered ids: 1 − covered
                    // loses all precision when the head holds nearly everything.
                    let sTail = max(uncoveredMass(s, V, ids, targets.k), Double.leastNormalMagnitude)
                    if t > 0 { kd -= Double(t) * log(sTail) }
                    if let dz {
                        // j ∈ ids: τ(sτ_j − w_j);  j ∉ ids: τ sτ_j (1 − t / sτ_tail).
                        let f = Float(1 - Double(t) / sTail)
                        axpy(dz, s, g * f, V)
                        for i in 0..<targets.k where ids[i] >= 0 {
                            let id = Int(ids[i])
                            dz[id] += g * (s[id] - s[id] * f - w[i])
                        }
                    }
                }
            case .dense:
                let q = targets.weights! + r * V
                for j in 0..<V where q[j] > 0 { kd -= Double(q[j]) * Double(z[j] * invTau - lseT) }
                if let dz { axpy(dz, s, g, V); axpy(dz, q, -g, V) }
            }
        }
        if let dz { mapSIMD(dz, dz, V) { $0 * scale } }
        parts.crossEntropy += ce
        parts.distillation += kd
        parts.total += Double(lambdaCE) * ce + Double(lambdaKD * tau * tau) * kd + Double(mix.zLoss) * Double(lse) * Double(lse)
    }
    return parts
}

/// s = softmax(scale·x) over n > 0 elements, 16 lanes at a time; returns log Σ_j e^(scale·x_j).
/// x (n) -> s (n). `scale` must be > 0 (a temperature's inverse), so max(scale·x) = scale·max(x).
@inline(__always)
func softmaxRow(_ x: UnsafePointer<Float>, _ n: Int, scale: Float, into s: UnsafeMutablePointer<Float>) -> Float {
    let (m, total) = expShiftedRow(x, n, scale: scale, into: s)
    let inverse = 1 / total
    mapSIMD(s, s, n) { $0 * inverse }
    return m + logf(total)
}

/// e = exp(scale·x − m) with m = max(scale·x), over n > 0 elements; returns m and Σ e.
/// x (n) -> e (n), not overlapping. `scale` must be > 0.
@inline(__always)
func expShiftedRow(_ x: UnsafePointer<Float>, _ n: Int, scale: Float,
                   into s: UnsafeMutablePointer<Float>) -> (max: Float, sum: Float) {
    let m = scale * rowMax(x, n)
    let sv = SIMD16<Float>(repeating: scale), mv = SIMD16<Float>(repeating: m)
    let raw = UnsafeRawPointer(x), out = UnsafeMutableRawPointer(s)
    var sum = SIMD16<Float>()
    var i = 0
    while i + 16 <= n {
        // Safe because i+16 <= n elements exist in x and s.
        let e = simdExp(raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self) * sv - mv)
        out.storeBytes(of: e, toByteOffset: i * 4, as: SIMD16<Float>.self)
        sum += e
        i += 16
    }
    if i < n {
        // The tail goes through a vector padded with −∞, whose lanes add e^−∞ = 0.
        var v = SIMD16<Float>(repeating: -.infinity)
        // Safe because only the n-i remaining elements are read and written.
        for j in 0..<(n - i) { v[j] = x[i + j] }
        let e = simdExp(v * sv - mv)
        for j in 0..<(n - i) { s[i + j] = e[j] }
        sum += e
    }
    return (m, sum.sum())
}

/// Σ s_j over j not among the valid (≥ 0, distinct) `ids` (k), by a sweep over the sorted ids.
@inline(__always)
func uncoveredMass(_ s: UnsafePointer<Float>, _ V: Int, _ ids: UnsafePointer<Int32>, _ k: Int) -> Double {
    withUnsafeTemporaryAllocation(of: Int32.self, capacity: max(k, 1)) { buf in
        var n = 0
        for i in 0..<k where ids[i] >= 0 { buf[n] = ids[i]; n += 1 }
        // Safe because the first n slots were just initialised.
        buf[0..<n].sort()
        var total = 0.0, next = 0, j = 0
        while j < V {
            let stop = next < n ? Int(buf[next]) : V
            while j < stop { total += Double(s[j]); j += 1 }
            if next < n { j = stop + 1; next += 1 }
        }
        return total
    }
}
