import Foundation
import Testing
@testable import Kernels

/// Independent double-precision reference of Eq. 7 for one row, written from the definitions
/// (log-softmax, cross-entropy, KL forms), not from the fused kernel's algebra.
func referenceLoss(z: [Double], label: Int, kind: DistillationTargetKind, ids: [Int], w: [Double],
                   tail: Double, dense: [Double], lambda: Double, tau: Double, zLoss: Double) -> Double {
    func logSoftmax(_ x: [Double]) -> [Double] {
        let m = x.max()!
        let l = m + log(x.map { exp($0 - m) }.reduce(0, +))
        return x.map { $0 - l }
    }
    let ls = logSoftmax(z)
    let lse = z[0] - ls[0]
    let ce = -ls[label]
    let lsT = logSoftmax(z.map { $0 / tau })
    var kd = 0.0
    switch kind {
    case .none: return ce + zLoss * lse * lse
    case .sparse: kd = -zip(ids, w).map { $1 * lsT[$0] }.reduce(0, +)
    case .sparseWithTail:
        let sT = lsT.map(exp)
        let tailS = (0..<z.count).filter { !ids.contains($0) }.map { sT[$0] }.reduce(0, +)
        kd = -zip(ids, w).map { $1 * lsT[$0] }.reduce(0, +) - tail * log(tailS)
    case .dense: kd = -zip(dense, lsT).map { $0 * $1 }.reduce(0, +)
    }
    return (1 - lambda) * ce + lambda * tau * tau * kd + zLoss * lse * lse
}

@Suite struct LossesTests {
    struct Case: CustomStringConvertible, Sendable {
        var kind: DistillationTargetKind
        var lambda: Float, tau: Float, zLoss: Float
        var description: String { "\(kind) λ=\(lambda) τ=\(tau) z=\(zLoss)" }
    }

    static let cases: [Case] = [
        Case(kind: .none, lambda: 0, tau: 1, zLoss: 0),
        Case(kind: .none, lambda: 0, tau: 1, zLoss: 1e-2),
        Case(kind: .sparse, lambda: 1, tau: 1, zLoss: 0),
        Case(kind: .sparse, lambda: 0.7, tau: 2, zLoss: 1e-3),
        Case(kind: .sparseWithTail, lambda: 1, tau: 1, zLoss: 0),
        Case(kind: .sparseWithTail, lambda: 0.7, tau: 0.5, zLoss: 0),
        Case(kind: .dense, lambda: 1, tau: 1, zLoss: 0),
        Case(kind: .dense, lambda: 0.5, tau: 3, zLoss: 1e-2),
    ]

    /// Loss equals the reference; gradient equals central finite differences of the reference.
    @Test(arguments: cases)
    func fusedLossAndGradientMatchReferenceAndFiniteDifferences(c: Case) {
        let V = 37, R = 3, k = 5
        // Deterministic pseudo-random logits and targets.
        var state: UInt64 = 12345
        func rnd() -> Double { state = state &* 6364136223846793005 &+ 1442695040888963407; return Double(state >> 11) * 0x1p-53 }
        let logits = (0..<R * V).map { _ in Float(rnd() * 6 - 3) }
        let labels: [Int32] = [4, -1, 36]
        var ids = [Int32](repeating: -1, count: R * k), w = [Float](repeating: 0, count: R * k)
        var tail = [Float](repeating: 0, count: R), dense = [Float](repeating: 0, count: R * V)
        for r in 0..<R {
            // Teacher: a softmax of other random logits; rows keep 4 or 5 of its top ids.
            let t = (0..<V).map { _ in rnd() * 4 }
            let m = t.max()!, e = t.map { exp($0 - m) }, Z = e.reduce(0, +)
            let p = e.map { $0 / Z }
            for j in 0..<V { dense[r * V + j] = Float(p[j]) }
            let top = (0..<V).sorted { p[$0] > p[$1] }.prefix(r == 2 ? 4 : 5)
            let mass = top.map { p[$0] }.reduce(0, +)
            for (i, id) in top.enumerated() {
                ids[r * k + i] = Int32(id)
                w[r * k + i] = Float(c.kind == .sparse ? p[id] / mass : p[id])
            }
            tail[r] = Float(1 - mass)
        }
        let mix = LossMix(lambda: c.lambda, temperature: c.tau, zLoss: c.zLoss)
        var dlogits = [Float](repeating: .nan, count: R * V)
        var scratch = [Float](repeating: 0, count: V)
        let parts = ids.withUnsafeBufferPointer { idp in
            w.withUnsafeBufferPointer { wp in
                tail.withUnsafeBufferPointer { tp in
                    dense.withUnsafeBufferPointer { dp in
                        let targets = DistillationTargets(kind: c.kind, k: k, ids: idp.baseAddress,
                                                          weights: c.kind == .dense ? dp.baseAddress : wp.baseAddress,
                                                          tail: tp.baseAddress)
                        return distillationLossForwardBackward(
                            logits: logits, rows: R, vocab: V, labels: labels, targets: targets, mix: mix,
                            scale: 1, dlogits: &dlogits, scratch: &scratch)
                    }
                }
            }
        }
        var total = 0.0
        for r in 0..<R where labels[r] >= 0 {
            let rowIDs = (0..<k).map { Int(ids[r * k + $0]) }.filter { $0 >= 0 }
            let rowW = (0..<rowIDs.count).map { Double(w[r * k + $0]) }
            let rowDense = (0..<V).map { Double(dense[r * V + $0]) }
            func f(_ zz: [Double]) -> Double {
                referenceLoss(z: zz, label: Int(labels[r]), kind: c.kind, ids: rowIDs, w: rowW, tail: Double(tail[r]),
                              dense: rowDense, lambda: Double(c.lambda), tau: Double(c.tau), zLoss: Double(c.zLoss))
            }
            let z = (0..<V).map { Double(logits[r * V + $0]) }
            total += f(z)
            let h = 1e-5
            for j in 0..<V {
                var zp = z, zm = z
                zp[j] += h; zm[j] -= h
                let fd = (f(zp) - f(zm)) / (2 * h)
                #expect(abs(fd - Double(dlogits[r * V + j])) < 2e-4, "row \(r) logit \(j): fd \(fd) vs \(dlogits[r * V + j])")
            }
        }
        #expect(abs(parts.total - total) < 1e-4 * max(1, abs(total)), "loss \(parts.total) vs reference \(total)")
        // The padded row gets no gradient.
        #expect((0..<V).allSatisfy { dlogits[V + $0] == 0 })
    }

    /// Hand-computed: V = 2, equal logits, label 0 → CE = log 2; a one-hot sparse target on id 1
    /// with λ = 1 gives KD = log 2 too, and dz = s − q = (0.5, −0.5).
    @Test func handComputedTwoClassExample() {
        let z: [Float] = [0, 0], labels: [Int32] = [0], ids: [Int32] = [1], w: [Float] = [1]
        var dz = [Float](repeating: 0, count: 2), scratch = [Float](repeating: 0, count: 2)
        let parts = distillationLossForwardBackward(
            logits: z, rows: 1, vocab: 2, labels: labels,
            targets: DistillationTargets(kind: .sparse, k: 1, ids: ids, weights: w),
            mix: LossMix(lambda: 1), scale: 1, dlogits: &dz, scratch: &scratch)
        #expect(abs(parts.crossEntropy - log(2)) < 1e-6 && abs(parts.distillation - log(2)) < 1e-6)
        #expect(abs(parts.total - log(2)) < 1e-6)
        #expect(abs(dz[0] - 0.5) < 1e-6 && abs(dz[1] + 0.5) < 1e-6)
    }
}
