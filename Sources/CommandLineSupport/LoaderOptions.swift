import ArgumentParser
import StudentLoader
import Truncation

/// Loader options shared by `logitcache batches` and `logitcache-bench loader`.
public struct LoaderOptions: ParsableArguments {
    @Option(help: "B: windows per batch.") public var batch: Int = 8
    @Option(help: "T: tokens per window.") public var context: Int = 1024
    @Option(help: "k: target slots per token (prefix of the cache's K).") public var k: Int = 8
    @Option(help: "Targets: renormalized, tail or sampled.") public var mode: String = "renormalized"
    @Option(help: "τ applied to the stored log-probs.") public var temperature: Double = 1
    @Option(help: "Seed of the order.") public var seed: UInt64 = 0
    @Option(help: "Data-parallel rank.") public var rank: Int = 0
    @Option(help: "Data-parallel world size.") public var worldSize: Int = 1
    @Option(help: "Windows in the shuffle buffer.") public var shuffleBuffer: Int = 64
    @Flag(help: "Drop the remainder instead of padding with empty windows.") public var dropRemainder = false
    @Option(help: "Decode threads.") public var threads: Int = 1
    @Option(help: "Blocks decoded ahead.") public var prefetch: Int = 4

    public init() {}

    public func configuration() throws -> LoaderConfiguration {
        guard let m = TargetMode(rawValue: mode) else { throw ValidationError("unknown mode \(mode) (renormalized, tail, sampled)") }
        return LoaderConfiguration(batchSize: batch, contextLength: context, k: k, mode: m, temperature: temperature, seed: seed,
                                   rank: rank, worldSize: worldSize, shuffleBuffer: shuffleBuffer,
                                   remainder: dropRemainder ? .drop : .pad, decodeThreads: threads, prefetchBlocks: prefetch)
    }
}
