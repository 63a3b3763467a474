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
    try ropeRotate(dx, batch: B, length: T, heads: H, rowStride: rowStride, positionOffset: positionOffset,
                   rope: rope, sign: -1, pool: pool)
}
