import Foundation
import Testing
@testable import Models

@Suite struct AdamWTests {
    /// Double-precision AdamW written from the paper's form (bias-corrected moments, then
    /// decoupled decay), compared over 25 steps with changing gradients.
    @Test func tracksADoublePrecisionReferenceOverManySteps() {
        let n = 10
        let s = AdamW.Settings(beta1: 0.9, beta2: 0.95, epsilon: 1e-8, weightDecay: 0.1)
        let opt = AdamW(count: n, settings: s, decayRanges: [0..<6])
        var p: [Float] = (0..<n).map { Float($0) * 0.3 - 1 }
        var pRef = p.map(Double.init), m = [Double](repeating: 0, count: n), v = m
        for t in 1...25 {
            let g: [Float] = (0..<n).map { i in Float(sin(Double(i * 7 + t)) * (i == 3 ? 1e-3 : 1)) }
            let lr: Float = 0.01 * Float(t % 5 + 1)
            p.withUnsafeMutableBufferPointer { pp in g.withUnsafeBufferPointer { opt.update(params: pp.baseAddress!, grads: $0.baseAddress!, lr: lr) } }
            for i in 0..<n {
                let gi = Double(g[i])
                m[i] = 0.9 * m[i] + 0.1 * gi
                v[i] = 0.95 * v[i] + 0.05 * gi * gi
                let mHat = m[i] / (1 - pow(0.9, Double(t))), vHat = v[i] / (1 - pow(0.95, Double(t)))
                if i < 6 { pRef[i] -= Double(lr) * 0.1 * pRef[i] }
                pRef[i] -= Double(lr) * mHat / (vHat.squareRoot() + 1e-8)
            }
        }
        for i in 0..<n { #expect(abs(Double(p[i]) - pRef[i]) < 1e-5, "param \(i): \(p[i]) vs \(pRef[i])") }
        #expect(opt.step == 25)
    }

    /// First step without decay moves every parameter by lr in the direction of −sign(g)
    /// (m̂ = g, v̂ = g², so m̂/√v̂ = ±1), up to ε.
    @Test func firstStepIsSignDescent() {
        let opt = AdamW(count: 3, settings: .init(weightDecay: 0), decayRanges: [])
        var p: [Float] = [1, 1, 1]
        let g: [Float] = [0.5, -2, 1e-3]
        opt.update(params: &p, grads: g, lr: 0.1)
        #expect(abs(p[0] - 0.9) < 1e-6 && abs(p[1] - 1.1) < 1e-6 && abs(p[2] - 0.9) < 1e-4)
    }

    @Test func clippingScalesOnlyAboveTheThreshold() {
        var g: [Float] = [3, 4]
        let norm = clipGradientNorm(&g, count: 2, maxNorm: 1)
        #expect(abs(norm - 5) < 1e-6)
        #expect(abs(g[0] - 0.6) < 1e-5 && abs(g[1] - 0.8) < 1e-5)
        var small: [Float] = [0.3, 0.4]
        clipGradientNorm(&small, count: 2, maxNorm: 1)
        #expect(small == [0.3, 0.4])
    }

    @Test func scheduleWarmsUpLinearlyThenDecaysByCosine() {
        let s = LearningRateSchedule(maxLR: 1, minLR: 0.1, warmupSteps: 4, totalSteps: 14)
        #expect(s.rate(at: 0) == 0.25 && s.rate(at: 3) == 1)
        #expect(abs(s.rate(at: 4) - 1) < 1e-6)
        #expect(abs(s.rate(at: 9) - 0.55) < 1e-6)   // halfway: 0.1 + 0.5·0.9
        #expect(abs(s.rate(at: 14) - 0.1) < 1e-6)
        #expect((4..<14).allSatisfy { s.rate(at: $0) >= s.rate(at: $0 + 1) })
    }
}
