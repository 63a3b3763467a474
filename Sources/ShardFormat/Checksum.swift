import CXXHash

/// The checksum every chunk, footer and shard of a cache carries: XXH3-64 (seed 0).
///
/// XXH3 runs at memory bandwidth and is available everywhere (Debian `libxxhash`, Python
/// `xxhash`), so an independent reader can verify a cache without our code.
public enum Checksum {
    /// XXH3-64 of `count` bytes at `base`.
    public static func xxh3(_ base: UnsafeRawPointer?, count: Int) -> UInt64 {
        XXH3_64bits(base, count)
    }

    /// XXH3-64 of a byte buffer.
    public static func xxh3(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
        XXH3_64bits(bytes.baseAddress, bytes.count)
    }

    /// XXH3-64 of an array of bytes.
    public static func xxh3(_ bytes: [UInt8]) -> UInt64 {
        bytes.withUnsafeBytes { xxh3($0) }
    }
}
