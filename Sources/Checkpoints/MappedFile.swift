#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A whole file mapped read-only into memory; unmapped when the last reference goes.
///
/// Tensors are read straight from the mapping, so a checkpoint costs no heap copy: pages are
/// read from disk (or the page cache) when first touched.
public final class MappedFile: @unchecked Sendable {
    // Sendable because the mapping is read-only and never changes after init.
    public let path: String
    /// The mapped bytes; valid as long as this object lives.
    public let bytes: UnsafeRawBufferPointer

    /// Maps the file at `path`. Throws `CheckpointError.system` naming the failing call.
    public init(path: String) throws(CheckpointError) {
        self.path = path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw .system(file: path, call: "open", errno: errno) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw .system(file: path, call: "fstat", errno: errno) }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            throw .malformed(file: path, reason: "not a regular file")
        }
        let size = Int(st.st_size)
        if size == 0 {
            // mmap refuses zero lengths; an empty file is still a valid (if useless) input.
            bytes = UnsafeRawBufferPointer(start: nil, count: 0)
            return
        }
        guard let base = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), base != MAP_FAILED else {
            throw .system(file: path, call: "mmap", errno: errno)
        }
        bytes = UnsafeRawBufferPointer(start: base, count: size)
    }

    deinit {
        if let base = bytes.baseAddress { munmap(UnsafeMutableRawPointer(mutating: base), bytes.count) }
    }
}
