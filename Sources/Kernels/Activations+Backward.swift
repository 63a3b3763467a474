// Activation backward passes, beside the forwards in Activations.swift.

/// SwiGLU backward for out = silu(gate) · up, σ = 1/(1+e^-gate):
/// dgate = dout · up · σ · (1 + gate·(1 − σ)), dup = dout · gate · σ.
///
/// dout (n), gate (n), up (n) -> dgate (n), dup (n), overwritten. dgate and dup may not
/// alias the inputs.
///
/// API status: provisional (trainer).
public func swigluBackward(dGate: UnsafeMutablePointer<Float>, dUp: UnsafeMutablePointer<Float>,
                           dOut: UnsafePointer<Float>, gate: UnsafePointer<Float>, up: UnsafePointer<Float>,
                           count n: Int, pool: ThreadPool) {
    pool.parallelFor(n, granule: 4096) { r in
        for i in r {
            // Safe because i < n elements exist in all five buffers.
            let g = gate[i], sg = 1 / (1 + scalarExp(-g))
            dUp[i] = dOut[i] * g * sg
            dGate[i] = dOut[i] * up[i] * sg * (1 + g * (1 - sg))
        }
    }
}
