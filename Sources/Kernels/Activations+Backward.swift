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
        // 16 lanes at a time with the scalar tail's operations in the same order (scalarExp is
        // simdExp's lane), so every element is the same whichever path computes it.
        typealias F = SIMD16<Float>
        let one = F(repeating: 1)
        var i = r.lowerBound
        while i + 16 <= r.upperBound {
            // Safe because i+16 <= n elements exist in all five buffers.
            let g = UnsafeRawPointer(gate + i).loadUnaligned(as: F.self)
            let u = UnsafeRawPointer(up + i).loadUnaligned(as: F.self)
            let dy = UnsafeRawPointer(dOut + i).loadUnaligned(as: F.self)
            let sg = one / (one + simdExp(-g))
            UnsafeMutableRawPointer(dUp + i).storeBytes(of: dy * g * sg, as: F.self)
            UnsafeMutableRawPointer(dGate + i).storeBytes(of: dy * u * sg * (one + g * (one - sg)), as: F.self)
            i += 16
        }
        while i < r.upperBound {
            // Safe because i < n elements exist in all five buffers.
            let g = gate[i], sg = 1 / (1 + scalarExp(-g))
            dUp[i] = dOut[i] * g * sg
            dGate[i] = dOut[i] * up[i] * sg * (1 + g * (1 - sg))
            i += 1
        }
    }
}
