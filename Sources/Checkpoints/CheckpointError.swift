/// Why a checkpoint (safetensors file, sharded index or `config.json`) could not be read or
/// written. Every case names the file; tensor problems also name the tensor.
public enum CheckpointError: Error, CustomStringConvertible, Equatable {
    /// A system call failed: `call` is the C function, `errno` its error number.
    case system(file: String, call: String, errno: Int32)
    /// The file's structure is wrong (header size, JSON, offsets, coverage of the data).
    case malformed(file: String, reason: String)
    /// One tensor is wrong or unusable (dtype, shape, byte range, missing).
    case tensor(file: String, tensor: String, reason: String)
    /// `config.json` is missing a field, has a wrong type, or asks for something unsupported.
    case config(file: String, reason: String)

    public var description: String {
        switch self {
        case let .system(file, call, code):
            return "\(file): \(call) failed: \(String(cString: strerror(code))) (errno \(code))"
        case let .malformed(file, reason):
            return "\(file): \(reason)"
        case let .tensor(file, tensor, reason):
            return "\(file): tensor '\(tensor)': \(reason)"
        case let .config(file, reason):
            return "\(file): \(reason)"
        }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
