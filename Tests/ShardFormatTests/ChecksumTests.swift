import Testing
@testable import ShardFormat

@Suite struct ChecksumTests {
    @Test func emptyInputMatchesPublishedXXH3Value() {
        // XXH3_64bits of zero bytes, seed 0, as published by the xxHash reference.
        #expect(Checksum.xxh3([]) == 0x2D06_8005_38D3_94C2)
    }

    @Test func everySingleBitFlipChangesTheChecksum() {
        var bytes = (0..<257).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        let reference = Checksum.xxh3(bytes)
        for i in bytes.indices {
            for bit in 0..<8 {
                bytes[i] ^= 1 << bit
                #expect(Checksum.xxh3(bytes) != reference, "flip at byte \(i) bit \(bit)")
                bytes[i] ^= 1 << bit
            }
        }
    }
}
