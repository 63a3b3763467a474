import ArgumentParser
import Foundation

/// The path of a benchmark's baseline script, checked before it runs: `--script` when given,
/// else `tools/NAME` under the working directory (a checkout's root).
/// - Throws: `ValidationError` naming the path and the option that sets it.
public func baselineScript(_ given: String?, default name: String) throws -> String {
    let path = given ?? "tools/" + name
    guard FileManager.default.isReadableFile(atPath: path) else {
        throw ValidationError("baseline script \(path) not found: run from the repository root or pass --script PATH")
    }
    return path
}
