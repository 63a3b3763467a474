import Testing
import CommandLineSupport

@Suite struct ProgressLineTests {
    @Test func durationsAndCounts() {
        #expect(humanDuration(3725) == "1h02m" && humanDuration(65) == "1m05s" && humanDuration(59.6) == "1m00s" && humanDuration(7) == "7s")
        // A rate of 0 gives an absurd estimate: unknown, not a wrapped negative number.
        #expect(humanDuration(1e14) == "?" && humanDuration(-1) == "?" && humanDuration(.nan) == "?")
        #expect(humanCount(1_234_567) == "1.23M" && humanCount(999) == "999" && humanCount(2e9) == "2.00G")
    }
}
