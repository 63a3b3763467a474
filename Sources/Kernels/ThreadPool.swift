import Dispatch

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Runs data-parallel loops over a fixed number of worker threads with deterministic,
/// static partitioning.
///
/// Every kernel in this module takes a `ThreadPool`. Work is split into at most
/// ``threadCount`` contiguous chunks, computed from the loop bounds alone, so the same inputs
/// always give the same split; kernels arrange that a chunk's results do not depend on the
/// split at all, which is why every kernel gives bit-identical results for any thread count.
/// No two chunks ever write the same output row.
///
/// A pool is cheap (it owns no threads of its own; chunks run on the system's dispatch
/// workers) and safe to share between kernels, but a loop body must not start another
/// parallel loop on the same pool.
///
/// API status: final.
public final class ThreadPool: @unchecked Sendable {
    /// Number of chunks a parallel loop is split into (>= 1).
    public let threadCount: Int

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

    /// Creates a pool that splits loops into `threadCount` chunks (default: one per core).
    /// Values below 1 are treated as 1.
    public init(threadCount: Int = ThreadPool.defaultThreadCount) {
        self.threadCount = max(1, threadCount)
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

    /// Calls `body` once per non-empty chunk of `0..<count`, in parallel, and returns when all
    /// chunks are done. Chunk boundaries are multiples of `granule` (except the last end), so
    /// kernels can keep register tiles whole.
    ///
    /// - Parameters:
    ///   - count: number of work items.
    ///   - granule: chunk sizes are multiples of this (default 1).
    ///   - body: receives a disjoint range of item indices.
    public func parallelFor(_ count: Int, granule: Int = 1, _ body: (Range<Int>) -> Void) {
        guard count > 0 else { return }
        let units = (count + max(1, granule) - 1) / max(1, granule)
        let parts = min(threadCount, units)
        if parts == 1 {
            body(0..<count)
            return
        }
        withoutActuallyEscaping(body) { body in
            DispatchQueue.concurrentPerform(iterations: parts) { chunk in
                let r = ThreadPool.chunkRange(chunk, of: parts, count: count, granule: granule)
                if !r.isEmpty { body(r) }
            }
        }
    }
}
