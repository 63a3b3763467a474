// The C ABI of `Schemas/logitcache.h`: status codes, the per-thread last error, strings and
// handles. Every exported function catches every Swift error and returns a status, so a bad
// cache or argument never aborts the host process.

import Foundation
import ShardFormat
import StudentLoader

/// `lc_status` values (keep in step with `Schemas/logitcache.h`).
enum Status: Int32 {
    case ok = 0
    case invalidArgument = 1
    case io = 2
    case malformed = 3
    case checksum = 4
    case mismatch = 5
    case unsupported = 6
    case state = 7
    case unsafePath = 8
    case locked = 9
}

/// A failure carried to the C caller: its status and message.
struct ABIError: Error {
    var status: Status
    var message: String
}

extension Status {
    /// The status of an error thrown by the Swift layers.
    init(of error: Error) {
        switch error {
        case let e as ABIError: self = e.status
        case let e as ShardFormatError: self = Status(format: e)
        case let e as LoaderError:
            switch e {
            case .invalidConfiguration: self = .invalidArgument
            case .tokenizerMismatch, .vocabularyMismatch: self = .mismatch
            case .unsupported: self = .unsupported
            case .stateMismatch: self = .state
            case .cache(let f): self = Status(format: f)
            }
        default: self = .invalidArgument
        }
    }

    init(format e: ShardFormatError) {
        switch e {
        case .system: self = .io
        case .malformed: self = .malformed
        case .checksumMismatch: self = .checksum
        case .unsafePath: self = .unsafePath
        case .invalidInput: self = .invalidArgument
        case .mismatch: self = .mismatch
        case .locked: self = .locked
        }
    }
}

// MARK: - Last error, one per thread

/// Key of the calling thread's last error message (a malloc'ed C string, freed on replacement
/// and when the thread exits).
private let errorKey: pthread_key_t = {
    var key = pthread_key_t()
    pthread_key_create(&key) { p in free(p) }
    return key
}()

private func setLastError(_ message: String) {
    free(pthread_getspecific(errorKey))
    pthread_setspecific(errorKey, strdup(message))
}

/// Runs `body`, turning a thrown error into its status and the thread's last error.
func guarded(_ body: () throws -> Void) -> Int32 {
    do {
        try body()
        return Status.ok.rawValue
    } catch let e as ABIError {
        setLastError(e.message)
        return e.status.rawValue
    } catch let e as DecodingError {
        setLastError("bad JSON: \(describe(e))")
        return Status.invalidArgument.rawValue
    } catch {
        setLastError("\(error)")
        return Status(of: error).rawValue
    }
}

/// A decoding error as one line naming the key path.
private func describe(_ e: DecodingError) -> String {
    func path(_ c: DecodingError.Context) -> String {
        let p = c.codingPath.map { $0.intValue.map(String.init) ?? $0.stringValue }.joined(separator: ".")
        return (p.isEmpty ? "" : "\(p): ") + c.debugDescription
    }
    switch e {
    case .typeMismatch(_, let c), .valueNotFound(_, let c), .dataCorrupted(let c): return path(c)
    case .keyNotFound(let k, let c): return path(c) + " (missing key \"\(k.stringValue)\")"
    @unknown default: return "\(e)"
    }
}

@_cdecl("lc_last_error")
public func lc_last_error() -> UnsafePointer<CChar> {
    if let p = pthread_getspecific(errorKey) { return UnsafePointer(p.assumingMemoryBound(to: CChar.self)) }
    return emptyString
}

/// The "" returned when no error happened yet (static storage, never freed).
private let emptyString: UnsafePointer<CChar> = {
    let p = UnsafeMutablePointer<CChar>.allocate(capacity: 1)
    p.pointee = 0
    return UnsafePointer(p)
}()

@_cdecl("lc_abi_version")
public func lc_abi_version() -> UInt32 { 1 }

@_cdecl("lc_string_free")
public func lc_string_free(_ s: UnsafeMutablePointer<CChar>?) { free(s) }

// MARK: - Arguments

/// A required C string argument.
func string(_ p: UnsafePointer<CChar>?, _ name: String) throws -> String {
    guard let p else { throw ABIError(status: .invalidArgument, message: "\(name) is NULL") }
    return String(cString: p)
}

/// A required pointer argument.
func required<T>(_ p: T?, _ name: String) throws -> T {
    guard let p else { throw ABIError(status: .invalidArgument, message: "\(name) is NULL") }
    return p
}

/// Hands `s` to the caller as a malloc'ed C string (released with `lc_string_free`).
func give(_ s: String, to out: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) {
    out?.pointee = strdup(s)
}

/// JSON text of an `Encodable` value with sorted keys.
func json<T: Encodable>(_ value: T) throws -> String {
    let enc = JSONEncoder()
    enc.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return String(decoding: try enc.encode(value), as: UTF8.self)
}

/// Decodes a JSON C string argument.
func decodeJSON<T: Decodable>(_ type: T.Type, _ p: UnsafePointer<CChar>?, _ name: String) throws -> T {
    let text = try string(p, name)
    do { return try JSONDecoder().decode(T.self, from: Data(text.utf8)) } catch let e as DecodingError {
        throw ABIError(status: .invalidArgument, message: "\(name): bad JSON: \(describe(e))")
    }
}

// MARK: - Handles

/// An object owned by a C handle: retained on `open`, released on `close`.
func handle(_ object: AnyObject) -> OpaquePointer {
    OpaquePointer(Unmanaged.passRetained(object).toOpaque())
}

/// The object behind a handle, or an error for NULL.
func object<T: AnyObject>(_ h: OpaquePointer?, as: T.Type, _ name: String) throws -> T {
    guard let h else { throw ABIError(status: .invalidArgument, message: "\(name) is NULL") }
    // Safe because handles are only made by `handle(_:)` from a T of this kind of function.
    return Unmanaged<T>.fromOpaque(UnsafeRawPointer(h)).takeUnretainedValue()
}

/// Releases the object behind a handle made by `handle(_:)` (NULL is ignored).
func release(_ h: OpaquePointer?) {
    guard let h else { return }
    Unmanaged<AnyObject>.fromOpaque(UnsafeRawPointer(h)).release()
}

/// The i-th 8-byte slot of a C struct made only of pointers and 64-bit integers (the ABI's
/// `lc_rows`, `lc_batch`, `lc_cache_info`, `lc_sequence_info`): their layout is fixed by C.
@inline(__always)
func slot(_ p: UnsafeRawPointer, _ i: Int) -> UnsafeRawPointer { p + 8 * i }

/// The pointer stored in slot i, typed (nil when the caller passed NULL).
@inline(__always)
func pointerField<T>(_ p: UnsafeRawPointer, _ i: Int, _: T.Type) -> UnsafeMutablePointer<T>? {
    slot(p, i).load(as: UnsafeMutablePointer<T>?.self)
}
