import Foundation
import Testing
@testable import Kernels

// Every backward kernel against central finite differences of a double-precision reference
// forward: for a random upstream gradient g, L(x) = Σ g·f(x) and dL/dx_i ≈ (L(x+h·e_i) −
// L(x−h·e_i)) / 2h. Doubles make the difference quotient exact to ~1e-10, so the float32
// kernel's own rounding is all that is measured.

/// Central finite-difference gradient of a scalar function of x.
func finiteDifferences(_ x: [Double], h: Double = 1e-5, _ f: ([Double]) -> Double) -> [Double] {
    var x = x
    return x.indices.map { i in
        let x0 = x[i]
        x[i] = x0 + h; let up = f(x)
        x[i] = x0 - h; let down = f(x)
        x[i] = x0
        return (up - down) / (2 * h)
    }
}

func weighted(_ y: [Double], _ g: [Float]) -> Double { zip(y, g).reduce(0) { $0 + $1.0 * Double($1.1) } }
func doubles(_ a: [Float]) -> [Double] { a.map(Double.init) }
let gradientBound = 1e-8

/// Double reference of causal grouped-query attention; q (B,T,H,D), k, v (B,T,KH,D).
func referenceAttention(_ q: [Double], _ k: [Double], _ v: [Double], B: Int, T: Int, H: Int, KH: Int, D: Int,
                        scale: Double) -> [Double] {
    var out = [Double](repeating: 0, count: B * T * H * D)
    let group = H / KH
    for b in 0..<B { for h in 0..<H { for t in 0..<T {
        let g = h / group
        let s = (0...t).map { j in (0..<D).reduce(0.0) { $0 + q[((b * T + t) * H + h) * D + $1] * k[((b * T + j) * KH + g) * D + $1] } * scale }
        let m = s.max()!
        let e = s.map { exp($0 - m) }, z = e.reduce(0, +)
        for j in 0...t { for d in 0..<D { out[((b * T + t) * H + h) * D + d] += e[j] / z * v[((b * T + j) * KH + g) * D + d] } }
    }}}
    return out
}

@Suite struct BackwardTests {
    @Test func rmsnormBackwardMatchesFiniteDifferences() {
        var rng = Rng(101)
        for (rows, C) in [(1, 2), (3, 17), (4, 40)] {
            let x = rng.floats(rows * C, scale: 2), w = rng.floats(C), g = rng.floats(rows * C)
            let eps = 1e-5
            func f(_ x: [Double], _ w: [Double]) -> Double {
                var y = [Double]()
                for r in 0..<rows {
                    let ms = (0..<C).reduce(0.0) { $0 + x[r * C + $1] * x[r * C + $1] } / Double(C)
                    let s = 1 / (ms + eps).squareRoot()
                    for c in 0..<C { y.append(x[r * C + c] * s * w[c]) }
                }
                return weighted(y, g)
            }
            let refDx = finiteDifferences(doubles(x)) { f($0, doubles(w)) }
            let refDw = finiteDifferences(doubles(w)) { f(doubles(x), $0) }
            for pool in [pool1, pool2] {
                var y = [Float](repeating: 0, count: rows * C), rstd = [Float](repeating: 0, count: rows)
                var dx = [Float](repeating: 0, count: rows * C), dw = [Float](repeating: 0, count: C)
                rmsnormForward(out: &y, rstd: &rstd, input: x, weight: w, rows: rows, channels: C, eps: Float(eps), pool: pool)
                rmsnormBackward(dInput: &dx, dWeight: &dw, dOut: g, input: x, weight: w, rstd: rstd,
                                rows: rows, channels: C, pool: pool)
                #expect(nse(dx, refDx) <= gradientBound, "dx rows=\(rows) C=\(C)")
                #expect(nse(dw, refDw) <= gradientBound, "dw rows=\(rows) C=\(C)")
                // A second call accumulates: a + a is exact in floating point.
                let (dx1, dw1) = (dx, dw)
                rmsnormBackward(dInput: &dx, dWeight: &dw, dOut: g, input: x, weight: w, rstd: rstd,
                                rows: rows, channels: C, pool: pool)
                #expect(dx == dx1.map { 2 * $0 } && dw == dw1.map { 2 * $0 })
            }
        }
    }

    @Test func swigluBackwardMatchesFiniteDifferences() {
        var rng = Rng(102)
        for n in [1, 17, 300] {
            let gate = rng.floats(n, scale: 4), up = rng.floats(n, scale: 2), g = rng.floats(n)
            func f(_ a: [Double], _ u: [Double]) -> Double {
                weighted((0..<n).map { a[$0] / (1 + exp(-a[$0])) * u[$0] }, g)
            }
            let refGate = finiteDifferences(doubles(gate)) { f($0, doubles(up)) }
            let refUp = finiteDifferences(doubles(up)) { f(doubles(gate), $0) }
            var dGate = [Float](repeating: 9, count: n), dUp = dGate
            swigluBackward(dGate: &dGate, dUp: &dUp, dOut: g, gate: gate, up: up, count: n, pool: pool2)
            #expect(nse(dGate, refGate) <= gradientBound, "n=\(n)")
            #expect(nse(dUp, refUp) <= gradientBound, "n=\(n)")
        }
    }

    @Test func ropeBackwardMatchesFiniteDifferencesWithStrideAndOffset() throws {
        var rng = Rng(103)
        let B = 2, T = 5, H = 3, D = 8, ld = 30, offset = 4
        let rope = RotaryEmbedding(headDim: D, theta: 10_000, maxPositions: 16)
        let x = rng.floats(B * T * ld), g = rng.floats(B * T * ld)
        func f(_ x: [Double]) -> Double {
            var y = x
            for r in 0..<(B * T) {
                let p = Double(offset + r % T)
                for h in 0..<H { for i in 0..<(D / 2) {
                    let a = x[r * ld + h * D + i], b = x[r * ld + h * D + i + D / 2]
                    let th = p * Double(rope.inverseFrequencies[i])
                    y[r * ld + h * D + i] = a * cos(th) - b * sin(th)
                    y[r * ld + h * D + i + D / 2] = b * cos(th) + a * sin(th)
                }}
            }
            return weighted(y, g)
        }
        let ref = finiteDifferences(doubles(x), f)
        var dx = g
        try ropeBackward(&dx, batch: B, length: T, heads: H, rowStride: ld, positionOffset: offset, rope: rope, pool: pool2)
        #expect(nse(dx, ref) <= gradientBound)
        #expect(throws: KernelError.self) {
            try ropeBackward(&dx, batch: B, length: T, heads: H, rowStride: ld, positionOffset: 12, rope: rope, pool: pool1)
        }
    }

    @Test func attentionBackwardMatchesFiniteDifferences() {
        var rng = Rng(104)
        for (B, T, H, KH, D) in [(1, 1, 1, 1, 4), (2, 5, 4, 2, 8), (1, 19, 2, 1, 20), (1, 6, 3, 3, 5)] {
            let scale = 1 / Double(D).squareRoot()
            let q = rng.floats(B * T * H * D), k = rng.floats(B * T * KH * D), v = rng.floats(B * T * KH * D)
            let g = rng.floats(B * T * H * D)
            func f(_ q: [Double], _ k: [Double], _ v: [Double]) -> Double {
                weighted(referenceAttention(q, k, v, B: B, T: T, H: H, KH: KH, D: D, scale: scale), g)
            }
            let (qd, kd, vd) = (doubles(q), doubles(k), doubles(v))
            let refQ = finiteDifferences(qd) { f($0, kd, vd) }
            let refK = finiteDifferences(kd) { f(qd, $0, vd) }
            let refV = finiteDifferences(vd) { f(qd, kd, $0) }
            var results: [[Float]] = []
            for pool in [pool1, pool2, pool3] {
                var out = [Float](repeating: 0, count: q.count), lse = [Float](repeating: 0, count: B * H * T)
                var dq = [Float](repeating: 7, count: q.count), dk = [Float](repeating: 7, count: k.count), dv = dk
                attentionForward(out: &out, logsumexp: &lse, query: q, key: k, value: v,
                                 batch: B, length: T, heads: H, kvHeads: KH, headDim: D, scale: Float(scale), pool: pool)
                attentionBackward(dQuery: &dq, dKey: &dk, dValue: &dv, dOut: g, out: out, logsumexp: lse,
                                  query: q, key: k, value: v, batch: B, length: T, heads: H, kvHeads: KH,
                                  headDim: D, scale: Float(scale), pool: pool)
                let shape = "B=\(B) T=\(T) H=\(H) KH=\(KH) D=\(D)"
                #expect(nse(dq, refQ) <= gradientBound, "dq \(shape)")
                #expect(nse(dk, refK) <= gradientBound, "dk \(shape)")
                #expect(nse(dv, refV) <= gradientBound, "dv \(shape)")
                results.append(dq + dk + dv)
            }
            #expect(results[0] == results[1] && results[1] == results[2], "thread counts must agree bit for bit")
        }
    }

    @Test func attentionBackwardWithFusedStridesLeavesOtherColumnsAlone() {
        var rng = Rng(105)
        let B = 2, T = 7, H = 2, KH = 1, D = 6, ld = (H + 2 * KH) * D
        let qkv = rng.floats(B * T * ld), g = rng.floats(B * T * H * D)
        let scale: Float = 0.4
        // Dense copies as the reference input.
        func slice(_ off: Int, _ w: Int) -> [Float] { (0..<(B * T)).flatMap { r in qkv[(r * ld + off)..<(r * ld + off + w)] } }
        let q = slice(0, H * D), k = slice(H * D, KH * D), v = slice((H + KH) * D, KH * D)
        var out = [Float](repeating: 0, count: B * T * H * D), lse = [Float](repeating: 0, count: B * H * T)
        attentionForward(out: &out, logsumexp: &lse, query: q, key: k, value: v,
                         batch: B, length: T, heads: H, kvHeads: KH, headDim: D, scale: scale, pool: pool2)
        var dq = [Float](repeating: 0, count: q.count), dk = [Float](repeating: 0, count: k.count), dv = dk
        attentionBackward(dQuery: &dq, dKey: &dk, dValue: &dv, dOut: g, out: out, logsumexp: lse,
                          query: q, key: k, value: v, batch: B, length: T, heads: H, kvHeads: KH,
                          headDim: D, scale: scale, pool: pool2)
        var dqkv = [Float](repeating: -3, count: qkv.count)
        qkv.withUnsafeBufferPointer { x in dqkv.withUnsafeMutableBufferPointer { d in
            let xp = x.baseAddress!, dp = d.baseAddress!
            attentionBackward(dQuery: dp, dKey: dp + H * D, dValue: dp + (H + KH) * D, dOut: g, out: out, logsumexp: lse,
                              query: xp, queryStride: ld, key: xp + H * D, keyStride: ld, value: xp + (H + KH) * D,
                              valueStride: ld, batch: B, length: T, heads: H, kvHeads: KH, headDim: D, scale: scale, pool: pool2)
        }}
        let fused = (0..<(B * T)).flatMap { r in dqkv[(r * ld)..<(r * ld + ld)] }
        var dense: [Float] = []
        for r in 0..<(B * T) {
            dense += dq[(r * H * D)..<((r + 1) * H * D)]
            dense += dk[(r * KH * D)..<((r + 1) * KH * D)]
            dense += dv[(r * KH * D)..<((r + 1) * KH * D)]
        }
        #expect(fused == dense)
    }

    @Test func embeddingBackwardScatterAddsAndIsThreadCountIndependent() {
        var rng = Rng(106)
        let V = 11, C = 37, rows = 25
        let tokens = (0..<rows).map { _ in Int32(rng.next() % 4) } + [10]   // many repeats
        let g = rng.floats((rows + 1) * C)
        var ref = [Double](repeating: 0.5, count: V * C)
        for r in 0...rows { for c in 0..<C { ref[Int(tokens[r]) * C + c] += Double(g[r * C + c]) } }
        var results: [[Float]] = []
        for pool in [pool1, pool2, pool3] {
            var dw = [Float](repeating: 0.5, count: V * C)
            embeddingBackward(dWeight: &dw, dOut: g, tokens: tokens, rows: rows + 1, vocab: V, channels: C, pool: pool)
            #expect(nse(dw, ref) <= 1e-12)
            results.append(dw)
        }
        #expect(results[0] == results[1] && results[1] == results[2])
    }

    @Test func residualBackwardAccumulatesIntoBothBranches() {
        var rng = Rng(107)
        let n = 5000
        let g = rng.floats(n), a0 = rng.floats(n), b0 = rng.floats(n)
        var a = a0, b = b0
        residualBackward(dA: &a, dB: &b, dOut: g, count: n, pool: pool2)
        #expect(nse(a, (0..<n).map { Double(a0[$0]) + Double(g[$0]) }) <= 1e-14)
        #expect(nse(b, (0..<n).map { Double(b0[$0]) + Double(g[$0]) }) <= 1e-14)
    }
}
