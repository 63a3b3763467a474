import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The process's persistent worker threads, shared by every ``ThreadPool``.
///
/// Why: a transformer step is hundreds of short parallel loops (a norm over 128 rows, a
/// 64 x 256 GEMM), and waking dispatch workers for each costs tens of microseconds, about the
/// length of the loop itself; on a small model two threads were then slower than one. The crew's
/// threads spin for a short while after each loop (as OpenMP runtimes and llama.cpp's pool do),
/// yielding the core now and then to any other runnable thread, so the next loop starts within
/// a microsecond or two; they sleep on a condition variable once the process stops issuing loops.
///
/// One loop runs on the crew at a time. A loop that finds the crew busy (another thread's loop,
/// or a loop started inside a loop body) or needing more helpers than the crew has runs on
/// dispatch workers instead (``ThreadPool`` decides), so results never depend on which path ran:
/// chunks are the same, and each chunk's result does not depend on the thread computing it.
final class WorkerCrew: @unchecked Sendable {
    /// At most one helper per core beyond the caller's.
    static let shared = WorkerCrew(maxHelpers: max(0, ThreadPool.defaultThreadCount - 1))

    /// How long an idle helper spins before it sleeps, in nanoseconds.
    static let spinNanoseconds: UInt64 = 200_000

    /// Most helpers the crew may start: loops asking for more threads go to dispatch.
    let maxHelpers: Int
    /// Helpers started so far: as many as the widest loop asked for, so a 2-thread process on
    /// a 64-core machine keeps one helper, not 63 spinning ones. Grows only while `busy` is held.
    private(set) var helpers = 0

    /// `generation << 32 | next chunk`: one word, so a helper claims a chunk of the loop it
    /// saw published and never one of the next loop.
    private let ticket = Atomic<UInt64>(0)
    /// Chunks of the current loop finished.
    private let finished = Atomic<Int>(0)
    /// `generation << 32 | seat limit << 16 | helpers seated` of the current loop.
    private let seats = Atomic<UInt64>(0)
    /// Helpers asleep on `wake` (or about to be).
    private let sleepers = Atomic<Int>(0)
    /// Held by the thread whose loop runs on the crew.
    private let busy = Atomic<Bool>(false)

    // The current loop; written only while no chunk of any loop is claimable.
    private var body: ((Range<Int>) -> Void)?
    private var count = 0, granule = 1
    /// Chunks of the current loop; atomic because a helper may read it while deciding whether
    /// to try a claim of a loop that is already over (the claim itself then fails).
    private let parts = Atomic<Int>(0)
    /// Chunk field of a closed loop's ticket: never below `parts`.
    private static let closed: UInt64 = 0xFFFF_FFFF

    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let wake = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    init(maxHelpers: Int) {
        self.maxHelpers = maxHelpers
        // Safe because both are initialised once here and the crew lives for the whole process.
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(wake, nil)
    }

    /// What a new helper thread is handed: its crew, and the last loop it is not to join.
    private final class Start {
        let crew: WorkerCrew, after: UInt64
        init(_ crew: WorkerCrew, after: UInt64) { self.crew = crew; self.after = after }
    }

    /// Starts a helper that joins every loop after generation `after`; false if the system
    /// refused a thread.
    private func startHelper(after: UInt64) -> Bool {
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        defer { pthread_attr_destroy(&attributes) }
        // Numeric kernels keep big buffers on the heap; 1 MiB of stack is plenty.
        pthread_attr_setstacksize(&attributes, 1 << 20)
        let box = Unmanaged.passRetained(Start(self, after: after)).toOpaque()
        #if canImport(Glibc)
        var thread = pthread_t()
        #else
        var thread: pthread_t? = nil
        #endif
        let rc = pthread_create(&thread, &attributes, { raw in
            // Safe because `raw` is the retained Start passed just above, taken back once here.
            let start = Unmanaged<Start>.fromOpaque(raw!).takeRetainedValue()
            start.crew.helperLoop(after: start.after)
            return nil
        }, box)
        #if canImport(Glibc)
        if rc == 0 { pthread_detach(thread) }
        #else
        if rc == 0, let thread { pthread_detach(thread) }
        #endif
        if rc != 0 { Unmanaged<Start>.fromOpaque(box).release() }
        return rc == 0
    }

    /// Runs `body` over chunks `0..<parts` of `0..<count` on the caller and `threads - 1`
    /// helpers, returning when all are done; returns false without running anything when the
    /// crew is busy or too small.
    func run(parts: Int, count: Int, granule: Int, threads: Int, _ body: (Range<Int>) -> Void) -> Bool {
        guard threads - 1 <= maxHelpers, threads <= 0xFFFF, parts < Int(WorkerCrew.closed),
              busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else {
            return false
        }
        defer { busy.store(false, ordering: .releasing) }
        while helpers < threads - 1 {
            // Started before this loop is published, so it joins this loop.
            guard startHelper(after: ticket.load(ordering: .relaxed) >> 32) else { return false }
            helpers += 1
        }
        withoutActuallyEscaping(body) { body in
            self.body = body; self.count = count; self.granule = granule
            self.parts.store(parts, ordering: .relaxed)
            finished.store(0, ordering: .relaxed)
            let generation = ((ticket.load(ordering: .relaxed) >> 32) &+ 1) & 0xFFFF_FFFF
            seats.store(generation << 32 | UInt64(threads - 1) << 16, ordering: .relaxed)
            // Publishes the loop: a helper that reads this generation sees the fields above.
            ticket.store(generation << 32, ordering: .sequentiallyConsistent)
            if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
                pthread_mutex_lock(mutex)
                pthread_cond_broadcast(wake)
                pthread_mutex_unlock(mutex)
            }
            work(generation)
            // The caller holds no seat, so it waits only for chunks, never for a helper to arrive.
            var n = 0
            while finished.load(ordering: .acquiring) < parts { n &+= 1; if n & 1023 == 0 { sched_yield() } }  // `parts`: the argument
            // Closes the loop: helpers still looking at this generation find nothing to claim.
            ticket.store((generation << 32) | WorkerCrew.closed, ordering: .sequentiallyConsistent)
            self.body = nil
        }
        return true
    }

    /// Claims and runs chunks of loop `generation` until none are left.
    private func work(_ generation: UInt64) {
        var seen = ticket.load(ordering: .acquiring)
        while seen >> 32 == generation, Int(seen & 0xFFFF_FFFF) < parts.load(ordering: .relaxed) {
            let (exchanged, original) = ticket.compareExchange(expected: seen, desired: seen &+ 1, ordering: .acquiringAndReleasing)
            if !exchanged { seen = original; continue }
            let chunk = Int(seen & 0xFFFF_FFFF)
            let r = ThreadPool.chunkRange(chunk, of: parts.load(ordering: .relaxed), count: count, granule: granule)
            // Safe because a chunk was claimed, so the loop is unfinished and `body` is its body.
            if !r.isEmpty { body!(r) }
            finished.add(1, ordering: .releasing)
            seen = ticket.load(ordering: .acquiring)
        }
    }

    private func helperLoop(after generation: UInt64) {
        var last = generation
        while true {
            let generation = waitForLoop(after: last)
            last = generation
            if takeSeat(generation) { work(generation) }
        }
    }

    /// Takes a seat in loop `generation`, so a loop asking for t threads never runs on more.
    private func takeSeat(_ generation: UInt64) -> Bool {
        var s = seats.load(ordering: .acquiring)
        while s >> 32 == generation, s & 0xFFFF < (s >> 16) & 0xFFFF {
            let (exchanged, original) = seats.compareExchange(expected: s, desired: s &+ 1, ordering: .acquiringAndReleasing)
            if exchanged { return true }
            s = original
        }
        return false
    }

    /// The generation of the next loop after `last`: spins for ``spinNanoseconds``, then sleeps.
    private func waitForLoop(after last: UInt64) -> UInt64 {
        let start = monotonicNanoseconds()
        var n = 0
        while true {
            let g = ticket.load(ordering: .acquiring) >> 32
            if g != last { return g }
            n &+= 1
            if n & 255 == 0 {
                if monotonicNanoseconds() - start > WorkerCrew.spinNanoseconds { break }
                // Lets a runnable thread of the process (a cache writer, a loader) have the core.
                sched_yield()
            }
        }
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        sleepers.add(1, ordering: .sequentiallyConsistent)
        defer { sleepers.subtract(1, ordering: .sequentiallyConsistent) }
        while true {
            let g = ticket.load(ordering: .sequentiallyConsistent) >> 32
            if g != last { return g }
            pthread_cond_wait(wake, mutex)
        }
    }
}

private func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}
