/// The `buckets` and `delta-buckets` chunk filters of format 1.1 (FORMAT.md section 6).
///
/// Each value becomes one *symbol byte* naming a log-scale bucket, plus the value's low bits
/// ("extra bits") that the bucket leaves open:
/// - `v < 16`: symbol `v`, no extra bits;
/// - otherwise, with `L` the index of the highest set bit (4...31) and `m` the two bits below it:
///   symbol `16 + 4(L - 4) + m` (at most 127), followed by the `L - 2` lowest bits of `v`.
///
/// Filtered bytes are the `n` symbol bytes, then every value's extra bits packed least
/// significant bit first (value order; bit i of the stream is bit `i % 8` of byte `i / 8`),
/// the last byte padded with zero bits. The symbols carry nearly all of the information a
/// general-purpose coder can exploit (frequency ranks and quantised gaps are skewed towards
/// small buckets), so zstd's entropy stage sees a dense byte alphabet, while the extra bits,
/// close to uniform within a bucket, are stored as they are instead of being spread over byte
/// planes where zstd finds spurious structure.
enum Buckets {
    /// Symbols below this value stand for themselves.
    static let exact: UInt32 = 16
    /// Largest symbol (of 2^32 - 1).
    static let maxSymbol: UInt8 = 127
    /// Most extra bits of one value.
    static let maxExtraBits = 29

    /// Symbol of `v` and the number of extra bits that follow it.
    @inline(__always) static func symbol(_ v: UInt32) -> (symbol: UInt8, bits: Int) {
        if v < exact { return (UInt8(truncatingIfNeeded: v), 0) }
        let L = 31 - v.leadingZeroBitCount
        let m = Int((v >> UInt32(L - 2)) & 3)
        return (UInt8(truncatingIfNeeded: 16 + 4 * (L - 4) + m), L - 2)
    }

    /// Per symbol (128): value with all extra bits zero, number of extra bits, and their mask.
    static let table: [(base: UInt32, bits: UInt32, mask: UInt32)] = (0..<128).map { s in
        if s < 16 { return (UInt32(s), 0, 0) }
        let L = 4 + (s - 16) / 4, m = UInt32((s - 16) % 4), sh = L - 2
        return ((4 | m) << UInt32(sh), UInt32(sh), UInt32((1 << sh) - 1))
    }

    /// Largest symbol whose values fit in `w` bytes.
    static func maxSymbol(width w: Int) -> UInt8 { w >= 4 ? maxSymbol : symbol(UInt32((1 << (8 * w)) - 1)).symbol }

    /// Most filtered bytes `n` values can take (`n` symbols plus 29 extra bits each).
    static func maxFilteredBytes(_ n: Int) -> Int { n + (maxExtraBits * n + 7) / 8 }

    /// values [n] -> filtered bytes; `out` holds at least `maxFilteredBytes(n) + 8` bytes.
    /// Returns the filtered length.
    static func encode(_ values: UnsafeBufferPointer<UInt32>, delta: Bool, into out: UnsafeMutablePointer<UInt8>) -> Int {
        let n = values.count
        var acc: UInt64 = 0, held = 0, o = n   // held bits of acc; o: next byte of the bit stream
        var prev: UInt32 = 0
        for i in 0..<n {
            var v = values[i]
            if delta {
                let d = Int32(bitPattern: v &- prev)
                prev = v
                v = UInt32(bitPattern: (d << 1) ^ (d >> 31))   // zigzag: small |d| -> small v
            }
            let (s, b) = symbol(v)
            out[i] = s
            if b > 0 {
                acc |= UInt64(v & ((1 << UInt32(b)) &- 1)) << UInt64(held)
                held += b
                if held >= 32 {
                    // Safe because o + 4 <= maxFilteredBytes(n) + 8: at most 29 bits per value were added.
                    UnsafeMutableRawPointer(out + o).storeBytes(of: UInt32(truncatingIfNeeded: acc).littleEndian, as: UInt32.self)
                    o += 4; acc >>= 32; held -= 32
                }
            }
        }
        while held > 0 { out[o] = UInt8(truncatingIfNeeded: acc); o += 1; acc >>= 8; held -= 8 }
        return o
    }

    /// filtered bytes [len] -> values [n]. `src` must be followed by 8 readable bytes (the
    /// decoder's scratch pads them), so 64-bit loads at the end of the bit stream stay in
    /// bounds. Every symbol is checked against the width and the bit stream's length is checked
    /// against the symbols before any extra bit is read. Returns why the bytes are malformed,
    /// or nil.
    static func decode(_ src: UnsafePointer<UInt8>, length len: Int, count n: Int, width w: Int, delta: Bool,
                       into v: UnsafeMutablePointer<UInt32>) -> String? {
        guard len >= n else { return "\(len) filtered bytes cannot hold \(n) bucket symbols" }
        return table.withUnsafeBufferPointer { tab -> String? in
            // Pass 1: symbols in range, and exactly as many stream bytes as their extra bits need.
            var maxS: UInt8 = 0, total = 0
            for i in 0..<n {
                let s = src[i]
                maxS = max(maxS, s)
                total &+= Int(tab[Int(s & 127)].bits)
            }
            let limit = delta ? maxSymbol : maxSymbol(width: w)
            guard maxS <= limit else { return "bucket symbol \(maxS) exceeds \(limit) (width \(w))" }
            guard (total + 7) / 8 == len - n else { return "\(total) extra bits need \((total + 7) / 8) bytes, chunk has \(len - n)" }
            let bits = src + n
            if total % 8 != 0, bits[len - n - 1] >> UInt8(total % 8) != 0 { return "non-zero padding bits" }
            // Pass 2. Safe because pos <= total, so pos/8 <= len - n and 8 bytes from there lie
            // within the stream plus its 8 padding bytes; symbols are < 128 (checked above).
            var pos = 0
            for i in 0..<n {
                let e = tab[Int(src[i] & 127)]
                let word = UnsafeRawPointer(bits + (pos >> 3)).loadUnaligned(as: UInt64.self).littleEndian
                v[i] = e.base | (UInt32(truncatingIfNeeded: word >> UInt64(pos & 7)) & e.mask)
                pos &+= Int(e.bits)
            }
            if delta {
                var prev: UInt32 = 0, maxV: UInt32 = 0
                for i in 0..<n {
                    let z = v[i]
                    prev = prev &+ ((z >> 1) ^ (0 &- (z & 1)))   // un-zigzag, then running sum (mod 2^32)
                    v[i] = prev
                    maxV = max(maxV, prev)
                }
                guard w >= 4 || maxV >> UInt32(8 * w) == 0 else { return "value \(maxV) does not fit width \(w)" }
            }
            return nil
        }
    }
}
