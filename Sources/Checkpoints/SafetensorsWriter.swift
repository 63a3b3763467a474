#if canImport(Glibc)
import Glibc
private let systemWrite = Glibc.write
#elseif canImport(Musl)
import Musl
private let systemWrite = Musl.write
#elseif canImport(Darwin)
import Darwin
private let systemWrite = Darwin.write
#endif

/// Writes safetensors files that transformers' `from_pretrained` and `safetensors.safe_open`
/// read: header padded with spaces to a multiple of 8 bytes so every tensor starts 8-aligned,
/// tensors stored in the order given, contiguous.
///
/// The write is atomic: a temporary file in the same directory is written, fsynced and renamed
/// over `path`, then the directory is fsynced, so a killed writer never leaves a partial file.
public enum SafetensorsWriter {
    /// One tensor to write: float values converted to `dtype` (round to nearest even).
    public struct Entry: Sendable {
        public var name: String
        public var dtype: FloatDType
        /// Row-major shape, outermost first.
        public var shape: [Int]
        /// `shape.reduce(1, *)` values, row-major.
        public var values: [Float]

        public init(name: String, dtype: FloatDType = .float32, shape: [Int], values: [Float]) {
            self.name = name
            self.dtype = dtype
            self.shape = shape
            self.values = values
        }
    }

    /// Writes `tensors` (and `metadata` as `__metadata__`) to `path`.
    /// Throws `.tensor` for a name used twice or values not matching the shape, `.system` for I/O.
    public static func write(_ tensors: [Entry], metadata: [String: String] = [:], to path: String) throws(CheckpointError) {
        var header: [String: JSONValue] = [:]
        if !metadata.isEmpty { header["__metadata__"] = .object(metadata.mapValues { .string($0) }) }
        var offset = 0
        for t in tensors {
            guard t.name != "__metadata__", header[t.name] == nil else {
                throw .tensor(file: path, tensor: t.name, reason: "name used twice (or reserved)")
            }
            guard t.shape.allSatisfy({ $0 >= 0 }), t.shape.reduce(1, *) == t.values.count else {
                throw .tensor(file: path, tensor: t.name, reason: "\(t.values.count) values do not fill shape \(t.shape)")
            }
            let size = t.values.count * t.dtype.byteCount
            header[t.name] = .object([
                "dtype": .string(t.dtype.rawValue),
                "shape": .array(t.shape.map { .integer(Int64($0)) }),
                "data_offsets": .array([.integer(Int64(offset)), .integer(Int64(offset + size))]),
            ])
            offset += size
        }
        var json = Array(JSONValue.object(header).serialized.utf8)
        while (8 + json.count) % 8 != 0 { json.append(UInt8(ascii: " ")) }

        var length = UInt64(json.count).littleEndian
        try writeAtomically(to: path) { fd in
            var failure = withUnsafeBytes(of: &length) { writeAll(fd, $0) }
            if failure == 0 { failure = json.withUnsafeBytes { writeAll(fd, $0) } }
            for t in tensors where failure == 0 {
                failure = writeValues(fd, t)
            }
            return failure
        }
    }

    /// Creates `path` atomically: `body` writes a temporary file in the same directory (returning
    /// 0 or a `write` errno), which is fsynced and renamed over `path`; then the directory is fsynced.
    static func writeAtomically(to path: String, _ body: (Int32) -> Int32) throws(CheckpointError) {
        let temporary = path + ".tmp-\(getpid())"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw .system(file: temporary, call: "open", errno: errno) }
        var ok = false
        defer {
            close(fd)
            if !ok { unlink(temporary) }
        }
        let failure = body(fd)
        guard failure == 0 else { throw .system(file: temporary, call: "write", errno: failure) }
        guard fsync(fd) == 0 else { throw .system(file: temporary, call: "fsync", errno: errno) }
        guard rename(temporary, path) == 0 else { throw .system(file: path, call: "rename", errno: errno) }
        ok = true
        syncDirectory(of: path)
    }

    /// Returns 0 or the errno of the failed `write`.
    private static func writeValues(_ fd: Int32, _ t: Entry) -> Int32 {
        switch t.dtype {
        case .float32:
            return t.values.withUnsafeBytes { writeAll(fd, $0) }
        case .bfloat16, .float16:
            // Convert in chunks so a large tensor needs no second full-size buffer.
            let chunk = 1 << 16
            var bits = [UInt16](repeating: 0, count: chunk)
            var start = 0
            while start < t.values.count {
                let n = min(chunk, t.values.count - start)
                for i in 0..<n {
                    let x = t.values[start + i]
                    bits[i] = (t.dtype == .bfloat16 ? FloatConversion.bfloat16(x) : FloatConversion.float16(x)).littleEndian
                }
                let failure = bits.withUnsafeBytes { writeAll(fd, UnsafeRawBufferPointer(rebasing: $0[0..<(2 * n)])) }
                if failure != 0 { return failure }
                start += n
            }
            return 0
        }
    }

    /// Writes the whole buffer, retrying short writes; returns 0 or the errno of `write`.
    static func writeAll(_ fd: Int32, _ buffer: UnsafeRawBufferPointer) -> Int32 {
        var done = 0
        while done < buffer.count, let base = buffer.baseAddress {
            // Safe because done < buffer.count, so the pointer and length stay inside buffer.
            let n = systemWrite(fd, base + done, buffer.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                return errno
            }
            done += n
        }
        return 0
    }

    /// Makes the rename durable; a failure here loses nothing already written, so it is ignored.
    private static func syncDirectory(of path: String) {
        var directory = "."
        if let slash = path.lastIndex(of: "/") { directory = String(path[..<slash]) }
        let fd = open(directory.isEmpty ? "/" : directory, O_RDONLY)
        if fd >= 0 {
            fsync(fd)
            close(fd)
        }
    }
}
