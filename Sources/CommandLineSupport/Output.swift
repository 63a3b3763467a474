// Output helpers of the command lines (`logitcache`, `logitcache-bench`): JSON lines, errors,
// aligned tables.
import ArgumentParser
import Foundation

/// Prints a JSON object (sorted keys) on one line to stdout. Non-finite numbers, which JSON
/// cannot express, are written as the strings of ``jsonFloatValue(_:)``; anything else that is not
/// JSON (a programming error) ends the process with a message rather than a trap.
public func printJSON(_ value: Any) {
    let v = JSONSerialization.isValidJSONObject(value) ? value : jsonSanitized(value)
    do {
        let data = try JSONSerialization.data(withJSONObject: v, options: [.sortedKeys, .withoutEscapingSlashes])
        print(String(decoding: data, as: UTF8.self))
    } catch {
        FileHandle.standardError.write(Data("logitcache: cannot write JSON output: \(error)\n".utf8))
        exit(2)
    }
}

/// A float for JSON output: the number itself when finite, else the string `"inf"`, `"-inf"` or
/// `"nan"` (Python's `float()` reads all three back; NaN payload bits are not kept).
public func jsonFloatValue(_ x: Double) -> Any {
    x.isFinite ? x : x.isNaN ? "nan" : x < 0 ? "-inf" : "inf"
}
public func jsonFloatValue(_ x: Float) -> Any { jsonFloatValue(Double(x)) }

/// `value` with every non-finite number replaced by ``jsonFloatValue(_:)`` (arrays and dictionaries
/// walked recursively).
public func jsonSanitized(_ value: Any) -> Any {
    switch value {
    case let d as [String: Any]: return d.mapValues(jsonSanitized)
    case let a as [Any]: return a.map(jsonSanitized)
    case let x as Double: return jsonFloatValue(x)
    case let x as Float: return jsonFloatValue(x)
    default: return value
    }
}

/// Exits with a one-line error naming the problem.
public func fail(_ error: Error) -> ExitCode {
    FileHandle.standardError.write(Data("logitcache: \(error)\n".utf8))
    return ExitCode(2)
}

/// A float as JSON: the shortest round-tripping decimal; non-finite values become null.
public func jsonNumber(_ x: Float) -> String { x.isFinite ? "\(x)" : "null" }

public func format(_ x: Float, _ digits: Int) -> String { String(format: "%.\(digits)f", Double(x)) }
public func format(_ x: Double, _ digits: Int) -> String { String(format: "%.\(digits)f", x) }

/// Right-aligns `value` in `width` columns; a negative width left-aligns.
public func pad(_ value: Any, _ width: Int) -> String {
    let s = "\(value)"
    let fill = String(repeating: " ", count: max(0, abs(width) - s.count))
    return width < 0 ? s + fill : fill + s
}

import Foundation
