// Helpers every test target shares: temporary directories and the built `logitcache` command.

import Foundation

/// A fresh empty directory under the system temp dir, named after `tag` (the caller removes it).
public func freshDirectory(_ tag: String) -> String {
    let d = NSTemporaryDirectory() + "lc-test-\(tag)-\(getpid())-\(UInt64.random(in: 0..<UInt64.max))"
    try? FileManager.default.removeItem(atPath: d)
    // Safe to force: the temp dir is writable, and a test cannot go on without its directory.
    try! FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
    return d
}

/// A fresh temporary directory per test, removed when the test ends, with helpers that write
/// files into it.
public final class TempDir {
    public let path: String
    public init() {
        path = NSTemporaryDirectory() + "logitcache-test-" + UUID().uuidString
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    public func file(_ name: String, _ contents: String) -> String {
        let p = (path as NSString).appendingPathComponent(name)
        try! FileManager.default.createDirectory(atPath: (p as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try! contents.write(toFile: p, atomically: true, encoding: .utf8)
        return p
    }
    public func bytes(_ name: String, _ data: [UInt8]) -> String {
        let p = (path as NSString).appendingPathComponent(name)
        try! Data(data).write(to: URL(fileURLWithPath: p))
        return p
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
}

/// Why the `logitcache` command could not be found.
public struct MissingBinary: Error, CustomStringConvertible {
    public let description: String
}

/// The built `logitcache` command: `$LOGITCACHE_BIN`, else beside the test bundle, else in the
/// package's `.build/release` or `.build/debug` (`tools/test` builds it first).
public func logitcacheBinary() throws -> String {
    if let b = ProcessInfo.processInfo.environment["LOGITCACHE_BIN"] { return b }
    let bundle = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    let candidates = [bundle, bundle.deletingLastPathComponent(),
                      root.appendingPathComponent(".build/release"), root.appendingPathComponent(".build/debug")]
    for c in candidates {
        let p = c.appendingPathComponent("logitcache").path
        if FileManager.default.isExecutableFile(atPath: p) { return p }
    }
    throw MissingBinary(description: "logitcache binary not built (run `swift build -c release --product logitcache`)")
}

/// How a `logitcache` run ended, with what it printed.
public struct CommandResult {
    public var reason: Process.TerminationReason
    public var status: Int32
    public var standardError: String
    /// Exited by itself (no signal) with a non-zero status.
    public var failedCleanly: Bool { reason == .exit && status != 0 }
}

/// Starts `logitcache` with `arguments`, its output discarded (for tests that kill it midway).
public func launchLogitcache(_ arguments: [String]) throws -> Process {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: try logitcacheBinary())
    p.arguments = arguments
    p.standardOutput = FileHandle.nullDevice
    p.standardError = FileHandle.nullDevice
    try p.run()
    return p
}

/// Runs `logitcache` with `arguments` to the end, standard output discarded.
public func runLogitcache(_ arguments: [String]) throws -> CommandResult {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: try logitcacheBinary())
    p.arguments = arguments
    let err = Pipe()
    p.standardError = err
    p.standardOutput = FileHandle.nullDevice
    try p.run()
    let text = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    p.waitUntilExit()
    return CommandResult(reason: p.terminationReason, status: p.terminationStatus, standardError: text)
}
