import Dispatch

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Runs data-parallel loops over a fixed number of worker threads with deterministic
/// partitioning.
///
/// Every kernel in this module takes a `ThreadPool`. Work is split into at most
/// ``chunkCount`` contiguous chunks (``threadCount`` × ``chunksPerThread``), computed from the
/// loop bounds alone, so the same inputs always give the same split; kernels arrange that a
/// chunk's results do not depend on the split at all, which is why every kernel gives
/// bit-identical results for any thread count and any chunks per thread. No two chunks ever
/// write the same output row.
///
/// With one chunk per thread each thread takes one chunk. With more, the threads claim chunks
/// one at a time from a shared counter: a thread the operating system preempts (for another
/// thread of the process, such as a teacher pass's writer) holds up only the chunk it is on,
/// while the others take the rest, instead of the whole loop waiting for its fixed share.
/// Which thread computes a chunk then varies from run to run; what the chunk computes does not.
///
/// A pool is cheap (it owns no threads of its own) and safe to share between kernels. Loops run
/// on the process's persistent worker crew (`WorkerCrew`: spinning helpers, started as loops
/// ask for them, at most one per extra core) when it is free, else on the system's dispatch workers; a loop body must not start another
/// parallel loop on the same pool.
///
/// API status: final.
public final class ThreadPool: @unchecked Sendable {
    /// Number of threads a parallel loop runs on at most (>= 1).
    public let threadCount: Int
    /// Chunks per thread a parallel loop is cut into (>= 1); above 1 threads claim chunks
    /// dynamically.
    public let chunksPerThread: Int
    /// Most chunks a parallel loop is cut into: ``threadCount`` × ``chunksPerThread``.
    public var chunkCount: Int { threadCount * chunksPerThread }

    /// The number of online CPU cores (>= 1).
    public static var defaultThreadCount: Int {
        #if canImport(Glibc) || canImport(Darwin)
        let n = sysconf(Int32(_SC_NPROCESSORS_ONLN))
        return n > 0 ? n : 1
        #else
        return 1
        #endif
    }

    /// A single-threaded pool: every loop runs inline on the caller's thread.
    public static let serial = ThreadPool(threadCount: 1)

    /// Creates a pool that runs loops on `threadCount` threads (default: one per core), each
    /// loop cut into up to `threadCount` × `chunksPerThread` chunks. Values below 1 are
    /// treated as 1.
    public init(threadCount: Int = ThreadPool.defaultThreadCount, chunksPerThread: Int = 1) {
        self.threadCount = max(1, threadCount)
        self.chunksPerThread = max(1, chunksPerThread)
    }

    /// The half-open range chunk `chunk` of `parts` covers in `0..<count`: contiguous,
    /// ascending, sizes differing by at most one `granule`, every index covered exactly once.
    @inlinable
    public static func chunkRange(_ chunk: Int, of parts: Int, count: Int, granule: Int = 1) -> Range<Int> {
        let g = max(1, granule)
        let units = (count + g - 1) / g
        let lo = units * chunk / parts, hi = units * (chunk + 1) / parts
        return min(count, lo * g)..<min(count, hi * g)
    }

    /// Calls `body` once per non-empty chunk of `0..<count`, in parallel on at most
    /// ``threadCount`` threads, and returns when all chunks are done. Chunk boundaries are
    /// multiples of `granule` (except the last end), so kernels can keep register tiles whole.
    /// On a single-thread pool `body` runs once, inline, over the whole range.
    ///
    /// - Parameters:
    ///   - count: number of work items.
    ///   - granule: chunk sizes are multiples of this (default 1).
    ///   - body: receives a disjoint range of item indices.
    public func parallelFor(_ count: Int, granule: Int = 1, _ body: (Range<Int>) -> Void) {
        guard count > 0 else { return }
        let units = (count + max(1, granule) - 1) / max(1, granule)
        let parts = min(chunkCount, units)
        if parts == 1 || threadCount == 1 {
            body(0..<count)
            return
        }
        let workers = min(threadCount, parts)
        if WorkerCrew.shared.run(parts: parts, count: count, granule: granule, threads: workers, body) { return }
        withoutActuallyEscaping(body) { body in
            if workers == parts {
                DispatchQueue.concurrentPerform(iterations: parts) { chunk in
                    let r = ThreadPool.chunkRange(chunk, of: parts, count: count, granule: granule)
                    if !r.isEmpty { body(r) }
                }
                return
            }
            let claims = ChunkClaims(count: parts)
            DispatchQueue.concurrentPerform(iterations: workers) { _ in
                while let chunk = claims.next() {
                    let r = ThreadPool.chunkRange(chunk, of: parts, count: count, granule: granule)
                    if !r.isEmpty { body(r) }
                }
            }
        }
    }
}

/// Hands out the chunk indices 0..<count once each, in ascending order, to whichever thread
/// asks next (a mutex-guarded counter: a handful of claims per loop, never contended for long).
final class ChunkClaims: @unchecked Sendable {
    private let count: Int
    private var issued = 0
    private let lock = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)

    init(count: Int) {
        self.count = count
        // Safe because the mutex is initialised once here and destroyed once in deinit.
        pthread_mutex_init(lock, nil)
    }

    deinit {
        pthread_mutex_destroy(lock)
        lock.deallocate()
    }

    /// The next unclaimed chunk, or nil when all are claimed.
    func next() -> Int? {
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        guard issued < count else { return nil }
        issued += 1
        return issued - 1
    }
}
