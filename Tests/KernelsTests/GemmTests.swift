import Testing
@testable import Kernels

@Suite struct GemmTests {
    static let shapes: [(Int, Int, Int)] = [
        (1, 1, 1), (1, 33, 7), (7, 1, 5), (6, 32, 16), (13, 45, 29), (37, 70, 300),
        (100, 65, 513), (2, 200, 3), (150, 31, 17), (0, 5, 5), (4, 0, 3), (5, 4, 0),
    ]

    @Test(arguments: [false, true], [false, true])
    func generalGemmMatchesDoubleReferenceOnOddShapes(transposeA: Bool, transposeB: Bool) {
        var rng = Rng(7)
        for (M, N, K) in Self.shapes {
            let a = rng.floats(M * K), b = rng.floats(K * N), c0 = rng.floats(M * N)
            for accumulate in [false, true] {
                var c = c0
                a.withUnsafeBufferPointer { ap in b.withUnsafeBufferPointer { bp in c.withUnsafeMutableBufferPointer { cp in
                    gemm(m: M, n: N, k: K, a: ap.baseAddress!, lda: transposeA ? M : K, transposeA: transposeA,
                         b: bp.baseAddress!, ldb: transposeB ? K : N, transposeB: transposeB,
                         c: cp.baseAddress!, ldc: N, accumulate: accumulate, pool: pool2)
                }}}
                let ref = referenceGemm(m: M, n: N, k: K, a: a, transposeA: transposeA, b: b, transposeB: transposeB,
                                        c0: accumulate ? c0 : nil)
                #expect(nse(c, ref) <= nseBound, "M=\(M) N=\(N) K=\(K) tA=\(transposeA) tB=\(transposeB) acc=\(accumulate)")
            }
        }
    }

    @Test func stridedOperandsAndBiasAreHonoured() {
        var rng = Rng(11)
        let M = 19, N = 40, K = 23, lda = 30, ldb = 27, ldc = 45
        let a = rng.floats(M * lda), w = rng.floats(N * ldb), bias = rng.floats(N)
        var c = [Float](repeating: 99, count: M * ldc)
        let packed = w.withUnsafeBufferPointer { PackedMatrix(rows: N, columns: K, float32: $0.baseAddress!, stride: ldb) }
        a.withUnsafeBufferPointer { ap in bias.withUnsafeBufferPointer { bp in c.withUnsafeMutableBufferPointer { cp in
            gemm(rows: M, a: ap.baseAddress!, lda: lda, b: packed, c: cp.baseAddress!, ldc: ldc, bias: bp.baseAddress!, pool: pool2)
        }}}
        var got = [Float](), ref = [Double]()
        for i in 0..<M {
            for j in 0..<N {
                var s = Double(bias[j])
                for p in 0..<K { s += Double(a[i * lda + p]) * Double(w[j * ldb + p]) }
                got.append(c[i * ldc + j]); ref.append(s)
            }
            for j in N..<ldc { #expect(c[i * ldc + j] == 99, "padding column \(j) of row \(i) was written") }
        }
        #expect(nse(got, ref) <= nseBound)
    }

    @Test func threadCountsGiveBitIdenticalResults() {
        var rng = Rng(3)
        for (M, N, K) in [(97, 130, 301), (5, 300, 40), (300, 7, 600)] {
            let a = rng.floats(M * K), w = rng.floats(N * K)
            let packed = w.withUnsafeBufferPointer { PackedMatrix(rows: N, columns: K, float32: $0.baseAddress!) }
            var results = [[Float]]()
            for pool in [pool1, pool2, pool3, poolChunked] {
                var c = [Float](repeating: 0, count: M * N)
                a.withUnsafeBufferPointer { ap in c.withUnsafeMutableBufferPointer { cp in
                    matmulForward(out: cp.baseAddress!, input: ap.baseAddress!, weight: packed, rows: M, pool: pool)
                }}
                results.append(c)
            }
            #expect(results.allSatisfy { $0 == results[0] }, "M=\(M) N=\(N) K=\(K)")
        }
    }

    @Test func halfPrecisionPackingWidensExactly() {
        var rng = Rng(5)
        let N = 37, K = 19
        let bits16 = (0..<(N * K)).map { _ in UInt16(truncatingIfNeeded: rng.next()) & 0x7BFF } // finite f16
        let bitsBF = (0..<(N * K)).map { _ in UInt16(truncatingIfNeeded: rng.next()) & 0x7F7F | 0x0100 }
        for (bits, type) in [(bits16, WeightType.float16), (bitsBF, .bfloat16)] {
            for layout in [PackedMatrix.Layout.rowMajor, .transposed] {
                let p = bits.withUnsafeBytes {
                    PackedMatrix(rows: N, columns: K, source: $0.baseAddress!, type: type, layout: layout)
                }
                for r in 0..<N {
                    for c in 0..<K {
                        let i = layout == .rowMajor ? r * K + c : c * N + r
                        let expected = type == .float16 ? widenFloat16(bits[i]) : widenBFloat16(bits[i])
                        #expect(p.element(row: r, column: c).bitPattern == expected.bitPattern)
                    }
                }
            }
        }
    }

    @Test func float16WideningIsExactForEveryBitPattern() {
        // Independent reference: sign · 2^(e-15) · (1 + m/1024), subnormals 2^-14 · m/1024.
        for raw in 0...UInt16.max {
            let sign: Double = raw & 0x8000 != 0 ? -1 : 1
            let e = Int(raw >> 10) & 0x1F, m = Double(raw & 0x3FF)
            let got = widenFloat16(raw)
            if e == 0x1F {
                if m == 0 { #expect(got == Float(sign) * .infinity) } else { #expect(got.isNaN) }
            } else {
                let v = e == 0 ? sign * m / 1024 * 0x1p-14 : sign * (1 + m / 1024) * Double(sign: .plus, exponent: e - 15, significand: 1)
                #expect(got == Float(v) && got.sign == (sign < 0 ? .minus : .plus), "bits \(raw)")
            }
        }
        #expect(widenBFloat16(0x3F80) == 1 && widenBFloat16(0xC040) == -3 && widenBFloat16(0x7F80) == .infinity)
    }

    @Test func matmulBackwardMatchesDoubleReference() {
        var rng = Rng(17)
        let rows = 23, C = 37, OC = 41
        let x = rng.floats(rows * C), w = rng.floats(OC * C), dy = rng.floats(rows * OC)
        let dx0 = rng.floats(rows * C), dw0 = rng.floats(OC * C), db0 = rng.floats(OC)
        for accumulate in [false, true] {
            var dx = dx0, dw = dw0, db = db0
            x.withUnsafeBufferPointer { xp in w.withUnsafeBufferPointer { wp in dy.withUnsafeBufferPointer { dyp in
                dx.withUnsafeMutableBufferPointer { dxp in dw.withUnsafeMutableBufferPointer { dwp in db.withUnsafeMutableBufferPointer { dbp in
                    matmulBackward(dInput: dxp.baseAddress!, dWeight: dwp.baseAddress!, dBias: dbp.baseAddress!,
                                   dOut: dyp.baseAddress!, input: xp.baseAddress!, weight: wp.baseAddress!,
                                   rows: rows, inFeatures: C, outFeatures: OC, accumulate: accumulate, pool: pool2)
                }}}
            }}}
            let refDx = referenceGemm(m: rows, n: C, k: OC, a: dy, transposeA: false, b: w, transposeB: false, c0: accumulate ? dx0 : nil)
            let refDw = referenceGemm(m: OC, n: C, k: rows, a: dy, transposeA: true, b: x, transposeB: false, c0: accumulate ? dw0 : nil)
            let refDb = (0..<OC).map { o in (0..<rows).reduce(accumulate ? Double(db0[o]) : 0) { $0 + Double(dy[$1 * OC + o]) } }
            #expect(nse(dx, refDx) <= nseBound)
            #expect(nse(dw, refDw) <= nseBound)
            #expect(nse(db, refDb) <= nseBound)
        }
    }
}
