#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The Llama 3 `rope_scaling` rule (`rope_type: "llama3"`), as in transformers'
/// `_compute_llama3_parameters`.
///
/// API status: final.
public struct Llama3RopeScaling: Sendable, Equatable {
    public var factor: Double
    public var lowFrequencyFactor: Double
    public var highFrequencyFactor: Double
    public var originalMaxPositions: Int

    public init(factor: Double, lowFrequencyFactor: Double, highFrequencyFactor: Double, originalMaxPositions: Int) {
        self.factor = factor
        self.lowFrequencyFactor = lowFrequencyFactor
        self.highFrequencyFactor = highFrequencyFactor
        self.originalMaxPositions = originalMaxPositions
    }
}

/// Rotary position embedding in the Hugging Face rotate-half convention: for a head vector
/// x (D), i < D/2 and angle θ = position · invFreq[i],
/// y[i] = x[i]·cos θ − x[i+D/2]·sin θ, y[i+D/2] = x[i+D/2]·cos θ + x[i]·sin θ.
///
/// Inverse frequencies are computed in float32 as PyTorch does
/// (`1 / theta ** (arange(0, D, 2) / D)`, then the llama3 rule), and angles as the float32
/// product position · invFreq, so tables match transformers' `cos`/`sin` to rounding.
///
/// API status: final.
public struct RotaryEmbedding: Sendable {
    /// Head dimension D (even).
    public let headDim: Int
    /// Positions the tables cover: 0..<maxPositions.
    public let maxPositions: Int
    /// invFreq (D/2)
    public let inverseFrequencies: [Float]
    /// cos, sin (maxPositions, D/2)
    @usableFromInline let cosTable: [Float]
    @usableFromInline let sinTable: [Float]

    /// - Parameters:
    ///   - headDim: D, even and > 0.
    ///   - theta: `rope_theta` (base), e.g. 10000.
    ///   - scaling: the llama3 rule, or nil for plain RoPE.
    ///   - maxPositions: size of the precomputed cos/sin tables.
    public init(headDim D: Int, theta: Double, scaling: Llama3RopeScaling? = nil, maxPositions: Int) {
        precondition(D > 0 && D % 2 == 0, "RotaryEmbedding: head dimension \(D) must be even")
        precondition(maxPositions >= 0, "RotaryEmbedding: negative maxPositions")
        headDim = D
        self.maxPositions = maxPositions
        let half = D / 2
        var inv = (0..<half).map { i -> Float in
            let exponent = Float(2 * i) / Float(D)
            return 1 / powf(Float(theta), exponent)
        }
        if let s = scaling {
            // The llama3 rule, elementwise in float32 like transformers' tensor code.
            let factor = Float(s.factor), lowF = Float(s.lowFrequencyFactor), highF = Float(s.highFrequencyFactor)
            let old = Float(s.originalMaxPositions)
            let lowWavelen = old / lowF, highWavelen = old / highF
            inv = inv.map { f in
                let wavelen = 2 * Float.pi / f
                let scaled = wavelen > lowWavelen ? f / factor : f
                if wavelen < highWavelen || wavelen > lowWavelen { return scaled }
                let smooth = (old / wavelen - lowF) / (highF - lowF)
                return (1 - smooth) * scaled / factor + smooth * scaled
            }
        }
        inverseFrequencies = inv
        var c = [Float](repeating: 0, count: maxPositions * half)
        var sn = c
        for p in 0..<maxPositions {
            for i in 0..<half {
                let angle = Double(Float(p) * inv[i])
                c[p * half + i] = Float(cos(angle))
                sn[p * half + i] = Float(sin(angle))
            }
        }
        cosTable = c
        sinTable = sn
    }
}

/// Applies RoPE in place to every head of every position.
///
/// x (B, T, H, D) with row stride `rowStride` floats between consecutive (b, t) (>= H·D; lets
/// q and k live inside a fused QKV buffer), heads at offsets h·D. Position of (b, t) is
/// `positionOffset + t`.
///
/// - Throws: ``KernelError/sequenceTooLong(length:limit:)`` when positionOffset + T exceeds
///   the rope's tables.
///
/// API status: final.
public func ropeForward(_ x: UnsafeMutablePointer<Float>, batch B: Int, length T: Int, heads H: Int,
                        rowStride: Int? = nil, positionOffset: Int = 0,
                        rope: RotaryEmbedding, pool: ThreadPool) throws(KernelError) {
    try ropeRotate(x, batch: B, length: T, heads: H, rowStride: rowStride, positionOffset: positionOffset,
                   rope: rope, sign: 1, pool: pool)
}

/// Rotates each (i, i+D/2) pair by `sign`·θ in place: +1 is the forward, −1 its backward
/// (the transpose of a rotation is the rotation by −θ). Negating sin is exact, so both
/// directions use the same products.
func ropeRotate(_ x: UnsafeMutablePointer<Float>, batch B: Int, length T: Int, heads H: Int,
                rowStride: Int?, positionOffset: Int, rope: RotaryEmbedding, sign: Float,
                pool: ThreadPool) throws(KernelError) {
    let D = rope.headDim, half = D / 2
    let ld = rowStride ?? H * D
    precondition(ld >= H * D, "rope: row stride \(ld) < \(H * D)")
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
                        // Safe because r < B·T and h·D + D <= rowStride keep v inside x.
                        let v = x + r * ld + h * D
                        var i = 0
                        // 16 pairs at a time, the same products and differences as the tail.
                        while i + 16 <= half {
                            typealias F = SIMD16<Float>
                            let lo = UnsafeMutableRawPointer(v + i), hi = UnsafeMutableRawPointer(v + i + half)
                            let a = lo.loadUnaligned(as: F.self), b = hi.loadUnaligned(as: F.self)
                            let c = UnsafeRawPointer(cs + i).loadUnaligned(as: F.self)
                            let s = sign * UnsafeRawPointer(sn + i).loadUnaligned(as: F.self)
                            lo.storeBytes(of: a * c - b * s, as: F.self)
                            hi.storeBytes(of: b * c + a * s, as: F.self)
                            i += 16
                        }
                        for i in i..<half {
                            let a = v[i], b = v[i + half], s = sign * sn[i]
                            v[i] = a * cs[i] - b * s
                            v[i + half] = b * cs[i] + a * s
                        }
                    }
                }
            }
        }
    }
}
