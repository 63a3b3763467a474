import Foundation
import Testing
@testable import TeacherPass

@Suite struct BatchHandoffTests {
    struct Stop: Error {}

    @Test func slotsArriveInSubmissionOrderAndTheProducerStaysBounded() {
        let h = BatchHandoff(slots: 2)
        final class Seen: @unchecked Sendable { var order: [Int] = [] }  // guarded by the hand-off's lock
        let seen = Seen()
        let done = DispatchSemaphore(value: 0)
        let consumer = Thread {
            while let s = h.next() {
                h.locked { seen.order.append(s) }
                usleep(200)
                h.release(s)
            }
            done.signal()
        }
        consumer.start()
        var submitted: [Int] = []
        for _ in 0..<50 {
            guard let s = h.acquire() else { break }
            // At most two slots are out at once: the producer never gets ahead by more.
            #expect(h.locked { submitted.count - seen.order.count } <= 2)
            submitted.append(s)
            h.submit(s)
        }
        h.close()
        done.wait()
        #expect(seen.order == submitted && submitted.count == 50)
    }

    @Test func aConsumerFailureStopsTheProducer() {
        let h = BatchHandoff(slots: 2)
        let done = DispatchSemaphore(value: 0)
        let consumer = Thread {
            if let s = h.next() { _ = s; h.fail(Stop()) }
            done.signal()
        }
        consumer.start()
        var acquired = 0
        while let s = h.acquire() { acquired += 1; h.submit(s); if acquired > 10 { break } }
        h.close()
        done.wait()
        #expect(acquired <= 2 && h.consumerError is Stop)
    }
}
