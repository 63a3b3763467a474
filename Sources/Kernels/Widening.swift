/// Element types that weights arrive in from checkpoints.
///
/// API status: final.
public enum WeightType: String, Sendable, CaseIterable {
    /// IEEE binary32, 4 bytes.
    case float32
    /// IEEE binary16, 2 bytes, passed as raw `UInt16` bit patterns.
    case float16
    /// bfloat16 (the top half of a binary32), 2 bytes, passed as raw `UInt16` bit patterns.
    case bfloat16

    /// Bytes per element.
    public var byteWidth: Int { self == .float32 ? 4 : 2 }
}

/// Widens a bfloat16 bit pattern to `Float`, exactly (bfloat16 is the top half of a binary32).
@inlinable
public func widenBFloat16(_ bits: UInt16) -> Float {
    Float(bitPattern: UInt32(bits) << 16)
}

/// Widens an IEEE binary16 bit pattern to `Float`, exactly, including subnormals, infinities
/// and NaN payloads. Written with integer operations so it behaves the same on every platform
/// (Swift's `Float16` is missing on some).
@inlinable
public func widenFloat16(_ bits: UInt16) -> Float {
    let sign = UInt32(bits & 0x8000) << 16
    let exponent = UInt32(bits >> 10) & 0x1F
    let mantissa = UInt32(bits) & 0x3FF
    if exponent == 0x1F {
        // Infinity or NaN: keep the payload in the top mantissa bits.
        return Float(bitPattern: sign | 0x7F80_0000 | (mantissa << 13))
    }
    if exponent == 0 {
        // Zero or subnormal: value = mantissa * 2^-24, exactly representable in binary32.
        let magnitude = Float(mantissa) * 0x1p-24
        return Float(bitPattern: sign | magnitude.bitPattern)
    }
    return Float(bitPattern: sign | ((exponent + 112) << 23) | (mantissa << 13))
}

/// Reads element `index` of a weight buffer of type `type`, widened to `Float`.
///
/// Safe because the caller guarantees `index` lies inside the buffer (internal helper used
/// only with indices checked against the buffer's shape).
@inline(__always)
@usableFromInline
func loadWidened(_ base: UnsafeRawPointer, _ type: WeightType, _ index: Int) -> Float {
    switch type {
    case .float32:
        return base.loadUnaligned(fromByteOffset: index &* 4, as: Float.self)
    case .float16:
        return widenFloat16(base.loadUnaligned(fromByteOffset: index &* 2, as: UInt16.self))
    case .bfloat16:
        return widenBFloat16(base.loadUnaligned(fromByteOffset: index &* 2, as: UInt16.self))
    }
}

/// Widens `count` consecutive elements of type `type` starting at element `start` into `out`.
/// out (count)
///
/// Safe because the caller guarantees `start + count` elements exist at `base` and `count`
/// floats at `out`.
@inline(__always)
@usableFromInline
func widenRun(_ base: UnsafeRawPointer, _ type: WeightType, start: Int, count: Int,
              into out: UnsafeMutablePointer<Float>) {
    switch type {
    case .float32:
        // Safe because the source holds start+count floats (caller contract); unaligned copy.
        (UnsafeMutableRawPointer(out)).copyMemory(from: base + start &* 4, byteCount: count &* 4)
    case .float16:
        for i in 0..<count {
            out[i] = widenFloat16(base.loadUnaligned(fromByteOffset: (start &+ i) &* 2, as: UInt16.self))
        }
    case .bfloat16:
        for i in 0..<count {
            out[i] = widenBFloat16(base.loadUnaligned(fromByteOffset: (start &+ i) &* 2, as: UInt16.self))
        }
    }
}
