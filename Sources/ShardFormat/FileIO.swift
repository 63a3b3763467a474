#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import CXXHash

/// A whole file mapped read-only; unmapped when the last reference goes. Several threads and
/// processes may map the same file: nothing is ever written through the mapping.
final class MappedShard: @unchecked Sendable {
    // Sendable because the mapping is read-only and never changes after init.
    let path: String
    let bytes: UnsafeRawBufferPointer

    init(path: String) throws {
        self.path = path
        // Non-blocking, so a FIFO in place of a file is refused below instead of waiting for a
        // writer forever (a socket fails open with ENXIO).
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { throw ShardFormatError.system(file: path, call: "open", errno: errno) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw ShardFormatError.system(file: path, call: "fstat", errno: errno) }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw ShardFormatError.malformed(file: path, chunk: nil, reason: "not a regular file") }
        let size = Int(st.st_size)
        if size == 0 { bytes = UnsafeRawBufferPointer(start: nil, count: 0); return }
        guard let base = mmap(nil, size, PROT_READ, MAP_SHARED, fd, 0), base != MAP_FAILED else {
            throw ShardFormatError.system(file: path, call: "mmap", errno: errno)
        }
        bytes = UnsafeRawBufferPointer(start: base, count: size)
    }
    deinit { if let b = bytes.baseAddress { munmap(UnsafeMutableRawPointer(mutating: b), bytes.count) } }
}

/// A file written through a buffer, fsynced and renamed into place on `publish`.
final class TempFile {
    let directory: String
    let finalName: String
    let tempPath: String
    private var fd: Int32
    private var buffer: [UInt8] = []
    private(set) var size = 0
    private let hashState: OpaquePointer   // XXH3 streaming state over every byte written

    /// Creates (truncating) `directory/.finalName.PID.tmp`: a name no other process uses, so
    /// a writer that ignores the cache lock still cannot write into this one's file.
    init(directory: String, finalName: String) throws {
        self.directory = directory; self.finalName = finalName
        tempPath = directory + "/." + finalName + ".\(getpid()).tmp"
        fd = open(tempPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw ShardFormatError.system(file: tempPath, call: "open", errno: errno) }
        buffer.reserveCapacity(1 << 20)
        // Safe because XXH3_createState only fails on out-of-memory, where Swift traps anyway.
        hashState = XXH3_createState()!
        XXH3_64bits_reset(hashState)
    }
    deinit { if fd >= 0 { close(fd); unlink(tempPath) }; XXH3_freeState(hashState) }

    /// XXH3-64 of every byte written so far.
    var checksum: UInt64 { XXH3_64bits_digest(hashState) }

    func write(_ bytes: UnsafeRawBufferPointer) throws {
        size += bytes.count
        XXH3_64bits_update(hashState, bytes.baseAddress, bytes.count)
        if buffer.count + bytes.count > 1 << 20 { try flush() }
        if bytes.count >= 1 << 20 { try writeAll(bytes); return }
        buffer.append(contentsOf: bytes)
    }
    func write(_ bytes: [UInt8]) throws { try bytes.withUnsafeBytes { try write($0) } }

    private func flush() throws {
        try buffer.withUnsafeBytes { try writeAll($0) }
        buffer.removeAll(keepingCapacity: true)
    }
    private func writeAll(_ b: UnsafeRawBufferPointer) throws {
        var done = 0
        while done < b.count {
            // Safe because done < b.count implies a non-nil base address.
            let n = sysWrite(fd, b.baseAddress! + done, b.count - done)
            if n < 0 { if errno == EINTR { continue }; throw ShardFormatError.system(file: tempPath, call: "write", errno: errno) }
            done += n
        }
    }

    /// Flushes, fsyncs, closes, renames to the final name and fsyncs the directory.
    func publish() throws {
        try flush()
        guard fsync(fd) == 0 else { throw ShardFormatError.system(file: tempPath, call: "fsync", errno: errno) }
        close(fd); fd = -1
        let finalPath = directory + "/" + finalName
        guard rename(tempPath, finalPath) == 0 else { throw ShardFormatError.system(file: finalPath, call: "rename", errno: errno) }
        try syncDirectory(directory)
    }
}

/// fsyncs a directory so a rename inside it is durable.
func syncDirectory(_ directory: String) throws {
    let d = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    guard d >= 0 else { throw ShardFormatError.system(file: directory, call: "open", errno: errno) }
    defer { close(d) }
    guard fsync(d) == 0 else { throw ShardFormatError.system(file: directory, call: "fsync", errno: errno) }
}

/// Writes `bytes` to `directory/name` atomically (temp, fsync, rename, fsync dir).
func publishFile(_ bytes: [UInt8], directory: String, name: String) throws {
    let t = try TempFile(directory: directory, finalName: name)
    try t.write(bytes)
    try t.publish()
}

/// Reads a whole (small) file.
func readWholeFile(_ path: String) throws -> [UInt8] {
    let m = try MappedShard(path: path)
    return Array(m.bytes)
}

/// Names in `directory` (not recursive), sorted.
func listDirectory(_ directory: String) throws -> [String] {
    guard let d = opendir(directory) else { throw ShardFormatError.system(file: directory, call: "opendir", errno: errno) }
    defer { closedir(d) }
    var names: [String] = []
    while let e = readdir(d) {
        let name = withUnsafePointer(to: e.pointee.d_name) { $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) } }
        if name != "." && name != ".." { names.append(name) }
    }
    return names.sorted()
}

/// Creates `directory` if missing (one level).
func makeDirectory(_ directory: String) throws {
    if mkdir(directory, 0o755) != 0 && errno != EEXIST {
        throw ShardFormatError.system(file: directory, call: "mkdir", errno: errno)
    }
}

/// Whether a path exists (following links).
func fileExists(_ path: String) -> Bool { access(path, F_OK) == 0 }

/// Resolves links and `..`; nil when the path does not exist.
func resolvedPath(_ path: String) -> String? {
    guard let r = realpath(path, nil) else { return nil }
    defer { free(r) }
    return String(cString: r)
}

@inline(__always) func sysWrite(_ fd: Int32, _ p: UnsafeRawPointer, _ n: Int) -> Int { write(fd, p, n) }
