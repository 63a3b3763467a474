// Elementwise activations, forward (and later backward) side by side.

/// SwiGLU forward (Llama MLP): out = silu(gate) · up, silu(x) = x / (1 + e^-x).
///
/// gate (n), up (n) -> out (n); `out` may alias either input.
///
/// API status: final.
public func swigluForward(out: UnsafeMutablePointer<Float>, gate: UnsafePointer<Float>,
                          up: UnsafePointer<Float>, count n: Int, pool: ThreadPool) {
    pool.parallelFor(n, granule: 4096) { r in
        let g = UnsafeRawPointer(gate + r.lowerBound), u = UnsafeRawPointer(up + r.lowerBound)
        let o = UnsafeMutableRawPointer(out + r.lowerBound)
        let len = r.count
        var i = 0
        while i + 16 <= len {
            // Safe because i+16 <= len elements of this chunk exist in all three buffers.
            let x = g.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
            let y = u.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
            o.storeBytes(of: x / (1 + simdExp(-x)) * y, toByteOffset: i * 4, as: SIMD16<Float>.self)
            i += 16
        }
        while i < len {
            // Safe because i < len stays inside the chunk.
            let x = gate[r.lowerBound + i]
            out[r.lowerBound + i] = x / (1 + scalarExp(-x)) * up[r.lowerBound + i]
            i += 1
        }
    }
}

/// GELU forward, tanh approximation (GPT-2 `gelu_new`, PyTorch `approximate="tanh"`):
/// out = ½·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
///
/// inp (n) -> out (n); `out` may alias `inp`.
///
/// API status: final.
public func geluForward(out: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>,
                        count n: Int, pool: ThreadPool) {
    pool.parallelFor(n, granule: 4096) { r in
        mapSIMD(out + r.lowerBound, input + r.lowerBound, r.count) { x in
            let u = 0.797_884_560_802_865_4 * (x + 0.044_715 * x * x * x)
            // ½(1 + tanh u) = 1 / (1 + e^(-2u)): no cancellation for large |u|.
            return x / (1 + simdExp(-2 * u))
        }
    }
}
