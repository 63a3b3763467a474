/// Errors of reading, writing and verifying a cache. Each case names the file and, where one
/// is involved, the chunk (`block B column NAME`) so a user can find the damage.
public enum ShardFormatError: Error, Equatable, CustomStringConvertible {
    /// A system call failed (`call` is the C function, `errno` its error number).
    case system(file: String, call: String, errno: Int32)
    /// The file's structure is not a valid cache file: bad magic, version, length, offset,
    /// count or JSON. `chunk` is nil for file-level problems.
    case malformed(file: String, chunk: String?, reason: String)
    /// Stored bytes do not match their checksum.
    case checksumMismatch(file: String, chunk: String, expected: UInt64, actual: UInt64)
    /// A manifest names a file outside the cache directory (absolute path, `..`, a link).
    case unsafePath(file: String, name: String, reason: String)
    /// Input handed to a writer or reader API is invalid (shape, order, range).
    case invalidInput(String)
    /// Two manifests or a manifest and a shard disagree.
    case mismatch(file: String, reason: String)
    /// Another writer holds the lock `file` (a partition or the merged manifest); `holder`
    /// names its pid and host.
    case locked(file: String, holder: String)

    public var description: String {
        switch self {
        case .system(let f, let call, let e): return "\(f): \(call) failed (errno \(e): \(errnoText(e)))"
        case .malformed(let f, let c, let r): return c.map { "\(f): \($0): \(r)" } ?? "\(f): \(r)"
        case .checksumMismatch(let f, let c, let e, let a):
            return "\(f): \(c): checksum mismatch (expected \(hex16(e)), found \(hex16(a)))"
        case .unsafePath(let f, let n, let r): return "\(f): refusing shard name \"\(n)\": \(r)"
        case .invalidInput(let m): return "invalid input: \(m)"
        case .mismatch(let f, let r): return "\(f): \(r)"
        case .locked(let f, let h): return "\(f): the cache is being written by \(h); refusing a second writer (wait for it to end; a writer that died releases the lock)"
        }
    }
}

/// A u64 as 16 lowercase hex digits (the JSON rendering of checksums).
@inlinable public func hex16(_ v: UInt64) -> String {
    let s = String(v, radix: 16)
    return String(repeating: "0", count: 16 - s.count) + s
}

/// Parses exactly 16 lowercase hex digits.
func parseHex16(_ s: String) -> UInt64? {
    guard s.utf8.count == 16, s.utf8.allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }) else { return nil }
    return UInt64(s, radix: 16)
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

func errnoText(_ e: Int32) -> String { String(cString: strerror(e)) }
