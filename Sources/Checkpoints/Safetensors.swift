/// The floating-point element types this project reads and writes. Safetensors files may
/// hold other types; they are parsed (so the file can be validated) but refused, by name,
/// when a tensor of that type is asked for.
public enum FloatDType: String, Sendable, CaseIterable {
    case float32 = "F32"
    case float16 = "F16"
    case bfloat16 = "BF16"

    /// Bytes per element.
    public var byteCount: Int { self == .float32 ? 4 : 2 }
}

/// One tensor's header entry: name, safetensors dtype name, shape, and where its bytes are.
public struct TensorInfo: Sendable, Equatable {
    public let name: String
    /// The dtype as the file spells it (`"F32"`, `"BF16"`, `"I64"`, …).
    public let dtypeName: String
    /// Row-major shape, outermost first (as PyTorch and NumPy).
    public let shape: [Int]
    /// Byte range of the tensor's data, absolute within the file.
    public let byteRange: Range<Int>

    /// The dtype when it is one this project computes with.
    public var dtype: FloatDType? { FloatDType(rawValue: dtypeName) }
    /// Number of elements (product of `shape`; 1 for a scalar).
    public var elementCount: Int { shape.reduce(1, *) }
}

/// A tensor's bytes inside a mapped safetensors file. Keeps the file mapped while it lives.
public struct TensorView: @unchecked Sendable {
    // Sendable because the bytes are a read-only mapping owned by `file`.
    public let file: SafetensorsFile
    public let info: TensorInfo
    public let dtype: FloatDType
    /// The raw little-endian elements; not necessarily aligned to the element size.
    public let bytes: UnsafeRawBufferPointer

    public var name: String { info.name }
    public var shape: [Int] { info.shape }
    public var elementCount: Int { info.elementCount }

    /// Widens every element to `Float` into `out` (count must be `elementCount`).
    public func widen(into out: UnsafeMutableBufferPointer<Float>) {
        precondition(out.count == elementCount, "widen: destination has \(out.count) floats, tensor \(elementCount)")
        FloatConversion.widen(bytes, dtype: dtype, into: out)
    }

    /// The elements widened to `Float`: a copy, meant for small tensors (norms, biases) and tests.
    public func floats() -> [Float] {
        [Float](unsafeUninitializedCapacity: elementCount) { buf, n in
            widen(into: buf)
            n = elementCount
        }
    }
}

/// A safetensors file, memory-mapped and validated.
///
/// Format: an 8-byte little-endian header length N, N bytes of UTF-8 JSON mapping tensor names
/// to `{"dtype", "shape", "data_offsets": [begin, end]}` (offsets relative to the data section)
/// plus an optional `"__metadata__"` string map, then the data section.
///
/// Opening checks, and refuses with a `CheckpointError` naming the file and tensor:
/// the header length against a 100 MB limit and the file size; the JSON; every entry's fields;
/// the dtype name; overflow-safe shape × element size equal to the byte range; and that the
/// ranges, sorted, cover the data section exactly with no gap and no overlap.
public final class SafetensorsFile: @unchecked Sendable {
    // Sendable because all state is immutable after init and the mapping is read-only.

    /// The largest header accepted, as in the reference implementation.
    public static let maxHeaderBytes = 100_000_000

    public let path: String
    /// Tensor entries by name.
    public let tensors: [String: TensorInfo]
    /// The `__metadata__` map (empty when absent).
    public let metadata: [String: String]
    /// Absolute offset of the data section.
    public let dataStart: Int
    let mapping: MappedFile

    /// Tensor names, sorted.
    public var names: [String] { tensors.keys.sorted() }

    /// Maps and validates the file at `path`.
    public init(path: String) throws(CheckpointError) {
        self.path = path
        mapping = try MappedFile(path: path)
        (tensors, metadata, dataStart) = try Self.parse(mapping.bytes, file: path)
    }

    /// The tensor `name` as a float view. Throws when it is absent or not F32/F16/BF16.
    public func tensor(_ name: String) throws(CheckpointError) -> TensorView {
        guard let info = tensors[name] else {
            throw .tensor(file: path, tensor: name, reason: "not in this file")
        }
        guard let dtype = info.dtype else {
            throw .tensor(file: path, tensor: name,
                          reason: "dtype \(info.dtypeName) is not supported (only F32, F16, BF16)")
        }
        // Safe because parse() proved byteRange lies inside the mapping.
        let bytes = UnsafeRawBufferPointer(rebasing: mapping.bytes[info.byteRange])
        return TensorView(file: self, info: info, dtype: dtype, bytes: bytes)
    }

    /// Element sizes of every dtype the safetensors format defines (whole-byte types).
    static let elementBytes: [String: Int] = [
        "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
        "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
        "I32": 4, "U32": 4, "F32": 4,
        "I64": 8, "U64": 8, "F64": 8, "C64": 8,
    ]

    /// Parses and validates a whole safetensors file held in `bytes`.
    static func parse(_ bytes: UnsafeRawBufferPointer, file: String) throws(CheckpointError)
        -> (tensors: [String: TensorInfo], metadata: [String: String], dataStart: Int)
    {
        guard bytes.count >= 8 else {
            throw .malformed(file: file, reason: "file is \(bytes.count) bytes; a safetensors file starts with an 8-byte header length")
        }
        let n = UInt64(littleEndian: bytes.loadUnaligned(as: UInt64.self))
        guard n <= UInt64(maxHeaderBytes) else {
            throw .malformed(file: file, reason: "header length \(n) exceeds the \(maxHeaderBytes)-byte limit")
        }
        let headerEnd = 8 + Int(n)
        guard headerEnd <= bytes.count else {
            throw .malformed(file: file, reason: "header length \(n) runs past the end of the \(bytes.count)-byte file (truncated?)")
        }
        let header = bytes[8..<headerEnd]
        guard header.first == UInt8(ascii: "{") else {
            throw .malformed(file: file, reason: "header does not start with '{'")
        }
        guard let json = JSONValue.parse(header), let members = json.object else {
            throw .malformed(file: file, reason: "header is not a valid JSON object")
        }
        var metadata: [String: String] = [:]
        var tensors: [String: TensorInfo] = [:]
        for (name, value) in members {
            if name == "__metadata__" {
                guard let m = value.object else {
                    throw .malformed(file: file, reason: "__metadata__ is not an object")
                }
                for (k, v) in m {
                    guard let s = v.string else {
                        throw .malformed(file: file, reason: "__metadata__ value for '\(k)' is not a string")
                    }
                    metadata[k] = s
                }
                continue
            }
            tensors[name] = try entry(name, value, file: file, headerEnd: headerEnd)
        }
        try checkCoverage(tensors.values, dataBytes: bytes.count - headerEnd, headerEnd: headerEnd, file: file)
        return (tensors, metadata, headerEnd)
    }

    private static func entry(_ name: String, _ value: JSONValue, file: String, headerEnd: Int)
        throws(CheckpointError) -> TensorInfo
    {
        func bad(_ reason: String) -> CheckpointError { .tensor(file: file, tensor: name, reason: reason) }
        guard let e = value.object else { throw bad("header entry is not an object") }
        guard let dtypeName = e["dtype"]?.string else { throw bad("missing or non-string 'dtype'") }
        guard let size = elementBytes[dtypeName] else { throw bad("unknown dtype '\(dtypeName)'") }
        guard case let .array(dims)? = e["shape"] else { throw bad("missing or non-array 'shape'") }
        var shape: [Int] = []
        var count = 1
        for d in dims {
            guard let v = d.int, v >= 0 else { throw bad("shape \(dims.map(\.serialized)) has a non-integer or negative dimension") }
            shape.append(v)
            let (p, overflow) = count.multipliedReportingOverflow(by: v)
            guard !overflow else { throw bad("shape \(shape) overflows the element count") }
            count = p
        }
        let (byteCount, overflow) = count.multipliedReportingOverflow(by: size)
        guard !overflow else { throw bad("shape \(shape) × \(size) bytes overflows") }
        guard case let .array(offsets)? = e["data_offsets"], offsets.count == 2,
              let begin = offsets[0].int, let end = offsets[1].int, begin >= 0, end >= begin
        else { throw bad("'data_offsets' must be two integers [begin, end] with 0 <= begin <= end") }
        guard end - begin == byteCount else {
            throw bad("data_offsets [\(begin), \(end)] hold \(end - begin) bytes but shape \(shape) of \(dtypeName) needs \(byteCount)")
        }
        let (absBegin, o1) = headerEnd.addingReportingOverflow(begin)
        let (absEnd, o2) = headerEnd.addingReportingOverflow(end)
        guard !o1, !o2 else { throw bad("data_offsets [\(begin), \(end)] overflow") }
        return TensorInfo(name: name, dtypeName: dtypeName, shape: shape, byteRange: absBegin..<absEnd)
    }

    /// Sorted by offset, the tensors must tile the data section exactly.
    private static func checkCoverage(_ infos: some Collection<TensorInfo>, dataBytes: Int, headerEnd: Int, file: String)
        throws(CheckpointError)
    {
        var expected = headerEnd
        var previous: String?
        for info in infos.sorted(by: { ($0.byteRange.lowerBound, $0.byteRange.upperBound, $0.name) < ($1.byteRange.lowerBound, $1.byteRange.upperBound, $1.name) }) {
            let begin = info.byteRange.lowerBound - headerEnd
            if info.byteRange.lowerBound < expected {
                throw .tensor(file: file, tensor: info.name,
                              reason: "data_offsets begin \(begin) overlaps tensor '\(previous ?? "")' (which ends at \(expected - headerEnd))")
            }
            if info.byteRange.lowerBound > expected {
                throw .tensor(file: file, tensor: info.name,
                              reason: "data_offsets begin \(begin) leaves a gap after offset \(expected - headerEnd)")
            }
            expected = info.byteRange.upperBound
            previous = info.name
        }
        let end = expected - headerEnd
        if end > dataBytes {
            throw .malformed(file: file, reason: "tensors need \(end) data bytes but the file has \(dataBytes) (truncated?)")
        }
        if end < dataBytes {
            throw .malformed(file: file, reason: "\(dataBytes - end) bytes after the last tensor are not covered by any tensor")
        }
    }
}
