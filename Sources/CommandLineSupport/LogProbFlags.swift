import ArgumentParser
import ShardFormat

/// The log-prob encoding that `--lossless`, `--step-log2 N` and `--step-multiplier M` ask for,
/// or nil for the writer's default.
public func logProbEncoding(lossless: Bool, stepLog2: Int?, stepMultiplier: Int?) throws -> LogProbEncoding? {
    if lossless {
        guard stepLog2 == nil, stepMultiplier == nil else { throw ValidationError("--lossless stores exact float32: drop --step-log2/--step-multiplier") }
        return .float32
    }
    if stepLog2 == nil && stepMultiplier == nil { return nil }
    guard let b = stepLog2 else { throw ValidationError("--step-multiplier needs --step-log2") }
    guard (0...20).contains(b) else { throw ValidationError("--step-log2 \(b) outside 0...20") }
    let m = stepMultiplier ?? 1
    guard (1...255).contains(m) else { throw ValidationError("--step-multiplier \(m) outside 1...255") }
    return .quantized(stepLog2: b, multiplier: m)
}
