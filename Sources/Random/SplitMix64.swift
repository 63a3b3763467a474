import Foundation

/// SplitMix64 (Steele, Lea & Flood, 2014): the one seeded generator of LogitCache. Synthetic
/// caches, the loader's epoch order, sampled draws and random checkpoints all draw from it, so
/// the same seed gives the same numbers on every machine (the Python package implements the
/// same stream in `logitcache.loader` and `logitcache.capture`).
public struct SplitMix64: RandomNumberGenerator, Sendable {
    /// The Weyl-sequence increment (2^64 / φ, odd).
    public static let increment: UInt64 = 0x9E37_79B9_7F4A_7C15

    public var state: UInt64

    public init(seed: UInt64) { state = seed }

    /// The output function: a bijective mix of 64 bits.
    @inline(__always)
    public static func mix(_ x: UInt64) -> UInt64 {
        var z = x
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    @inline(__always)
    public mutating func next() -> UInt64 {
        state &+= SplitMix64.increment
        return SplitMix64.mix(state)
    }

    /// Uniform in [0, 1) with 53 random bits.
    public mutating func unit() -> Double { Double(next() >> 11) * 0x1p-53 }

    /// Standard normal (Box–Muller over two ``unit()`` draws).
    public mutating func normal() -> Double {
        let u = max(unit(), 1e-300), v = unit()
        return (-2 * log(u)).squareRoot() * cos(2 * .pi * v)
    }
}
