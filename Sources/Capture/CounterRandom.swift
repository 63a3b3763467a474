/// A counter-based random stream: the draws of a position depend only on (seed, position),
/// never on thread count, batch layout or where a resumed run restarted.
///
/// SplitMix64 (Steele, Lea & Flood, 2014) over a key mixed from seed and position; 53-bit
/// uniforms in [0, 1).
public struct CounterRandom: RandomNumberGenerator, Sendable {
    private var state: UInt64

    /// - Parameters:
    ///   - seed: the run's seed.
    ///   - position: the token's position in the corpus stream (unique per token).
    public init(seed: UInt64, position: UInt64) {
        var s = seed ^ 0x6A09_E667_F3BC_C909
        s = CounterRandom.mix(s &+ position &* 0x9E37_79B9_7F4A_7C15)
        state = s
    }

    @inline(__always)
    static func mix(_ x: UInt64) -> UInt64 {
        var z = x
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        return CounterRandom.mix(state)
    }

    /// A uniform double in [0, 1).
    public mutating func nextUniform() -> Double { Double(next() >> 11) * 0x1p-53 }
}
