import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Progress for long work: a line redrawn in place on a terminal, plain periodic log lines
/// otherwise (batch logs, Slurm output files).
public final class ProgressLine {
    public let isTerminal = isatty(STDERR_FILENO) != 0
    private var lastPrint = Date.distantPast
    private let interval: TimeInterval

    public init(logInterval: TimeInterval = 10) { interval = logInterval }

    /// Shows `text`; on a terminal at most 10 times a second, else every `logInterval` seconds.
    public func update(_ text: String, force: Bool = false) {
        let now = Date()
        guard force || now.timeIntervalSince(lastPrint) >= (isTerminal ? 0.1 : interval) else { return }
        lastPrint = now
        let line = isTerminal ? "\r\u{1B}[2K" + text : text + "\n"
        FileHandle.standardError.write(Data(line.utf8))
    }

    /// Ends an in-place line.
    public func finish() { if isTerminal { FileHandle.standardError.write(Data("\n".utf8)) } }
}

/// `1234567` → `1.23M`.
public func humanCount(_ x: Double) -> String {
    switch abs(x) {
    case 1e9...: return String(format: "%.2fG", x / 1e9)
    case 1e6...: return String(format: "%.2fM", x / 1e6)
    case 1e3...: return String(format: "%.1fk", x / 1e3)
    default: return String(format: "%.0f", x)
    }
}

/// Seconds as `1h02m`, `3m05s` or `12s`.
public func humanDuration(_ s: Double) -> String {
    // Beyond a year an estimate says nothing (a rate of 0 gives ~1e14 s).
    guard s.isFinite, s >= 0, s < 366 * 86_400 else { return "?" }
    let t = Int(s.rounded())
    if t >= 3600 { return "\(t / 3600)h" + String(format: "%02dm", Int32((t % 3600) / 60)) }
    if t >= 60 { return "\(t / 60)m" + String(format: "%02ds", Int32(t % 60)) }
    return "\(t)s"
}
