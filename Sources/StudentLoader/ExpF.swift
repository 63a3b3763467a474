import Foundation

/// e^x for 8 float lanes with the algorithm of glibc's `expf` (glibc ≥ 2.28, the FMA build the
/// dynamic loader picks on x86-64 with FMA): x·32/ln2 = k + r, e^x = 2^(k/32) · p(r) with a
/// degree-3 polynomial in double and one rounding to float at the end. Every step, including
/// which products are fused, follows that build, so the results are bit-identical to the scalar
/// `expf` the targets used before (checked by `ExpFTests` against libm), at about 1/10 of its
/// cost, and identical on every machine. Lanes with |x| >= 88, ±inf or NaN (the over- and
/// underflow paths) go through libm's `expf` one by one.
@inline(__always)
func expf8(_ x: SIMD8<Float>) -> SIMD8<Float> {
    // Safe because SIMD8<Float> and SIMD8<UInt32> have the same size; a bit cast.
    let bits = unsafeBitCast(x, to: SIMD8<UInt32>.self) & 0x7FFF_FFFF
    // |x| >= 88, inf or NaN: libm's special cases. (bits − bound has its top bit set exactly
    // when bits < bound, as both are below 2^31; integer vector compares are lowered lane by
    // lane, this is not.)
    let below = (bits &- 0x42B0_0000) &>> 31
    let h = below.lowHalf & below.highHalf, q = h.lowHalf & h.highHalf
    if q[0] & q[1] == 0 {
        var y = SIMD8<Float>()
        for i in 0..<8 { y[i] = expf(x[i]) }
        return y
    }
    let xd = SIMD8<Double>(x)
    let invLn2N = SIMD8<Double>(repeating: Double(bitPattern: 0x4047_1547_652B_82FE))   // 32/ln2
    let shift = SIMD8<Double>(repeating: Double(bitPattern: 0x4338_0000_0000_0000))     // 1.5·2^52
    // Adding 1.5·2^52 rounds x·32/ln2 to the nearest integer k, left in the low mantissa bits.
    let kShifted = shift.addingProduct(invLn2N, xd)
    // Safe because SIMD8<Double> and SIMD8<UInt64> have the same size; a bit cast.
    let ki = unsafeBitCast(kShifted, to: SIMD8<UInt64>.self)
    let kd = kShifted - shift
    let r = (-kd).addingProduct(invLn2N, xd)   // fused, like the library's vfmsub
    let z = SIMD8<Double>(repeating: Double(bitPattern: 0x3F2E_BFCE_50FA_C4F3))
        .addingProduct(r, SIMD8<Double>(repeating: Double(bitPattern: 0x3EBC_6AF8_4B91_2394)))
    let r2 = r * r
    var y = SIMD8<Double>(repeating: 1).addingProduct(r, SIMD8<Double>(repeating: Double(bitPattern: 0x3F96_2E42_FF0C_52D6)))
    y = y.addingProduct(z, r2)
    // 2^(k/32): the table holds 2^(i/32) with its exponent pre-shifted by −i, so adding k << 47
    // to entry k mod 32 yields the bits of 2^(k/32).
    var t = SIMD8<UInt64>()
    for i in 0..<8 { t[i] = exp2fTable[Int(ki[i] & 31)] }
    t &+= ki &<< 47
    // Safe because SIMD8<UInt64> and SIMD8<Double> have the same size; a bit cast.
    y *= unsafeBitCast(t, to: SIMD8<Double>.self)
    return SIMD8<Float>(y)
}

/// Writes `e_i = expf((l[i] − m)·a)` into `o` (count) and returns `Σ e_i` summed in double in
/// index order, bit for bit; 8 lanes at a time, the tail through a vector padded with zeros.
///
/// The sum is taken in vector lanes when that is provably the same number: if every e_i is 0
/// or in [2^-23, 1] and count < 128, each e_i is a multiple of 2^-46 and every partial sum a
/// multiple of 2^-46 below 2^7, which double holds exactly — so no addition rounds and the
/// order cannot matter. Otherwise (tiny or large terms) it sums one by one in index order.
@inline(__always)
func expShiftedSum(_ o: UnsafeMutablePointer<Float>, _ l: UnsafePointer<Float>, _ count: Int, minus m: Float, times a: Float) -> Double {
    let rl = UnsafeRawPointer(l), ro = UnsafeMutableRawPointer(o)
    var acc = SIMD8<Double>(), lo = SIMD8<Float>(repeating: 1), hi = SIMD8<Float>()
    @inline(__always) func take(_ y: SIMD8<Float>) {
        acc += SIMD8<Double>(y)
        // Zeros are exact in any sum, so they do not count for the smallest term.
        lo = lo.replacing(with: y, where: (y .< lo) .& (y .!= 0))
        hi = hi.replacing(with: y, where: y .> hi)
    }
    var i = 0
    while i + 8 <= count {
        // Safe because i + 8 <= count elements exist in both buffers.
        let y = expf8((rl.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self) - m) * a)
        ro.storeBytes(of: y, toByteOffset: 4 * i, as: SIMD8<Float>.self)
        take(y)
        i += 8
    }
    if i < count {
        var v = SIMD8<Float>(repeating: m)
        // Safe because only the count − i remaining elements are read and written.
        for j in 0..<(count - i) { v[j] = l[i + j] }
        var y = expf8((v - m) * a)
        for j in 0..<(count - i) { o[i + j] = y[j] }
        for j in (count - i)..<8 { y[j] = 0 }
        take(y)
    }
    if count < 128 && minLane(lo) >= 0x1p-23 && maxLane(hi) <= 1 {
        let h = acc.lowHalf + acc.highHalf, q = h.lowHalf + h.highHalf
        let s = q[0] + q[1]
        if !s.isNaN { return s }   // a NaN term (never in a verified cache) takes the ordered path
    }
    var s = 0.0
    for j in 0..<count { s += Double(o[j]) }
    return s
}

/// Smallest and largest lane by halving (Swift's `min()`/`max()` stay a generic call).
@inline(__always)
func minLane(_ v: SIMD8<Float>) -> Float {
    let h = v.lowHalf.replacing(with: v.highHalf, where: v.highHalf .< v.lowHalf)
    let q = h.lowHalf.replacing(with: h.highHalf, where: h.highHalf .< h.lowHalf)
    return Swift.min(q[0], q[1])
}

@inline(__always)
func maxLane(_ v: SIMD8<Float>) -> Float {
    let h = v.lowHalf.replacing(with: v.highHalf, where: v.highHalf .> v.lowHalf)
    let q = h.lowHalf.replacing(with: h.highHalf, where: h.highHalf .> h.lowHalf)
    return Swift.max(q[0], q[1])
}

/// glibc's `__exp2f_data.tab`: bits of 2^(i/32) minus i << 47, i = 0..<32.
private let exp2fTable: [UInt64] = [
    0x3FF0_0000_0000_0000, 0x3FEF_D9B0_D315_8574, 0x3FEF_B558_6CF9_890F, 0x3FEF_9301_D012_5B51,
    0x3FEF_72B8_3C7D_517B, 0x3FEF_5487_3168_B9AA, 0x3FEF_387A_6E75_6238, 0x3FEF_1E9D_F51F_DEE1,
    0x3FEF_06FE_0A31_B715, 0x3FEE_F1A7_373A_A9CB, 0x3FEE_DEA6_4C12_3422, 0x3FEE_CE08_6061_892D,
    0x3FEE_BFDA_D536_2A27, 0x3FEE_B42B_569D_4F82, 0x3FEE_AB07_DD48_5429, 0x3FEE_A47E_B03A_5585,
    0x3FEE_A09E_667F_3BCD, 0x3FEE_9F75_E8EC_5F74, 0x3FEE_A114_73EB_0187, 0x3FEE_A589_994C_CE13,
    0x3FEE_ACE5_422A_A0DB, 0x3FEE_B737_B0CD_C5E5, 0x3FEE_C491_82A3_F090, 0x3FEE_D503_B23E_255D,
    0x3FEE_E89F_995A_D3AD, 0x3FEE_FF76_F2FB_5E47, 0x3FEF_199B_DD85_529C, 0x3FEF_3720_DCEF_9069,
    0x3FEF_5818_DCFB_A487, 0x3FEF_7C97_337B_9B5F, 0x3FEF_A4AF_A2A4_90DA, 0x3FEF_D076_5B6E_4540,
]
