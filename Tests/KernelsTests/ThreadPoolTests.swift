import Foundation
import Synchronization
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

    /// Adds one to `hits[i]` for every index a loop hands out; each index must end at `loops`.
    final class Hits: @unchecked Sendable {
        let counts: UnsafeMutablePointer<Int>
        let n: Int
        init(_ n: Int) { self.n = n; counts = .allocate(capacity: n); counts.initialize(repeating: 0, count: n) }
        deinit { counts.deallocate() }
        // Safe because chunks of one loop are disjoint and loops are sequential per caller.
        func add(_ r: Range<Int>) { for i in r { counts[i] += 1 } }
        var all: [Int] { Array(UnsafeBufferPointer(start: counts, count: n)) }
    }

    @Test func thousandsOfBackToBackLoopsEachRunEveryIndexOnce() {
        // Short loops one after another are what the spinning crew is for; a chunk claimed
        // twice, or one of the previous loop run again, shows up as a count other than `loops`.
        let loops = 20_000
        for (threads, perThread) in [(2, 1), (2, 4), (8, 2)] {
            let pool = ThreadPool(threadCount: threads, chunksPerThread: perThread)
            let hits = Hits(37)
            for l in 0..<loops { pool.parallelFor(l % 2 == 0 ? 37 : 5) { hits.add($0) } }
            let want = (0..<37).map { $0 < 5 ? loops : loops / 2 }
            #expect(hits.all == want, "threads \(threads) × \(perThread)")
        }
    }

    @Test func concurrentCallersAndNestedLoopsAllComplete() {
        // Four threads issue loops at once (only one can hold the crew; the others take the
        // dispatch path), and every body starts an inner loop (which must not wait for the crew).
        let callers = 4, loops = 500
        let results = Hits(callers * 16 * 3)
        DispatchQueue.concurrentPerform(iterations: callers) { c in
            let pool = ThreadPool(threadCount: 2, chunksPerThread: 2)
            let inner = ThreadPool(threadCount: 2)
            for _ in 0..<loops {
                pool.parallelFor(16) { r in
                    for i in r {
                        inner.parallelFor(3) { q in results.add((c * 16 + i) * 3 + q.lowerBound..<(c * 16 + i) * 3 + q.upperBound) }
                    }
                }
            }
        }
        #expect(results.all == [Int](repeating: loops, count: callers * 16 * 3))
    }

    @Test func theCrewRunsALoopOnTwoThreads() throws {
        try #require(ThreadPool.defaultThreadCount >= 2, "needs two cores")
        #expect(WorkerCrew.shared.maxHelpers == ThreadPool.defaultThreadCount - 1)
        // Two chunks that each wait for the other to start can only finish on two threads.
        var ranOnCrew = 0, bothStarted = 0
        let giveUp = Date().addingTimeInterval(60)  // other tests' loops may hold the crew for a while
        while ranOnCrew < 20 && Date() < giveUp {
            let started = Atomic<Int>(0), sawBoth = Atomic<Int>(0)
            let ran = WorkerCrew.shared.run(parts: 2, count: 2, granule: 1, threads: 2) { _ in
                started.add(1, ordering: .sequentiallyConsistent)
                let deadline = Date().addingTimeInterval(10)
                while started.load(ordering: .sequentiallyConsistent) < 2 && Date() < deadline {}
                if started.load(ordering: .sequentiallyConsistent) == 2 { sawBoth.add(1, ordering: .relaxed) }
            }
            if ran {
                ranOnCrew += 1
                if sawBoth.load(ordering: .relaxed) == 2 { bothStarted += 1 }
            } else {
                usleep(200)  // another test's loop holds the crew: try again
            }
        }
        #expect(ranOnCrew == 20)
        #expect(bothStarted == ranOnCrew)
    }

    @Test func theCrewStartsOnlyTheHelpersItsWidestLoopNeeds() {
        // A private crew (its threads outlive the test, asleep): a 2-thread loop starts one
        // helper, a 4-thread loop two more, and a loop wider than the crew may grow is refused.
        let crew = WorkerCrew(maxHelpers: 3)
        #expect(crew.helpers == 0)
        let hits = Hits(64)
        #expect(crew.run(parts: 8, count: 64, granule: 1, threads: 2) { hits.add($0) })
        #expect(crew.helpers == 1)
        #expect(crew.run(parts: 8, count: 64, granule: 1, threads: 4) { hits.add($0) })
        #expect(crew.helpers == 3)
        #expect(!crew.run(parts: 8, count: 64, granule: 1, threads: 5) { hits.add($0) })
        #expect(crew.helpers == 3)
        #expect(hits.all == [Int](repeating: 2, count: 64))
    }
}
