import Random

/// A counter-based random stream: the draws of a position depend only on (seed, position),
/// never on thread count, batch layout or where a resumed run restarted.
///
/// ``SplitMix64`` started from a key mixed from seed and position; 53-bit uniforms in [0, 1).
public struct CounterRandom: RandomNumberGenerator, Sendable {
    private var generator: SplitMix64

    /// - Parameters:
    ///   - seed: the run's seed.
    ///   - position: the token's position in the corpus stream (unique per token).
    public init(seed: UInt64, position: UInt64) {
        let s = seed ^ 0x6A09_E667_F3BC_C909
        generator = SplitMix64(seed: SplitMix64.mix(s &+ position &* SplitMix64.increment))
    }

    public mutating func next() -> UInt64 { generator.next() }

    /// A uniform double in [0, 1).
    public mutating func nextUniform() -> Double { generator.unit() }
}
