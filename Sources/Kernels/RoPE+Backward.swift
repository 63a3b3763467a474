// RoPE backward, beside `ropeForward` in RoPE.swift.

/// RoPE backward, in place: the forward is a rotation by θ of each (i, i+D/2) pair, so the
/// gradient is the rotation by −θ: dx[i] = dy[i]·cos θ + dy[i+D/2]·sin θ,
/// dx[i+D/2] = dy[i+D/2]·cos θ − dy[i]·sin θ.
///
/// dx (B, T, H, D) holds dy on entry and dx on return; row stride and positions as in
/// `ropeForward`.
///
/// - Throws: ``KernelError/sequenceTooLong(length:limit:)`` as the forward does.
///
/// API status: provisional (trainer).
public func ropeBackward(_ dx: UnsafeMutablePointer<Float>, batch B: Int, length T: Int, heads H: Int,
                         rowStride: Int? = nil, positionOffset: Int = 0,
                         rope: RotaryEmbedding, pool: ThreadPool) throws(KernelError) {
    let D = rope.headDim, half = D / 2
    let ld = rowStride ?? H * D
    precondition(ld >= H * D, "ropeBackward: row stride \(ld) < \(H * D)")
    if positionOffset < 0 || positionOffset + T > rope.maxPositions {
        throw .sequenceTooLong(length: positionOffset + T, limit: rope.maxPositions)
    }
    rope.cosTable.withUnsafeBufferPointer { cosT in
        rope.sinTable.withUnsafeBufferPointer { sinT in
            pool.parallelFor(B * T) { rows in
                for r in rows {
                    let p = positionOffset + r % T
                    // Safe because p < maxPositions was checked, so the table rows exist.
                    let cs = cosT.baseAddress! + p * half, sn = sinT.baseAddress! + p * half
                    for h in 0..<H {
                        // Safe because r < B·T and h·D + D <= rowStride keep v inside dx.
                        let v = dx + r * ld + h * D
                        for i in 0..<half {
                            let a = v[i], b = v[i + half]
                            v[i] = a * cs[i] + b * sn[i]
                            v[i + half] = b * cs[i] - a * sn[i]
                        }
                    }
                }
            }
        }
    }
}
