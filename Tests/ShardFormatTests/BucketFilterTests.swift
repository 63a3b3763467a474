import Foundation
import Testing
@testable import ShardFormat
import Random

/// The format 1.1 bucket filters (FORMAT.md section 6): the symbol definition against a bit-by-bit
/// reference, exact round trips over every magnitude and chunk size, and malformed chunks that
/// give an error naming the file and chunk, never a crash.
@Suite struct BucketFilterTests {
    /// Symbol and extra-bit count of `v`, from the spec's words, one bit at a time.
    static func referenceSymbol(_ v: UInt32) -> (symbol: Int, bits: Int) {
        if v < 16 { return (Int(v), 0) }
        var L = 31
        while (v >> UInt32(L)) & 1 == 0 { L -= 1 }
        let m = Int((v >> UInt32(L - 2)) & 3)
        return (16 + 4 * (L - 4) + m, L - 2)
    }

    /// Values of every magnitude: all small ones, powers of two and their neighbours, random.
    static func magnitudes(_ rng: inout SplitMix64, count: Int) -> [UInt32] {
        var v: [UInt32] = Array(0...70) + [.max, .max - 1]
        for b in 0..<32 { v += [1 << UInt32(b), (1 << UInt32(b)) &- 1, (1 << UInt32(b)) &+ 1] }
        for _ in 0..<count { v.append(UInt32(truncatingIfNeeded: rng.next()) >> UInt32(rng.next() % 32)) }
        return v
    }

    @Test func symbolsFollowTheSpec() {
        var rng = SplitMix64(seed: 3)
        for v in Self.magnitudes(&rng, count: 5000) {
            let (s, b) = Buckets.symbol(v), ref = Self.referenceSymbol(v)
            #expect(Int(s) == ref.symbol && b == ref.bits, "value \(v)")
            let e = Buckets.table[Int(s)]
            #expect(e.base == v & ~e.mask && e.bits == UInt32(b) && e.mask == (1 << UInt32(b)) &- 1, "value \(v)")
        }
        #expect(Buckets.symbol(.max).symbol == Buckets.maxSymbol)
        // FORMAT.md's example: 100 = 0b1100100 has L = 6, m = 0b10: symbol 26, extra bits 0b0100.
        #expect(Buckets.symbol(100) == (26, 4))
        var out = [UInt8](repeating: 0, count: Buckets.maxFilteredBytes(1) + 8)
        let n = [UInt32(100)].withUnsafeBufferPointer { Buckets.encode($0, delta: false, into: &out) }
        #expect(Array(out[0..<n]) == [26, 0b0100])
    }

    /// Stored bytes of `v` through the writer's encoder.
    static func encode(_ v: [UInt32], _ filter: ChunkFilter, _ codec: Codec) throws -> [UInt8] {
        var stored: [UInt8] = []
        try v.withUnsafeBufferPointer { vals in
            try ChunkEncoder().encode(vals, filter: filter, width: byteWidth(v.max() ?? 0), codec: codec) { stored = Array($0) }
        }
        return stored
    }

    /// Values of `stored` through the reader's decoder.
    static func decode(_ stored: [UInt8], count: Int, width: Int, _ filter: ChunkFilter, _ codec: Codec) throws -> [UInt32] {
        let d = ChunkDescriptor(offset: 16, size: stored.count, count: count, width: width, filter: filter, codec: codec, xxh3: 0)
        var out = [UInt32](repeating: 0, count: count)
        try stored.withUnsafeBytes { s in
            try out.withUnsafeMutableBufferPointer { o in
                try ChunkDecoder().decode(s, d, file: "f.lcs", chunk: "block 0 column entry_ids.0", into: o.baseAddress!)
            }
        }
        return out
    }

    static let codecs: [Codec] = [.none, .lz4, .zstd(level: 3), .zstd(level: 19)]

    @Test func roundTripsOverRandomShapes() throws {
        var rng = SplitMix64(seed: 11)
        for trial in 0..<240 {
            // 1 and 2 values, then sizes up to 5000; ranks skewed to small values below a
            // vocabulary of 256 ... 262,144 (as dictionary ranks and gaps are), or any u32.
            let n = trial < 2 ? trial + 1 : 1 + Int(rng.next() % 5000)
            let V: UInt64 = [256, 1000, 32000, 128_000, 262_144, 1 << 24, 1 << 32][trial % 7]
            let v: [UInt32] = (0..<n).map { _ in
                let r = rng.next() % 4 == 0 ? rng.next() % V : UInt64(-40 * log(max(rng.unit(), 1e-12))) % V
                return UInt32(truncatingIfNeeded: r)
            }
            for filter in [ChunkFilter.buckets, .deltaBuckets] {
                let codec = Self.codecs[trial % Self.codecs.count]
                let stored = try Self.encode(v, filter, codec)
                #expect(try Self.decode(stored, count: n, width: byteWidth(v.max()!), filter, codec) == v, "\(filter) \(codec) n=\(n)")
            }
        }
        var all = Self.magnitudes(&rng, count: 20000)
        for i in stride(from: all.count - 1, to: 0, by: -1) { all.swapAt(i, Int(rng.next() % UInt64(i + 1))) }
        for filter in [ChunkFilter.buckets, .deltaBuckets] {
            for codec in Self.codecs {
                #expect(try Self.decode(try Self.encode(all, filter, codec), count: all.count, width: 4, filter, codec) == all)
            }
        }
    }

    /// An empty column is written as the empty raw chunk (FORMAT.md section 6), whatever filter
    /// was asked for.
    @Test func emptyColumnsStayEmptyRawChunks() throws {
        let r = try [UInt32]().withUnsafeBufferPointer {
            try ChunkEncoder().encode($0, codec: .zstd(level: 3), float: false, buckets: .buckets) { #expect($0.count == 0) }
        }
        #expect(r.filter == .raw && r.codec == .none)
    }

    @Test func malformedBucketChunksGiveNamedErrors() throws {
        // 11 values with 1..29 extra bits: 0 + 2 + ... total 155 bits, not a multiple of 8.
        var v: [UInt32] = [3, 100, 5000, 70000, 1 << 20, 123_456_789, 17, 1 << 31, 40, 900, 2]
        var total = v.reduce(0) { $0 + Buckets.symbol($1).bits }
        if total % 8 == 0 { v.append(16); total += 2 }
        func le(_ x: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: x >> (8 * $0)) } }
        for codec in Self.codecs {
            let good = try Self.encode(v, .buckets, codec)
            let S = Int(good[0]) | Int(good[1]) << 8 | Int(good[2]) << 16 | Int(good[3]) << 24
            #expect(try Self.decode(good, count: v.count, width: 4, .buckets, codec) == v)
            var cases: [(String, [UInt8], Int)] = [   // what, stored bytes, declared width
                ("no bytes", [], 4),
                ("3 bytes", Array(good.prefix(3)), 4),
                ("symbol size past the end", le(UInt32(good.count - 3)) + good.dropFirst(4), 4),
                ("symbol size 2^32 - 1", le(.max) + good.dropFirst(4), 4),
                ("an extra-bit byte short", Array(good.dropLast()), 4),
                ("an extra-bit byte too many", good + [0], 4),
                ("non-zero padding bits", Array(good.dropLast()) + [good.last! | 0x80], 4),
                ("symbols cut by one", le(UInt32(S - 1)) + good[4..<(3 + S)] + good[(4 + S)...], 4),
                ("values wider than the width", good, 2),
            ]
            if codec == .none {
                var big = good
                big[4] = 128   // no such symbol
                cases.append(("symbol 128", big, 4))
            }
            for (what, bytes, w) in cases {
                do {
                    _ = try Self.decode(bytes, count: v.count, width: w, .buckets, codec)
                    Issue.record("\(codec): accepted \(what)")
                } catch let ShardFormatError.malformed(file, chunk, _) {
                    #expect(file == "f.lcs" && chunk == "block 0 column entry_ids.0", "\(codec) \(what)")
                }
            }
            // Deltas summing past the declared width.
            let d = try Self.encode([200, 300], .deltaBuckets, codec)
            #expect(throws: ShardFormatError.self) { try Self.decode(d, count: 2, width: 1, .deltaBuckets, codec) }
        }
    }

    /// Random stored bytes of every size: an error or values, never a crash or an over-read.
    @Test func randomBytesNeverCrashTheDecoder() throws {
        var rng = SplitMix64(seed: 99)
        var errors = 0
        for trial in 0..<3000 {
            let size = Int(rng.next() % 200)
            var bytes = (0..<size).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            // Often a plausible symbol size, so the symbol and bit checks are reached too.
            if size >= 4 && trial % 2 == 0 {
                let s = UInt32(rng.next() % UInt64(size - 3))
                for i in 0..<4 { bytes[i] = UInt8(truncatingIfNeeded: s >> UInt32(8 * i)) }
            }
            let count = 1 + Int(rng.next() % 64)
            let filter: ChunkFilter = trial % 3 == 0 ? .deltaBuckets : .buckets
            do { _ = try Self.decode(bytes, count: count, width: 1 + Int(rng.next() % 4), filter, Self.codecs[trial % 3]) } catch is ShardFormatError {
                errors += 1
            }
        }
        #expect(errors > 2500)
    }
}
