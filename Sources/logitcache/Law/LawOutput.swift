import ArgumentParser
import CommandLineSupport
import Foundation
import ScalingLaws

/// A positive count given as `1.5e9`, `125M`, `7B`, `2T` or `500K` (suffixes are powers of 1000).
struct Quantity: ExpressibleByArgument {
    let value: Double

    init?(argument: String) {
        let s = argument.trimmingCharacters(in: .whitespaces)
        let scale: [Character: Double] = ["K": 1e3, "k": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12]
        var digits = Substring(s), factor = 1.0
        if let last = s.last, let f = scale[last] { digits = s.dropLast(); factor = f }
        guard let v = Double(digits), v.isFinite, v > 0 else { return nil }
        value = v * factor
    }
    var defaultValueDescription: String { String(value) }
}

/// `1.234e+19`-style rendering for FLOP counts and parameter counts in tables.
func sci(_ x: Double) -> String { String(format: "%.4g", x) }

/// Prints `value` as pretty, key-sorted JSON on stdout.
func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}

/// A failure of a `law` command on its input (not its arguments): printed as `Error: …`.
struct LawInputError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Reads a whole UTF-8 file or fails naming the option and path.
func readText(_ path: String, option: String) throws -> String {
    guard let data = FileManager.default.contents(atPath: path) else {
        throw LawInputError("\(option): cannot read \(path)")
    }
    guard let text = String(validating: [UInt8](data), as: UTF8.self) else {
        throw LawInputError("\(option): \(path) is not valid UTF-8")
    }
    return text
}

/// Reads a coefficients file (`{"supervised": {…}, "distillation": {…}}`, distillation optional;
/// the output of `law fit --json` qualifies) or fails naming the option and path.
func loadLawCoefficients(_ path: String, option: String) throws -> DistillationLaw {
    let text = try readText(path, option: option)
    do {
        return try JSONDecoder().decode(DistillationLaw.self, from: Data(text.utf8))
    } catch {
        throw LawInputError("\(option): \(path) is not a coefficients object (see `logitcache law predict --help`): \(error)")
    }
}
