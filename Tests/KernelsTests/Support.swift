import Testing
@testable import Kernels

/// Deterministic xorshift generator: tests never depend on a system RNG.
struct Rng {
    var state: UInt64
    init(_ seed: UInt64) { state = seed &* 0x9E37_79B9_7F4A_7C15 | 1 }
    mutating func next() -> UInt64 {
        state ^= state << 13; state ^= state >> 7; state ^= state << 17
        return state
    }
    /// Uniform in [-1, 1).
    mutating func float() -> Float { Float(Double(next() >> 11) / Double(1 << 53) * 2 - 1) }
    mutating func floats(_ n: Int, scale: Float = 1) -> [Float] { (0..<n).map { _ in float() * scale } }
}

/// Normalised squared error Σ(a-b)² / Σb² (0 when both are zero).
func nse(_ a: [Float], _ b: [Double]) -> Double {
    precondition(a.count == b.count)
    var num = 0.0, den = 0.0
    for i in a.indices { let d = Double(a[i]) - b[i]; num += d * d; den += b[i] * b[i] }
    return den == 0 ? num : num / den
}

let nseBound = 1e-7

/// A (rows, cols) row-major matrix element in double precision, optionally read transposed.
@inline(__always) func at(_ m: [Float], _ r: Int, _ c: Int, _ ld: Int) -> Double { Double(m[r * ld + c]) }

/// Naive double reference: C (M,N) = op(A)·op(B) (+ C0).
func referenceGemm(m M: Int, n N: Int, k K: Int, a: [Float], transposeA: Bool, b: [Float], transposeB: Bool,
                   c0: [Float]? = nil) -> [Double] {
    var c = [Double](repeating: 0, count: M * N)
    for i in 0..<M {
        for j in 0..<N {
            var s = c0.map { Double($0[i * N + j]) } ?? 0
            for p in 0..<K {
                let x = transposeA ? at(a, p, i, M) : at(a, i, p, K)
                let y = transposeB ? at(b, j, p, K) : at(b, p, j, N)
                s += x * y
            }
            c[i * N + j] = s
        }
    }
    return c
}

let pool1 = ThreadPool(threadCount: 1)
let pool2 = ThreadPool(threadCount: 2)
let pool3 = ThreadPool(threadCount: 3)
/// Two threads claiming ten chunks dynamically: results must match the static pools bit for bit.
let poolChunked = ThreadPool(threadCount: 2, chunksPerThread: 5)
