// Normalisation layers, forward (and later backward) side by side, llm.c style.

/// Sum of `x[0..<n]` and of its squares, 16 lanes at a time.
@inline(__always)
func sumAndSquares(_ x: UnsafePointer<Float>, _ n: Int) -> (Float, Float) {
    var s = SIMD16<Float>(), q = SIMD16<Float>()
    let raw = UnsafeRawPointer(x)
    var i = 0
    while i + 16 <= n {
        // Safe because i+16 <= n elements exist.
        let v = raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
        s += v
        q = q.addingProduct(v, v)
        i += 16
    }
    var ss = s.sum(), qq = q.sum()
    while i < n { ss += x[i]; qq += x[i] * x[i]; i += 1 }
    return (ss, qq)
}

/// RMSNorm forward (Llama): out = inp / sqrt(mean(inp²) + eps) · weight, per row.
///
/// inp (rows, C), weight (C) -> out (rows, C); rstd (rows) receives 1/sqrt(mean(inp²)+eps)
/// for the backward pass when non-nil. `out` may alias `inp`.
///
/// API status: final.
public func rmsnormForward(out: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>? = nil,
                           input: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                           rows: Int, channels C: Int, eps: Float, pool: ThreadPool) {
    pool.parallelFor(rows) { rs in
        for r in rs {
            // Safe because r < rows and every access below stays inside row r's C floats.
            let x = input + r * C, y = out + r * C
            let (_, q) = sumAndSquares(x, C)
            let s = 1 / (q / Float(C) + eps).squareRoot()
            rstd?[r] = s
            for i in 0..<C { y[i] = (x[i] * s) * weight[i] }
        }
    }
}

/// LayerNorm forward (GPT-2): out = (inp - mean) / sqrt(var + eps) · weight + bias, per row,
/// with the biased variance as PyTorch uses.
///
/// inp (rows, C), weight (C), bias (C) or nil -> out (rows, C); mean, rstd (rows) saved for the
/// backward pass when non-nil. `out` may alias `inp`.
///
/// API status: final.
public func layernormForward(out: UnsafeMutablePointer<Float>, mean: UnsafeMutablePointer<Float>? = nil,
                             rstd: UnsafeMutablePointer<Float>? = nil, input: UnsafePointer<Float>,
                             weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                             rows: Int, channels C: Int, eps: Float, pool: ThreadPool) {
    pool.parallelFor(rows) { rs in
        for r in rs {
            // Safe because r < rows and every access below stays inside row r's C floats.
            let x = input + r * C, y = out + r * C
            let (s, _) = sumAndSquares(x, C)
            let m = s / Float(C)
            // Two-pass variance: exact enough even when |mean| >> std.
            var v: Float = 0
            for i in 0..<C { let d = x[i] - m; v += d * d }
            let rs = 1 / (v / Float(C) + eps).squareRoot()
            mean?[r] = m
            rstd?[r] = rs
            for i in 0..<C {
                let n = (x[i] - m) * rs
                y[i] = n * weight[i] + (bias?[i] ?? 0)
            }
        }
    }
}
