import CLZ4
import CZstd

/// How a chunk's filtered bytes are compressed (FORMAT.md section 6).
public enum Codec: Sendable, Equatable, Hashable, CustomStringConvertible {
    /// Stored as is; with the `raw` filter and width 4 the reader uses the mapped bytes in place.
    case none
    /// One LZ4 block (fast, weak).
    case lz4
    /// One Zstandard frame at the given level (1...22; 3 is zstd's default).
    case zstd(level: Int32)

    /// The codec's name in footers and manifests.
    public var name: String {
        switch self { case .none: "none"; case .lz4: "lz4"; case .zstd: "zstd" }
    }
    /// The zstd level, 0 for the others.
    public var level: Int32 { if case .zstd(let l) = self { return l }; return 0 }
    public var description: String { if case .zstd(let l) = self { return "zstd(\(l))" }; return name }

    /// Parses `none`, `lz4`, `zstd` or `zstd:LEVEL`.
    public init?(parsing s: String) {
        switch s {
        case "none": self = .none
        case "lz4": self = .lz4
        case "zstd": self = .zstd(level: 3)
        default:
            guard s.hasPrefix("zstd:"), let l = Int32(s.dropFirst(5)), l >= 1, l <= 22 else { return nil }
            self = .zstd(level: l)
        }
    }
}

/// Byte layout of a chunk's values before compression (FORMAT.md section 6).
enum ChunkFilter: String, Sendable {
    /// Values little-endian, `width` bytes each, one after the other.
    case raw
    /// Byte split: `width` planes of `count` bytes, least significant plane first.
    case planes
    /// Format 1.1: one log-scale bucket symbol byte per value, then the values' low bits packed.
    case buckets
    /// Format 1.1: zigzag deltas of consecutive values, then `buckets`.
    case deltaBuckets = "delta-buckets"

    /// Whether the filtered length depends on the values (bucket filters) rather than being
    /// `count * width`.
    var isBuckets: Bool { self == .buckets || self == .deltaBuckets }
    /// Smallest format minor version that defines the filter.
    var minorVersion: Int { isBuckets ? 1 : 0 }
}

/// Smallest byte width holding `maxValue` (at least 1).
@inline(__always) func byteWidth(_ maxValue: UInt32) -> Int {
    maxValue < 1 << 8 ? 1 : maxValue < 1 << 16 ? 2 : maxValue < 1 << 24 ? 3 : 4
}

/// How zstd searches a chunk's bucket symbols for repeats (a compressor setting: the frames
/// and their readers are the same either way).
enum SymbolMatches {
    /// The level's own search, matches of 7+ bytes only.
    case long
    /// Matches of 7+ bytes found through a 64-entry hash of recent positions only: runs of
    /// small quantised log-prob gaps (tail ranks, ties) still become matches, while the level's
    /// deeper search would trade many literals for matches that cost more than they save. On
    /// log-prob gaps this codes as small as zstd's optimal parser (levels 13-19) at level-1
    /// speed, and 3.5 % (teacher-like rows) to 5.4 % (a real teacher) below level 3.
    case local
}

/// Compresses chunks; one per writer (holds a zstd context). Not thread-safe.
final class ChunkEncoder {
    private let cctx: OpaquePointer
    private var filtered: [UInt8] = []   // [count * width] filter output
    private var compressed: [UInt8] = [] // [bound] codec output

    init() {
        // Safe because ZSTD_createCCtx only fails on out-of-memory, where Swift traps anyway.
        cctx = ZSTD_createCCtx()!
    }
    deinit { ZSTD_freeCCtx(cctx) }

    /// Encodes `values` with the filter and codec chosen for them and hands the stored bytes to
    /// `emit`. Returns the chunk's descriptor fields (filter, width, codec actually used).
    /// `buckets` names the bucket filter to use for a compressed integer column (format 1.1),
    /// nil for byte planes; `matches` how zstd searches the bucket symbols for repeats.
    func encode(_ values: UnsafeBufferPointer<UInt32>, codec: Codec, float: Bool, buckets: ChunkFilter? = nil,
                matches: SymbolMatches = .long,
                emit: (UnsafeRawBufferPointer) throws -> Void) throws -> (filter: ChunkFilter, width: Int, codec: Codec) {
        let n = values.count
        if n == 0 {
            try emit(UnsafeRawBufferPointer(start: nil, count: 0))
            return (.raw, 1, .none)
        }
        var maxV: UInt32 = 0
        if !float { for v in values { maxV = max(maxV, v) } }
        // Uncompressed chunks stay raw width 4 so readers can use them in place.
        let w = (float || codec == .none) ? 4 : byteWidth(maxV)
        let filter: ChunkFilter = codec == .none ? .raw : (!float ? buckets : nil) ?? .planes
        try encode(values, filter: filter, width: w, codec: codec, matches: matches, emit: emit)
        return (filter, w, codec)
    }

    /// Encodes `values` with the given filter, width and codec (any combination FORMAT.md
    /// section 6 allows; `width` must hold every value) and hands the stored bytes to `emit`.
    func encode(_ values: UnsafeBufferPointer<UInt32>, filter: ChunkFilter, width w: Int, codec: Codec,
                matches: SymbolMatches = .long, emit: (UnsafeRawBufferPointer) throws -> Void) throws {
        let n = values.count
        var rawCount = filter.isBuckets ? Buckets.maxFilteredBytes(n) + 8 : n * w
        if filtered.count < rawCount { filtered = [UInt8](repeating: 0, count: rawCount) }
        filtered.withUnsafeMutableBufferPointer { f in
            // f: [w planes][n] bytes, raw little-endian values, or [n] symbols + extra bits
            if filter == .raw {
                for i in 0..<n { let v = values[i]; for b in 0..<w { f[i * w + b] = UInt8(truncatingIfNeeded: v >> (8 * b)) } }
            } else if filter.isBuckets {
                // Safe because f holds maxFilteredBytes(n) + 8 >= 8 bytes.
                rawCount = Buckets.encode(values, delta: filter == .deltaBuckets, into: f.baseAddress!)
            } else if n > 0 {
                // Safe because f holds at least n * w > 0 bytes.
                splitPlanes(values, width: w, into: f.baseAddress!)
            }
        }
        if !filter.isBuckets {
            if codec == .none { try filtered.withUnsafeBytes { try emit(UnsafeRawBufferPointer(rebasing: $0[0..<rawCount])) }; return }
            let got = try compress(rawCount, codec: codec, symbols: nil, at: 0)
            try compressed.withUnsafeBytes { try emit(UnsafeRawBufferPointer(rebasing: $0[0..<got])) }
            return
        }
        // Bucket filters (FORMAT.md section 6): u32 size of the coded symbols, the n symbols
        // through the codec, then the extra bits as they are (close to uniform: the codec would
        // gain nothing, and mixing them into the symbols' zstd blocks costs ~2 %).
        let bitBytes = rawCount - n
        let coded = codec == .none ? n : try compress(n, codec: codec, symbols: matches, at: 4)
        let total = 4 + coded + bitBytes
        if compressed.count < total { compressed.append(contentsOf: repeatElement(0, count: total - compressed.count)) }
        compressed.withUnsafeMutableBytes { dst in
            dst.storeBytes(of: UInt32(coded).littleEndian, toByteOffset: 0, as: UInt32.self)
            filtered.withUnsafeBytes { src in
                // Safe because dst holds total bytes and src holds rawCount = n + bitBytes bytes.
                if codec == .none { dst.baseAddress!.advanced(by: 4).copyMemory(from: src.baseAddress!, byteCount: n) }
                dst.baseAddress!.advanced(by: 4 + coded).copyMemory(from: src.baseAddress! + n, byteCount: bitBytes)
            }
        }
        try compressed.withUnsafeBytes { try emit(UnsafeRawBufferPointer(rebasing: $0[0..<total])) }
    }

    /// Compresses the first `count` filtered bytes with `codec` (lz4 or zstd) into
    /// `compressed[offset...]`; returns the compressed size. `symbols` is nil for byte planes
    /// and raw values, else the match search for bucket symbols.
    private func compress(_ count: Int, codec: Codec, symbols: SymbolMatches?, at offset: Int) throws -> Int {
        switch codec {
        case .none:
            return count
        case .lz4:
            let bound = Int(LZ4_compressBound(Int32(count)))
            if compressed.count < offset + bound { compressed = [UInt8](repeating: 0, count: offset + bound) }
            let got = filtered.withUnsafeBytes { src in
                compressed.withUnsafeMutableBytes { dst in
                    LZ4_compress_default(src.baseAddress!.assumingMemoryBound(to: CChar.self),
                                         (dst.baseAddress! + offset).assumingMemoryBound(to: CChar.self),
                                         Int32(count), Int32(bound))
                }
            }
            guard got > 0 else { throw ShardFormatError.invalidInput("LZ4_compress_default failed on \(count) bytes") }
            return Int(got)
        case .zstd(let level):
            let bound = ZSTD_compressBound(count)
            if compressed.count < offset + bound { compressed = [UInt8](repeating: 0, count: offset + bound) }
            let got = filtered.withUnsafeBytes { src in
                compressed.withUnsafeMutableBytes { dst in
                    guard let symbols else {
                        return ZSTD_compressCCtx(cctx, dst.baseAddress! + offset, bound, src.baseAddress, count, level)
                    }
                    // Bucket symbols are short-range random: zstd's default minimum match (3-5
                    // bytes) finds matches that cost more than the literals' Huffman codes, so
                    // only matches of 7+ bytes are searched (a compressor setting; readers are
                    // unaffected). Measured on teacher-like rows: gaps 34.2 -> 31.2 bytes/token.
                    ZSTD_CCtx_reset(cctx, ZSTD_reset_session_and_parameters)
                    ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level)
                    ZSTD_CCtx_setParameter(cctx, ZSTD_c_minMatch, 7)
                    if symbols == .local {
                        ZSTD_CCtx_setParameter(cctx, ZSTD_c_strategy, Int32(ZSTD_fast.rawValue))
                        ZSTD_CCtx_setParameter(cctx, ZSTD_c_hashLog, 6)
                    }
                    return ZSTD_compress2(cctx, dst.baseAddress! + offset, bound, src.baseAddress, count)
                }
            }
            guard ZSTD_isError(got) == 0 else {
                throw ShardFormatError.invalidInput("ZSTD_compress failed: \(String(cString: ZSTD_getErrorName(got)))")
            }
            return got
        }
    }
}

/// values [n] -> planes [w][n]
@inline(__always) func splitPlanes(_ values: UnsafeBufferPointer<UInt32>, width w: Int, into out: UnsafeMutablePointer<UInt8>) {
    let n = values.count
    for p in 0..<w {
        let plane = out + p * n
        let s = UInt32(8 * p)
        for i in 0..<n { plane[i] = UInt8(truncatingIfNeeded: values[i] >> s) }
    }
}

/// planes [w][n] -> values [n]
@inline(__always) func joinPlanes(_ src: UnsafePointer<UInt8>, count n: Int, width w: Int, into v: UnsafeMutablePointer<UInt32>) {
    switch w {
    case 1:
        for i in 0..<n { v[i] = UInt32(src[i]) }
    case 2:
        let p1 = src + n
        for i in 0..<n { v[i] = UInt32(src[i]) | UInt32(p1[i]) << 8 }
    case 3:
        let p1 = src + n, p2 = src + 2 * n
        for i in 0..<n { v[i] = UInt32(src[i]) | UInt32(p1[i]) << 8 | UInt32(p2[i]) << 16 }
    default:
        let p1 = src + n, p2 = src + 2 * n, p3 = src + 3 * n
        for i in 0..<n { v[i] = UInt32(src[i]) | UInt32(p1[i]) << 8 | UInt32(p2[i]) << 16 | UInt32(p3[i]) << 24 }
    }
}

/// filtered bytes [n * w] -> values [n] (FORMAT.md section 6).
///
/// Kept out of line and non-throwing on purpose: when this copy was the last statement of the
/// throwing `ChunkDecoder.decode`, Swift 6.3.1 turned it into a tail call to `memmove` that
/// skipped restoring the error register, so a successful decode of a raw, width-4, compressed
/// chunk returned a phantom error and the caller crashed printing it (swiftlang/swift#90477,
/// fixed upstream in llvm/llvm-project#214590). Calling a Swift function keeps the guard that
/// forbids tail calls out of throwing functions.
@inline(never)
func unfilter(_ src: UnsafePointer<UInt8>, count n: Int, width w: Int, filter: ChunkFilter, into v: UnsafeMutablePointer<UInt32>) {
    if filter == .planes {
        joinPlanes(src, count: n, width: w, into: v)
    } else if w == 4 {
        // Safe because v has n values and src n*4 bytes; memcpy has no alignment need.
        UnsafeMutableRawPointer(v).copyMemory(from: src, byteCount: n * 4)
        #if _endian(big)
        for i in 0..<n { v[i] = UInt32(littleEndian: v[i]) }
        #endif
    } else {
        for i in 0..<n {
            var x: UInt32 = 0
            for b in 0..<w { x |= UInt32(src[i * w + b]) << (8 * b) }
            v[i] = x
        }
    }
}

/// Decompresses chunks; one per reading thread (holds a zstd context and scratch). Not
/// thread-safe: give each thread its own (``TargetBatch`` carries one).
final class ChunkDecoder {
    private let dctx: OpaquePointer
    private var scratch: UnsafeMutableRawPointer   // [capacity] filtered bytes
    private var capacity: Int

    init() {
        // Safe because ZSTD_createDCtx only fails on out-of-memory, where Swift traps anyway.
        dctx = ZSTD_createDCtx()!
        capacity = 1 << 16
        scratch = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 64)
    }
    deinit { ZSTD_freeDCtx(dctx); scratch.deallocate() }

    /// Decodes a chunk whose checksum and bounds were already checked into `out` (`count`
    /// values). `name` is used in errors.
    func decode(_ stored: UnsafeRawBufferPointer, _ d: ChunkDescriptor, file: String, chunk name: @autoclosure () -> String,
                into out: UnsafeMutablePointer<UInt32>) throws {
        let n = d.count, w = d.width, rawCount = n * w
        if n == 0 { return }
        if d.filter.isBuckets { return try decodeBuckets(stored, d, file: file, chunk: name(), into: out) }
        let src: UnsafeRawPointer
        switch d.codec {
        case .none:
            guard stored.count == rawCount else {
                throw ShardFormatError.malformed(file: file, chunk: name(), reason: "stored size \(stored.count) != count*width \(rawCount)")
            }
            // Safe because count > 0 implies a non-empty, bounds-checked slice of the mapping.
            src = stored.baseAddress!
        case .lz4:
            ensure(rawCount)
            let got = LZ4_decompress_safe(stored.baseAddress?.assumingMemoryBound(to: CChar.self),
                                          scratch.assumingMemoryBound(to: CChar.self),
                                          Int32(clamping: stored.count), Int32(clamping: rawCount))
            guard got == rawCount else {
                throw ShardFormatError.malformed(file: file, chunk: name(), reason: "LZ4_decompress_safe gave \(got) bytes, expected \(rawCount)")
            }
            src = UnsafeRawPointer(scratch)
        case .zstd:
            ensure(rawCount)
            let got = ZSTD_decompressDCtx(dctx, scratch, rawCount, stored.baseAddress, stored.count)
            guard ZSTD_isError(got) == 0, got == rawCount else {
                let why = ZSTD_isError(got) != 0 ? String(cString: ZSTD_getErrorName(got)) : "\(got) bytes"
                throw ShardFormatError.malformed(file: file, chunk: name(), reason: "ZSTD_decompressDCtx: \(why), expected \(rawCount) bytes")
            }
            src = UnsafeRawPointer(scratch)
        }
        unfilter(src.assumingMemoryBound(to: UInt8.self), count: n, width: w, filter: d.filter, into: out)
    }

    /// Bucket filters: stored bytes are u32 S, S coded symbol bytes, then the extra bits
    /// (FORMAT.md section 6). Symbols and bits land in scratch, followed by 8 zero bytes.
    private func decodeBuckets(_ stored: UnsafeRawBufferPointer, _ d: ChunkDescriptor, file: String, chunk name: String,
                               into out: UnsafeMutablePointer<UInt32>) throws {
        let n = d.count
        func bad(_ r: String) -> ShardFormatError { .malformed(file: file, chunk: name, reason: r) }
        // Safe because the guard makes the 4-byte load lie inside `stored`.
        guard stored.count >= 4, let base = stored.baseAddress else { throw bad("stored size \(stored.count) < 4: no symbol size") }
        let S = Int(base.loadUnaligned(as: UInt32.self).littleEndian)
        guard S <= stored.count - 4 else { throw bad("symbol section of \(S) bytes exceeds the chunk's \(stored.count - 4)") }
        let bitBytes = stored.count - 4 - S
        guard bitBytes <= Buckets.maxFilteredBytes(n) - n else { throw bad("\(bitBytes) extra-bit bytes exceed the \(Buckets.maxFilteredBytes(n) - n) that \(n) values can need") }
        ensure(n + bitBytes + 8)
        let symbols = base + 4
        switch d.codec {
        case .none:
            guard S == n else { throw bad("\(S) stored symbols, expected \(n)") }
            // Safe because scratch holds n + bitBytes + 8 bytes (ensured above).
            scratch.copyMemory(from: symbols, byteCount: n)
        case .lz4:
            let got = LZ4_decompress_safe(symbols.assumingMemoryBound(to: CChar.self), scratch.assumingMemoryBound(to: CChar.self),
                                          Int32(clamping: S), Int32(clamping: n))
            guard got == n else { throw bad("LZ4_decompress_safe gave \(got) symbols, expected \(n)") }
        case .zstd:
            let got = ZSTD_decompressDCtx(dctx, scratch, n, symbols, S)
            guard ZSTD_isError(got) == 0, got == n else {
                let why = ZSTD_isError(got) != 0 ? String(cString: ZSTD_getErrorName(got)) : "\(got) bytes"
                throw bad("ZSTD_decompressDCtx: \(why), expected \(n) symbols")
            }
        }
        // Safe because scratch holds n + bitBytes + 8 bytes and the bits lie inside `stored`.
        (scratch + n).copyMemory(from: symbols + S, byteCount: bitBytes)
        (scratch + n + bitBytes).initializeMemory(as: UInt8.self, repeating: 0, count: 8)
        if let why = Buckets.decode(scratch.assumingMemoryBound(to: UInt8.self), length: n + bitBytes, count: n, width: d.width,
                                    delta: d.filter == .deltaBuckets, into: out) {
            throw bad(why)
        }
    }

    private func ensure(_ n: Int) {
        if n > capacity {
            scratch.deallocate()
            capacity = max(n, capacity * 2)
            scratch = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 64)
        }
    }
}
