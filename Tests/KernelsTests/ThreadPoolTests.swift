import Foundation
import Testing
@testable import Kernels

/// The pool's split: every index once, in the chunks `chunkRange` names, never more threads
/// than asked for; with several chunks per thread a stalled thread holds up only its chunk.
@Suite struct ThreadPoolTests {
    /// Ranges one parallel loop handed to `body`, and the most bodies running at once.
    final class Record: @unchecked Sendable {
        let lock = NSLock()
        var ranges: [Range<Int>] = []
        var running = 0, mostRunning = 0
        func enter(_ r: Range<Int>) { lock.withLock { ranges.append(r); running += 1; mostRunning = max(mostRunning, running) } }
        func leave() { lock.withLock { running -= 1 } }
    }

    @Test func chunksCoverEveryIndexOnceOnAtMostThreadCountThreads() {
        for (threads, perThread) in [(1, 1), (1, 4), (2, 1), (2, 4), (3, 5)] {
            let pool = ThreadPool(threadCount: threads, chunksPerThread: perThread)
            #expect(pool.chunkCount == threads * perThread)
            for (count, granule) in [(1, 1), (7, 1), (100, 6), (1000, 16), (5, 8)] {
                let record = Record()
                pool.parallelFor(count, granule: granule) { r in
                    record.enter(r)
                    usleep(200)  // long enough for the threads to overlap
                    record.leave()
                }
                let ranges = record.ranges.sorted { $0.lowerBound < $1.lowerBound }
                let label = "threads \(threads) × \(perThread), count \(count), granule \(granule)"
                #expect(ranges.flatMap { Array($0) } == Array(0..<count), "\(label): \(ranges)")
                #expect(record.mostRunning <= threads, "\(label)")
                let parts = min(pool.chunkCount, (count + granule - 1) / granule)
                let expected = threads == 1 ? [0..<count]
                    : (0..<parts).map { ThreadPool.chunkRange($0, of: parts, count: count, granule: granule) }.filter { !$0.isEmpty }
                #expect(ranges == expected, "\(label)")
            }
        }
    }

    @Test func aStalledChunkLeavesTheRestToTheOtherThread() {
        // Chunk 0 waits until every other chunk is done: only another thread claiming them
        // one by one can finish them (a fixed half per thread would leave half undone).
        let pool = ThreadPool(threadCount: 2, chunksPerThread: 4)
        let done = NSCondition()
        var finished = 0, chunk0SawAllOthers = false
        pool.parallelFor(8) { r in
            if r.lowerBound == 0 {
                done.lock()
                let deadline = Date().addingTimeInterval(20)
                while finished < 7 && done.wait(until: deadline) {}
                chunk0SawAllOthers = finished == 7
                done.unlock()
            } else {
                done.lock(); finished += 1; done.broadcast(); done.unlock()
            }
        }
        #expect(chunk0SawAllOthers)
    }
}
