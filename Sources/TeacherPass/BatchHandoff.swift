import Foundation

/// A bounded, in-order hand-off of numbered slots from one producer (the compute loop) to one
/// consumer (the writer thread).
///
/// The producer takes an empty slot with ``acquire()``, fills it and ``submit(_:)``s it; the
/// consumer takes filled slots with ``next()`` strictly in submission order and gives each
/// back with ``release(_:)``. With S slots the producer runs at most S batches ahead, so
/// memory stays bounded; the lock hand-over orders every write to a slot before its reader.
final class BatchHandoff: @unchecked Sendable {
    private let condition = NSCondition()
    private var empty: [Int]
    private var filled: [Int] = []
    private var closed = false
    private var failure: Error?

    init(slots: Int) { empty = Array(0..<max(1, slots)) }

    /// An empty slot, waiting for the consumer to release one; nil once the consumer failed.
    func acquire() -> Int? {
        condition.lock(); defer { condition.unlock() }
        while empty.isEmpty && failure == nil { condition.wait() }
        return failure == nil ? empty.removeLast() : nil
    }

    /// Queues a filled slot for the consumer.
    func submit(_ slot: Int) {
        condition.lock(); defer { condition.unlock() }
        filled.append(slot)
        condition.broadcast()
    }

    /// No more slots will be submitted; the consumer drains what is queued, then ``next()``
    /// returns nil.
    func close() {
        condition.lock(); defer { condition.unlock() }
        closed = true
        condition.broadcast()
    }

    /// The next filled slot in submission order, waiting for one; nil when closed and drained.
    func next() -> Int? {
        condition.lock(); defer { condition.unlock() }
        while filled.isEmpty && !closed { condition.wait() }
        return filled.isEmpty ? nil : filled.removeFirst()
    }

    /// Gives a consumed slot back to the producer.
    func release(_ slot: Int) {
        condition.lock(); defer { condition.unlock() }
        empty.append(slot)
        condition.broadcast()
    }

    /// The consumer stopped with `error`: the producer's next ``acquire()`` returns nil.
    func fail(_ error: Error) {
        condition.lock(); defer { condition.unlock() }
        if failure == nil { failure = error }
        condition.broadcast()
    }

    /// The consumer's error, if it stopped with one.
    var consumerError: Error? {
        condition.lock(); defer { condition.unlock() }
        return failure
    }

    /// Runs `body` under the hand-off's lock (for counters both sides read).
    func locked<R>(_ body: () throws -> R) rethrows -> R {
        condition.lock(); defer { condition.unlock() }
        return try body()
    }
}
