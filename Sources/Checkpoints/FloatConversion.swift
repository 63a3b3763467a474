/// Bit-exact conversions between `Float` and the 16-bit formats checkpoints store.
/// Written with integer operations so they behave the same on every platform.
public enum FloatConversion {
    /// bfloat16 bits → Float (exact: bfloat16 is the top half of a float32).
    @inlinable public static func float(bfloat16 bits: UInt16) -> Float {
        Float(bitPattern: UInt32(bits) << 16)
    }

    /// IEEE half bits → Float (exact, subnormals, infinities and NaN included).
    @inlinable public static func float(float16 bits: UInt16) -> Float {
        let sign = UInt32(bits & 0x8000) << 16
        let exponent = UInt32(bits >> 10) & 0x1F
        let mantissa = UInt32(bits & 0x3FF)
        if exponent == 0x1F { return Float(bitPattern: sign | 0x7F80_0000 | (mantissa << 13)) }
        if exponent == 0 {
            // Subnormal half: mantissa × 2^-24, exact in float32.
            let magnitude = Float(mantissa) * (1.0 / 16_777_216.0)
            return sign == 0 ? magnitude : -magnitude
        }
        return Float(bitPattern: sign | ((exponent + 112) << 23) | (mantissa << 13))
    }

    /// Float → bfloat16 bits, rounding to nearest even (as PyTorch's `.to(torch.bfloat16)`).
    @inlinable public static func bfloat16(_ x: Float) -> UInt16 {
        let bits = x.bitPattern
        if x.isNaN { return UInt16(bits >> 16) | 0x40 }
        let rounded = bits &+ 0x7FFF &+ ((bits >> 16) & 1)
        return UInt16(rounded >> 16)
    }

    /// Float → IEEE half bits, rounding to nearest even; overflow gives ±infinity.
    @inlinable public static func float16(_ x: Float) -> UInt16 {
        let bits = x.bitPattern
        let sign = UInt16((bits >> 16) & 0x8000)
        let exponent = Int((bits >> 23) & 0xFF)
        let mantissa = bits & 0x7F_FFFF
        if exponent == 0xFF { return sign | 0x7C00 | (mantissa != 0 ? 0x200 : 0) }
        let e = exponent - 127 + 15
        if e >= 0x1F { return sign | 0x7C00 }
        if e <= 0 {
            if e < -10 { return sign }
            // Subnormal half: shift the full significand, round to nearest even.
            let significand = mantissa | 0x80_0000
            let shift = UInt32(14 - e)
            let half = UInt32(1) << (shift - 1)
            let remainder = significand & ((UInt32(1) << shift) - 1)
            var result = significand >> shift
            if remainder > half || (remainder == half && (result & 1) == 1) { result += 1 }
            return sign | UInt16(result)
        }
        var result = UInt32(e) << 10 | (mantissa >> 13)
        let remainder = mantissa & 0x1FFF
        if remainder > 0x1000 || (remainder == 0x1000 && (result & 1) == 1) { result += 1 }
        return sign | UInt16(result)  // a carry into the exponent is the correct rounding
    }

    /// Widens `bytes` (little-endian elements of `dtype`, any alignment) into `out`.
    public static func widen(_ bytes: UnsafeRawBufferPointer, dtype: FloatDType, into out: UnsafeMutableBufferPointer<Float>) {
        let n = out.count
        precondition(bytes.count == n * dtype.byteCount, "widen: \(bytes.count) bytes for \(n) elements of \(dtype.rawValue)")
        switch dtype {
        case .float32:
            // Safe because both buffers hold exactly n × 4 bytes (checked above).
            if n > 0, let dst = out.baseAddress, let src = bytes.baseAddress {
                UnsafeMutableRawPointer(dst).copyMemory(from: src, byteCount: n * 4)
            }
        case .bfloat16:
            for i in 0..<n {
                out[i] = float(bfloat16: UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
            }
        case .float16:
            for i in 0..<n {
                out[i] = float(float16: UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
            }
        }
    }
}
