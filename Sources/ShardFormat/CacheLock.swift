#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// An exclusive lock on one writer's part of a cache directory: a partition (its shards and
/// partition manifest) or the merged `manifest.json`.
///
/// The lock is a POSIX record lock (`fcntl(F_SETLK)`) on a lock file in the cache directory,
/// so the kernel releases it when the holder dies, however it dies. On NFS the same call is
/// served by the server's lock manager (NFSv4, or NFSv3 with lockd), which makes it hold across
/// the nodes of a cluster; a mount with `nolock` or `local_lock=all` keeps locks per node and
/// gives no such protection. The holder writes its pid and host name into the file, so a
/// refused writer can say who holds the lock. Record locks belong to a process, not to a file
/// descriptor, so this type also keeps a process-wide table: a second lock on the same file in
/// the same process is refused too.
public final class CacheLock {
    /// The lock file.
    public let path: String
    private var fd: Int32

    /// Takes the lock at `directory/name`, creating the file if needed; never waits.
    /// - Throws: ``ShardFormatError/locked(file:holder:)`` naming the holder when another
    ///   process (or another writer in this process) has it; `system` errors naming the call.
    public init(directory: String, name: String) throws {
        path = directory + "/" + name
        let key = resolvedPath(directory).map { $0 + "/" + name } ?? path
        guard CacheLock.claim(key) else { throw ShardFormatError.locked(file: path, holder: "another writer in this process (pid \(getpid()))") }
        let f = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o644)
        guard f >= 0 else {
            let e = errno
            CacheLock.unclaim(key)
            throw ShardFormatError.system(file: path, call: "open", errno: e)
        }
        var fl = flock()
        fl.l_type = Int16(F_WRLCK)
        fl.l_whence = Int16(SEEK_SET)
        if fcntl(f, F_SETLK, &fl) != 0 {
            let e = errno
            let holder = CacheLock.holder(fd: f)
            close(f)
            CacheLock.unclaim(key)
            if e == EAGAIN || e == EACCES { throw ShardFormatError.locked(file: path, holder: holder) }
            throw ShardFormatError.system(file: path, call: "fcntl(F_SETLK)", errno: e)
        }
        fd = f
        self.key = key
        let me = "pid \(getpid()) on \(CacheLock.hostName())\n"
        // The holder's note is informative: a failed write leaves the lock itself intact.
        _ = ftruncate(f, 0)
        _ = me.withCString { pwrite(f, $0, strlen($0), 0) }
    }

    private let key: String

    /// Lock file of partition `p`'s writer.
    public static func partitionFileName(_ p: Int) -> String { ".lock.part-\(pad(p, 5))" }
    /// Lock file of `manifest.json`'s writer (merge).
    public static let manifestFileName = ".lock.manifest"

    deinit { release() }

    /// Releases the lock (also done when the object goes away or the process ends).
    public func release() {
        guard fd >= 0 else { return }
        close(fd)   // drops the record lock
        fd = -1
        CacheLock.unclaim(key)
    }

    // MARK: - Process-wide table of held locks

    private static var held = Set<String>()
    private static var mutex = pthread_mutex_t()
    private static let setup: Void = { pthread_mutex_init(&mutex, nil) }()

    private static func claim(_ key: String) -> Bool {
        _ = setup
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return held.insert(key).inserted
    }

    private static func unclaim(_ key: String) {
        pthread_mutex_lock(&mutex)
        held.remove(key)
        pthread_mutex_unlock(&mutex)
    }

    /// Whether this process holds the lock at `directory/name` through a ``CacheLock``.
    static func heldHere(directory: String, name: String) -> Bool {
        let key = resolvedPath(directory).map { $0 + "/" + name } ?? directory + "/" + name
        _ = setup
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return held.contains(key)
    }

    /// Who holds a lock: the kernel's pid, and the pid and host the holder wrote.
    private static func holder(fd: Int32) -> String {
        var fl = flock()
        fl.l_type = Int16(F_WRLCK)
        fl.l_whence = Int16(SEEK_SET)
        let pid = fcntl(fd, F_GETLK, &fl) == 0 && fl.l_type != Int16(F_UNLCK) ? "pid \(fl.l_pid)" : "another process"
        var buf = [UInt8](repeating: 0, count: 256)
        let n = pread(fd, &buf, 255, 0)
        let written = n > 0 ? String(decoding: buf[0..<n], as: UTF8.self).trimmingCharacters(in: [" ", "\n"]) : ""
        return written.isEmpty ? pid : "\(written) (kernel: \(pid))"
    }

    private static func hostName() -> String {
        var buf = [CChar](repeating: 0, count: 256)
        return gethostname(&buf, 255) == 0 ? String(cString: buf) : "unknown host"
    }
}

private extension String {
    func trimmingCharacters(in set: Set<Character>) -> String {
        var s = Substring(self)
        while let c = s.first, set.contains(c) { s = s.dropFirst() }
        while let c = s.last, set.contains(c) { s = s.dropLast() }
        return String(s)
    }
}
