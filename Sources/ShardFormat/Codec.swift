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
}

/// Smallest byte width holding `maxValue` (at least 1).
@inline(__always) func byteWidth(_ maxValue: UInt32) -> Int {
    maxValue < 1 << 8 ? 1 : maxValue < 1 << 16 ? 2 : maxValue < 1 << 24 ? 3 : 4
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
    func encode(_ values: UnsafeBufferPointer<UInt32>, codec: Codec, float: Bool,
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
        let filter: ChunkFilter = codec == .none ? .raw : .planes
        try encode(values, filter: filter, width: w, codec: codec, emit: emit)
        return (filter, w, codec)
    }

    /// Encodes `values` with the given filter, width and codec (any combination FORMAT.md
    /// section 6 allows; `width` must hold every value) and hands the stored bytes to `emit`.
    func encode(_ values: UnsafeBufferPointer<UInt32>, filter: ChunkFilter, width w: Int, codec: Codec,
                emit: (UnsafeRawBufferPointer) throws -> Void) throws {
        let n = values.count
        let rawCount = n * w
        if filtered.count < rawCount { filtered = [UInt8](repeating: 0, count: rawCount) }
        filtered.withUnsafeMutableBufferPointer { f in
            // f: [w planes][n] bytes (or raw little-endian values)
            if filter == .raw {
                for i in 0..<n { let v = values[i]; for b in 0..<w { f[i * w + b] = UInt8(truncatingIfNeeded: v >> (8 * b)) } }
            } else if n > 0 {
                // Safe because f holds at least n * w > 0 bytes.
                splitPlanes(values, width: w, into: f.baseAddress!)
            }
        }
        switch codec {
        case .none:
            try filtered.withUnsafeBytes { try emit(UnsafeRawBufferPointer(rebasing: $0[0..<rawCount])) }
        case .lz4:
            let bound = Int(LZ4_compressBound(Int32(rawCount)))
            if compressed.count < bound { compressed = [UInt8](repeating: 0, count: bound) }
            let got = filtered.withUnsafeBytes { src in
                compressed.withUnsafeMutableBytes { dst in
                    LZ4_compress_default(src.baseAddress!.assumingMemoryBound(to: CChar.self),
                                         dst.baseAddress!.assumingMemoryBound(to: CChar.self),
                                         Int32(rawCount), Int32(bound))
                }
            }
            guard got > 0 else { throw ShardFormatError.invalidInput("LZ4_compress_default failed on \(rawCount) bytes") }
            try compressed.withUnsafeBytes { try emit(UnsafeRawBufferPointer(rebasing: $0[0..<Int(got)])) }
        case .zstd(let level):
            let bound = ZSTD_compressBound(rawCount)
            if compressed.count < bound { compressed = [UInt8](repeating: 0, count: bound) }
            let got = filtered.withUnsafeBytes { src in
                compressed.withUnsafeMutableBytes { dst in
                    ZSTD_compressCCtx(cctx, dst.baseAddress, bound, src.baseAddress, rawCount, level)
                }
            }
            guard ZSTD_isError(got) == 0 else {
                throw ShardFormatError.invalidInput("ZSTD_compressCCtx failed: \(String(cString: ZSTD_getErrorName(got)))")
            }
            try compressed.withUnsafeBytes { try emit(UnsafeRawBufferPointer(rebasing: $0[0..<got])) }
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

    private func ensure(_ n: Int) {
        if n > capacity {
            scratch.deallocate()
            capacity = max(n, capacity * 2)
            scratch = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 64)
        }
    }
}
