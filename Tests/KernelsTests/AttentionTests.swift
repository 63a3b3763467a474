import Foundation
import Testing
@testable import Kernels

@Suite struct RoPETests {
    @Test func llama3InverseFrequenciesMatchTransformers() {
        // transformers `_compute_llama3_parameters` for head_dim 32, rope_theta 500000, factor 8,
        // low/high frequency factors 1/4, original_max_position_embeddings 512 (covers the
        // unscaled, smoothed and fully scaled bands). Generated once with transformers 5.x.
        let expected: [Double] = [
            1.0, 0.44036662578582764, 0.193922758102417, 0.08539710193872452, 0.02734413370490074,
            0.0037580211646854877, 0.0009115831344388425, 0.00040143076330423355, 0.00017677668074611574,
            7.784655463183299e-05, 3.428102354519069e-05, 1.5096217794052791e-05, 6.647869668086059e-06,
            2.927499735960737e-06, 1.289173155782919e-06, 5.677088097399974e-07,
        ]
        let rope = RotaryEmbedding(headDim: 32, theta: 500_000,
                                   scaling: Llama3RopeScaling(factor: 8, lowFrequencyFactor: 1, highFrequencyFactor: 4,
                                                              originalMaxPositions: 512), maxPositions: 4)
        for (got, want) in zip(rope.inverseFrequencies, expected) {
            #expect(abs(Double(got) - want) <= 2e-7 * want, "\(got) vs \(want)")
        }
    }

    @Test func ropeRotatesHalvesLikeTransformers() throws {
        var rng = Rng(61)
        let B = 2, T = 9, H = 3, D = 10, ld = 40
        var x = rng.floats(B * T * ld)
        let x0 = x
        let rope = RotaryEmbedding(headDim: D, theta: 10_000, maxPositions: 20)
        try x.withUnsafeMutableBufferPointer { xp in
            try ropeForward(xp.baseAddress!, batch: B, length: T, heads: H, rowStride: ld, positionOffset: 5, rope: rope, pool: pool2)
        }
        var got = [Float](), ref = [Double]()
        for r in 0..<(B * T) {
            let p = Double(5 + r % T)
            for h in 0..<H {
                for i in 0..<(D / 2) {
                    let f = 1 / pow(10_000.0, Double(2 * i) / Double(D))
                    let a = Double(x0[r * ld + h * D + i]), b = Double(x0[r * ld + h * D + i + D / 2])
                    ref += [a * cos(p * f) - b * sin(p * f)]
                    got += [x[r * ld + h * D + i]]
                    ref += [b * cos(p * f) + a * sin(p * f)]
                    got += [x[r * ld + h * D + i + D / 2]]
                }
            }
            for c in (H * D)..<ld { #expect(x[r * ld + c] == x0[r * ld + c], "stride padding changed") }
        }
        #expect(nse(got, ref) <= nseBound)
        #expect(throws: KernelError.sequenceTooLong(length: 21, limit: 20)) {
            try x.withUnsafeMutableBufferPointer { xp in
                try ropeForward(xp.baseAddress!, batch: 1, length: 9, heads: H, rowStride: ld, positionOffset: 12, rope: rope, pool: pool1)
            }
        }
    }
}

@Suite struct AttentionTests {
    /// Naive causal attention in double: full score row, softmax, weighted sum.
    func reference(q: [Float], k: [Float], v: [Float], B: Int, T: Int, H: Int, KH: Int, D: Int, ldq: Int, ldk: Int,
                   scale: Double) -> (out: [Double], lse: [Double]) {
        var out = [Double](repeating: 0, count: B * T * H * D), lse = [Double](repeating: 0, count: B * H * T)
        for b in 0..<B { for h in 0..<H { for t in 0..<T {
            let g = h / (H / KH)
            let s = (0...t).map { j in (0..<D).reduce(0.0) { $0 + Double(q[(b * T + t) * ldq + h * D + $1]) * Double(k[(b * T + j) * ldk + g * D + $1]) } * scale }
            let m = s.max()!
            let e = s.map { Foundation.exp($0 - m) }, z = e.reduce(0, +)
            lse[(b * H + h) * T + t] = m + Foundation.log(z)
            for d in 0..<D {
                out[((b * T + t) * H + h) * D + d] = (0...t).reduce(0.0) { $0 + e[$1] / z * Double(v[(b * T + $1) * ldk + g * D + d]) }
            }
        }}}
        return (out, lse)
    }

    @Test(arguments: [(1, 1, 1, 1, 1), (2, 37, 4, 2, 20), (1, 50, 3, 3, 64), (2, 17, 6, 1, 16), (1, 300, 2, 1, 40), (1, 520, 3, 1, 8)])
    func matchesDoubleReferenceWithGroupedHeadsAndFusedStrides(shape: (Int, Int, Int, Int, Int)) {
        let (B, T, H, KH, D) = shape
        var rng = Rng(71)
        // A fused QKV buffer: each (b, t) row holds q (H·D), k (KH·D), v (KH·D).
        let ld = (H + 2 * KH) * D
        let qkv = rng.floats(B * T * ld, scale: 2)
        let q = qkv, k = Array(qkv.dropFirst(H * D)), v = Array(qkv.dropFirst(H * D + KH * D))
        let scale = 1 / Float(D).squareRoot()
        var results = [[Float]]()
        var lse = [Float](repeating: 0, count: B * H * T)
        for pool in [pool1, pool2, pool3, poolChunked] {
            var out = [Float](repeating: 0, count: B * T * H * D)
            qkv.withUnsafeBufferPointer { p in out.withUnsafeMutableBufferPointer { op in lse.withUnsafeMutableBufferPointer { lp in
                let base = p.baseAddress!
                attentionForward(out: op.baseAddress!, logsumexp: lp.baseAddress!, query: base, queryStride: ld,
                                 key: base + H * D, keyStride: ld, value: base + H * D + KH * D, valueStride: ld,
                                 batch: B, length: T, heads: H, kvHeads: KH, headDim: D, scale: scale, pool: pool)
            }}}
            results.append(out)
        }
        let ref = reference(q: q, k: k + [Float](repeating: 0, count: H * D), v: v + [Float](repeating: 0, count: H * D + KH * D),
                            B: B, T: T, H: H, KH: KH, D: D, ldq: ld, ldk: ld, scale: Double(scale))
        #expect(nse(results[0], ref.out) <= nseBound)
        #expect(nse(lse, ref.lse) <= nseBound)
        #expect(results.allSatisfy { $0 == results[0] })
    }
}

@Suite struct LMHeadTests {
    @Test(arguments: [(13, 2500, 40, 64), (1, 5, 3, 5), (7, 1024, 17, 1), (20, 1100, 8, 0)])
    func fusedHeadEqualsFullLogitsPath(shape: (Int, Int, Int, Int)) throws {
        let (T, V, C, K) = shape
        var rng = Rng(81)
        let hidden = rng.floats(T * C, scale: 3), w = rng.floats(V * C)
        let packed = w.withUnsafeBufferPointer { PackedMatrix(rows: V, columns: C, float32: $0.baseAddress!) }
        let targets = (0..<T).map { _ in Int32(rng.next() % UInt64(V)) }
        // Full path: logits, then top-K + logsumexp.
        var logits = [Float](repeating: 0, count: T * V)
        var fullIds = [Int32](repeating: 0, count: T * K), fullVals = [Float](repeating: 0, count: T * K)
        var fullLse = [Float](repeating: 0, count: T)
        hidden.withUnsafeBufferPointer { hp in logits.withUnsafeMutableBufferPointer { lp in
            matmulForward(out: lp.baseAddress!, input: hp.baseAddress!, weight: packed, rows: T, pool: pool2)
        }}
        logits.withUnsafeBufferPointer { lp in fullIds.withUnsafeMutableBufferPointer { ip in fullVals.withUnsafeMutableBufferPointer { vp in
            fullLse.withUnsafeMutableBufferPointer { sp in
                topKLogsumexp(logits: lp.baseAddress!, rows: T, vocab: V, k: K, topIds: ip.baseAddress!, topLogits: vp.baseAddress!,
                              logsumexp: sp.baseAddress!, pool: pool1)
            }
        }}}
        for pool in [pool1, pool2, pool3, poolChunked] {
            var ids = [Int32](repeating: 0, count: T * K), vals = [Float](repeating: 0, count: T * K)
            var lse = [Float](repeating: 0, count: T), tl = [Float](repeating: 0, count: T)
            try hidden.withUnsafeBufferPointer { hp in try ids.withUnsafeMutableBufferPointer { ip in try vals.withUnsafeMutableBufferPointer { vp in
                try lse.withUnsafeMutableBufferPointer { sp in try tl.withUnsafeMutableBufferPointer { tp in try targets.withUnsafeBufferPointer { gp in
                    try lmHeadTopK(hidden: hp.baseAddress!, rows: T, weight: packed, k: K, topIds: ip.baseAddress!,
                                   topLogits: vp.baseAddress!, logsumexp: sp.baseAddress!, targets: gp.baseAddress!,
                                   targetLogits: tp.baseAddress!, pool: pool)
                }}}
            }}}
            #expect(ids == fullIds && vals == fullVals && lse == fullLse)
            #expect(tl == (0..<T).map { logits[$0 * V + Int(targets[$0])] })
        }
        // And against double precision: logits and the logsumexp.
        let ref = referenceGemm(m: T, n: V, k: C, a: hidden, transposeA: false, b: w, transposeB: true)
        #expect(nse(logits, ref) <= nseBound)
        let refLse = (0..<T).map { r -> Double in
            let row = ref[(r * V)..<(r * V + V)], m = row.max()!
            return m + Foundation.log(row.reduce(0) { $0 + Foundation.exp($1 - m) })
        }
        #expect(nse(fullLse, refLse) <= nseBound)
    }

    @Test func scaleAppliesTemperatureAndBadTargetsAreRejected() throws {
        var rng = Rng(82)
        let T = 3, V = 70, C = 9, K = 4
        let hidden = rng.floats(T * C), w = rng.floats(V * C)
        let packed = w.withUnsafeBufferPointer { PackedMatrix(rows: V, columns: C, float32: $0.baseAddress!) }
        var ids = [Int32](repeating: 0, count: T * K), vals = [Float](repeating: 0, count: T * K)
        var lse = [Float](repeating: 0, count: T), tl = [Float](repeating: 0, count: T)
        try hidden.withUnsafeBufferPointer { hp in try ids.withUnsafeMutableBufferPointer { ip in try vals.withUnsafeMutableBufferPointer { vp in
            try lse.withUnsafeMutableBufferPointer { sp in
                try lmHeadTopK(hidden: hp.baseAddress!, rows: T, weight: packed, k: K, scale: 0.5, topIds: ip.baseAddress!,
                               topLogits: vp.baseAddress!, logsumexp: sp.baseAddress!, pool: pool2)
            }
        }}}
        let ref = referenceGemm(m: T, n: V, k: C, a: hidden, transposeA: false, b: w, transposeB: true).map { $0 * 0.5 }
        for r in 0..<T {
            let row = Array(ref[(r * V)..<(r * V + V)])
            let order = row.indices.sorted { row[$0] > row[$1] }
            #expect(ids[(r * K)..<(r * K + K)].map(Int.init) == Array(order.prefix(K)))
            let m = row.max()!
            #expect(abs(Double(lse[r]) - (m + Foundation.log(row.reduce(0) { $0 + Foundation.exp($1 - m) }))) < 1e-5)
        }
        let bad: [Int32] = [0, 70, 1]
        #expect(throws: KernelError.tokenOutOfRange(row: 1, id: 70, vocab: 70)) {
            try hidden.withUnsafeBufferPointer { hp in try ids.withUnsafeMutableBufferPointer { ip in try vals.withUnsafeMutableBufferPointer { vp in
                try lse.withUnsafeMutableBufferPointer { sp in try tl.withUnsafeMutableBufferPointer { tp in try bad.withUnsafeBufferPointer { gp in
                    try lmHeadTopK(hidden: hp.baseAddress!, rows: T, weight: packed, k: K, topIds: ip.baseAddress!,
                                   topLogits: vp.baseAddress!, logsumexp: sp.baseAddress!, targets: gp.baseAddress!,
                                   targetLogits: tp.baseAddress!, pool: pool1)
                }}}
            }}}
        }
    }
}
