// Normalisation backward passes, beside the forwards in Norms.swift.

/// RMSNorm backward for out = x · s · w, s = 1/sqrt(mean(x²) + eps) per row.
///
/// dout (rows, C), inp (rows, C), weight (C), rstd (rows) saved by `rmsnormForward` ->
/// dinp (rows, C) += s·(dout⊙w) − s³/C · x · Σ_j dout_j w_j x_j, and dweight (C) +=
/// Σ_rows dout ⊙ x · s. Both accumulate (llm.c semantics); pass nil for dweight to skip it.
///
/// dinp is parallel over rows, dweight over channels: no two threads write one element and
/// the result does not depend on the thread count.
///
/// API status: provisional (trainer).
public func rmsnormBackward(dInput: UnsafeMutablePointer<Float>, dWeight: UnsafeMutablePointer<Float>?,
                            dOut: UnsafePointer<Float>, input: UnsafePointer<Float>,
                            weight: UnsafePointer<Float>, rstd: UnsafePointer<Float>,
                            rows: Int, channels C: Int, pool: ThreadPool) {
    pool.parallelFor(rows) { rs in
        for r in rs {
            // Safe because r < rows and i < C stay inside row r of every (rows, C) buffer.
            let x = input + r * C, dy = dOut + r * C, dx = dInput + r * C
            let s = rstd[r]
            var dot: Float = 0
            for i in 0..<C { dot += dy[i] * weight[i] * x[i] }
            let k = s * s * s * dot / Float(C)
            for i in 0..<C { dx[i] += s * dy[i] * weight[i] - k * x[i] }
        }
    }
    guard let dWeight else { return }
    pool.parallelFor(C, granule: 16) { cols in
        // The row sum is formed apart and added once, so repeated calls accumulate exactly as
        // separate sums would. Safe because acc is bound to cols.count floats and freed here.
        let acc = UnsafeMutablePointer<Float>.allocate(capacity: cols.count)
        defer { acc.deallocate() }
        acc.initialize(repeating: 0, count: cols.count)
        for r in 0..<rows {
            // Safe because r < rows and cols ⊂ 0..<C.
            let x = input + r * C, dy = dOut + r * C, s = rstd[r]
            for i in cols { acc[i - cols.lowerBound] += dy[i] * x[i] * s }
        }
        for i in cols { dWeight[i] += acc[i - cols.lowerBound] }
    }
}
