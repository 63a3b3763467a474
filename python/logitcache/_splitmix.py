"""SplitMix64, the one seeded generator of LogitCache (`Sources/Random/SplitMix64.swift`): the
loader's epoch order, capture's sampled draws and synthetic caches draw from the same stream in
Swift and in Python."""

from __future__ import annotations

import numpy as np

M64 = (1 << 64) - 1
INCREMENT = 0x9E3779B97F4A7C15  # the Weyl-sequence increment (2^64 / golden ratio, odd)


def mix(z: int) -> int:
    """The output function: a bijective mix of 64 bits."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def mix_array(z: np.ndarray) -> np.ndarray:
    """`mix` of every element of a uint64 array (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


class SplitMix64:
    """The generator: `next()` gives the Swift `SplitMix64(seed:).next()` sequence."""

    def __init__(self, seed: int):
        self.state = seed & M64

    def next(self) -> int:
        self.state = (self.state + INCREMENT) & M64
        return mix(self.state)

    def unit(self) -> float:
        """Uniform in [0, 1) with 53 random bits."""
        return (self.next() >> 11) * 2.0 ** -53
