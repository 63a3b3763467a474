// Vectorised elementary functions for softmax, SiLU and GELU. Swift's scalar `exp` is a libm
// call per element; these stay in SIMD registers.

/// e^x for 16 lanes, Cephes-style: x = n·ln2 + r, |r| <= ln2/2, e^r by a degree-6 polynomial,
/// 2^n by building the exponent bits. Relative error about 2 ulp for x in [-87.3, 88.3];
/// below that the result is 0 (including -inf), above it clamps to e^88.3 (finite).
/// NaN lanes give NaN.
@inlinable @inline(__always)
public func simdExp(_ x: SIMD16<Float>) -> SIMD16<Float> {
    let lo = SIMD16<Float>(repeating: -87.3), hi = SIMD16<Float>(repeating: 88.3)
    var v = x.replacing(with: hi, where: x .> hi)
    let under = v .< lo
    v = v.replacing(with: lo, where: under)
    // Adding 1.5·2^23 rounds to the nearest integer and leaves it in the low mantissa bits,
    // which avoids a trapping float->int conversion on NaN lanes.
    let t = v * 1.442_695_040_888_963_4 + 12_582_912
    let n = t - 12_582_912
    let r = v - n * 0.693_359_375 + n * 2.121_944_400_546_905_827_679e-4
    var p = SIMD16<Float>(repeating: 1.987_569_150_0e-4)
    p = p * r + 1.398_199_950_7e-3
    p = p * r + 8.333_451_907_3e-3
    p = p * r + 4.166_579_589_4e-2
    p = p * r + 1.666_666_545_9e-1
    p = p * r + 5.000_000_120_1e-1
    p = p * (r * r) + r + 1
    // Safe because SIMD16<Int32> and SIMD16<Float> have the same size; these are bit casts.
    let bits = (unsafeBitCast(t, to: SIMD16<Int32>.self) &- 0x4B40_0000 &+ 127) &<< 23
    var y = p * unsafeBitCast(bits, to: SIMD16<Float>.self)
    y = y.replacing(with: 0, where: under)
    return y
}

/// e^x for one value with the same polynomial as ``simdExp(_:)`` (used for loop tails, so a
/// value gives the same result whether it lands in a vector or a tail).
@inlinable @inline(__always)
public func scalarExp(_ x: Float) -> Float {
    simdExp(SIMD16<Float>(repeating: x))[0]
}

/// Applies `f` to `count` floats from `input` into `out`, 16 at a time; the tail goes through
/// a zero-padded vector so every element sees the same arithmetic.
/// input (count) -> out (count); out may alias input.
@inline(__always)
func mapSIMD(_ out: UnsafeMutablePointer<Float>, _ input: UnsafePointer<Float>, _ count: Int,
             _ f: (SIMD16<Float>) -> SIMD16<Float>) {
    let raw = UnsafeRawPointer(input), rawOut = UnsafeMutableRawPointer(out)
    var i = 0
    while i + 16 <= count {
        // Safe because i+16 <= count elements exist in both buffers.
        rawOut.storeBytes(of: f(raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)),
                          toByteOffset: i * 4, as: SIMD16<Float>.self)
        i += 16
    }
    if i < count {
        var x = SIMD16<Float>()
        // Safe because only the count-i remaining elements are read and written.
        for j in 0..<(count - i) { x[j] = input[i + j] }
        let y = f(x)
        for j in 0..<(count - i) { out[i + j] = y[j] }
    }
}
