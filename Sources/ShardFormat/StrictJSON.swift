/// The manifest and footer grammar's checks that a JSON decoder does not make (FORMAT.md
/// section 7): UTF-8 text with no byte-order mark, no `null`, no member twice in one object
/// (names compared after unescaping), strings with valid escapes and no unpaired surrogate, at
/// most 32 levels of nesting, and every number an integer literal within Int64, except at the
/// paths given as real-valued. Runs in O(bytes) before the text is decoded, so each refusal
/// names the member it is about instead of surfacing as "not valid JSON".
struct StrictJSON {
    /// Member paths (`capture.temperature`, …) whose numbers may have a fraction or exponent.
    let realPaths: Set<String>
    private let b: [UInt8]
    private var i = 0

    private init(_ bytes: [UInt8], realPaths: Set<String>) { b = bytes; self.realPaths = realPaths }

    /// Real literals whose value is 0 (`0e1`, `0.000…1` past the smallest subnormal), valid JSON
    /// that Foundation's decoder refuses: their byte ranges, rewritten as `0` by ``check(_:realPaths:)``.
    private var zeroExponents: [Range<Int>] = []

    /// Checks `bytes`; the thrown message names the path and what is wrong. Returns the text to
    /// decode: `bytes`, or a copy with each `0e…` real literal written `0`.
    static func check(_ bytes: [UInt8], realPaths: Set<String>) throws(StrictJSONError) -> [UInt8] {
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { throw StrictJSONError("starts with a UTF-8 byte-order mark") }
        var p = StrictJSON(bytes, realPaths: realPaths)
        p.space()
        try p.value(path: "", depth: 0)
        p.space()
        guard p.i == bytes.count else { throw StrictJSONError("text after the top-level value at byte \(p.i)") }
        if p.zeroExponents.isEmpty { return bytes }
        var out = bytes
        for r in p.zeroExponents.reversed() { out.replaceSubrange(r, with: Array("0".utf8)) }
        return out
    }

    private mutating func space() {
        while i < b.count, b[i] == 0x20 || b[i] == 0x0A || b[i] == 0x0D || b[i] == 0x09 { i += 1 }
    }

    private mutating func value(path: String, depth: Int) throws(StrictJSONError) {
        guard depth <= 32 else { throw StrictJSONError("\(where_(path)): nested more than 32 levels") }
        guard i < b.count else { throw StrictJSONError("\(where_(path)): text ends inside a value") }
        switch b[i] {
        case UInt8(ascii: "{"): try object(path: path, depth: depth)
        case UInt8(ascii: "["): try array(path: path, depth: depth)
        case UInt8(ascii: "\""): _ = try string(path: path)
        case UInt8(ascii: "t"): try literal("true", path)
        case UInt8(ascii: "f"): try literal("false", path)
        case UInt8(ascii: "n"): throw StrictJSONError("\(where_(path)): null is not allowed (leave the member out)")
        default: try number(path: path)
        }
    }

    private mutating func object(path: String, depth: Int) throws(StrictJSONError) {
        i += 1
        var keys = Set<String>()
        space()
        if i < b.count, b[i] == UInt8(ascii: "}") { i += 1; return }
        while true {
            space()
            guard i < b.count, b[i] == UInt8(ascii: "\"") else { throw StrictJSONError("\(where_(path)): expected a member name at byte \(i)") }
            let key = try string(path: path)
            guard keys.insert(key).inserted else { throw StrictJSONError("\(where_(path)): member \"\(key)\" appears twice") }
            space()
            guard i < b.count, b[i] == UInt8(ascii: ":") else { throw StrictJSONError("\(where_(path)): expected ':' at byte \(i)") }
            i += 1
            space()
            try value(path: path.isEmpty ? key : path + "." + key, depth: depth + 1)
            space()
            guard i < b.count else { throw StrictJSONError("\(where_(path)): text ends inside an object") }
            if b[i] == UInt8(ascii: ",") { i += 1; continue }
            guard b[i] == UInt8(ascii: "}") else { throw StrictJSONError("\(where_(path)): expected ',' or '}' at byte \(i)") }
            i += 1
            return
        }
    }

    private mutating func array(path: String, depth: Int) throws(StrictJSONError) {
        i += 1
        space()
        if i < b.count, b[i] == UInt8(ascii: "]") { i += 1; return }
        var n = 0
        while true {
            space()
            try value(path: "\(path)[\(n)]", depth: depth + 1)
            n += 1
            space()
            guard i < b.count else { throw StrictJSONError("\(where_(path)): text ends inside an array") }
            if b[i] == UInt8(ascii: ",") { i += 1; continue }
            guard b[i] == UInt8(ascii: "]") else { throw StrictJSONError("\(where_(path)): expected ',' or ']' at byte \(i)") }
            i += 1
            return
        }
    }

    /// A string's text with its escapes decoded; refuses invalid escapes and unpaired surrogates.
    private mutating func string(path: String) throws(StrictJSONError) -> String {
        i += 1
        var text: [UInt8] = []
        func hex4() throws(StrictJSONError) -> UInt32 {
            guard i + 4 <= b.count, let v = UInt32(String(decoding: b[i..<(i + 4)], as: UTF8.self), radix: 16) else {
                throw StrictJSONError("\(where_(path)): bad \\u escape at byte \(i)")
            }
            i += 4
            return v
        }
        while i < b.count, b[i] != UInt8(ascii: "\"") {
            let c = b[i]
            if c < 0x20 { throw StrictJSONError("\(where_(path)): control character in a string at byte \(i)") }
            guard c == UInt8(ascii: "\\") else { text.append(c); i += 1; continue }
            guard i + 1 < b.count else { break }
            let e = b[i + 1]
            i += 2
            switch e {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): text.append(e)
            case UInt8(ascii: "b"): text.append(8)
            case UInt8(ascii: "f"): text.append(12)
            case UInt8(ascii: "n"): text.append(10)
            case UInt8(ascii: "r"): text.append(13)
            case UInt8(ascii: "t"): text.append(9)
            case UInt8(ascii: "u"):
                var u = try hex4()
                if (0xD800..<0xDC00).contains(u) {
                    guard i + 1 < b.count, b[i] == UInt8(ascii: "\\"), b[i + 1] == UInt8(ascii: "u") else {
                        throw StrictJSONError("\(where_(path)): unpaired surrogate \\u\(String(u, radix: 16)) at byte \(i)")
                    }
                    i += 2
                    let low = try hex4()
                    guard (0xDC00..<0xE000).contains(low) else { throw StrictJSONError("\(where_(path)): unpaired surrogate at byte \(i)") }
                    u = 0x10000 + ((u - 0xD800) << 10) + (low - 0xDC00)
                } else if (0xDC00..<0xE000).contains(u) {
                    throw StrictJSONError("\(where_(path)): unpaired surrogate \\u\(String(u, radix: 16)) at byte \(i)")
                }
                // Safe because surrogates were paired or refused above: u is a scalar value.
                text += Array(String(Character(Unicode.Scalar(u)!)).utf8)
            default: throw StrictJSONError("\(where_(path)): invalid escape \\\(Character(Unicode.Scalar(e))) at byte \(i - 2)")
            }
        }
        guard i < b.count else { throw StrictJSONError("\(where_(path)): text ends inside a string") }
        i += 1
        return String(decoding: text, as: UTF8.self)
    }

    private mutating func literal(_ word: String, _ path: String) throws(StrictJSONError) {
        let w = Array(word.utf8)
        guard i + w.count <= b.count, Array(b[i..<(i + w.count)]) == w else {
            throw StrictJSONError("\(where_(path)): not a JSON value at byte \(i)")
        }
        i += w.count
    }

    private mutating func number(path: String) throws(StrictJSONError) {
        let start = i
        while i < b.count, (b[i] >= 0x30 && b[i] <= 0x39) || b[i] == UInt8(ascii: "-") || b[i] == UInt8(ascii: "+")
                || b[i] == UInt8(ascii: ".") || b[i] == UInt8(ascii: "e") || b[i] == UInt8(ascii: "E") { i += 1 }
        let text = String(decoding: b[start..<i], as: UTF8.self)
        guard !text.isEmpty else { throw StrictJSONError("\(where_(path)): not a JSON value at byte \(start)") }
        let integral = !text.contains { $0 == "." || $0 == "e" || $0 == "E" }
        if realPaths.contains(path) {
            guard let v = Double(text), v.isFinite else { throw StrictJSONError("\(where_(path)): \(text) is not a finite number") }
            // A real that reads as 0 (`0e1`, a decimal below the smallest subnormal) is written
            // `0` for the decoder, which refuses some of them.
            if v == 0 && !integral { zeroExponents.append(start..<i) }
        } else {
            guard integral else { throw StrictJSONError("\(where_(path)): \(text) is not an integer") }
            guard Int64(text) != nil else { throw StrictJSONError("\(where_(path)): integer \(text) is outside the 64-bit range") }
        }
    }

    private func where_(_ path: String) -> String { path.isEmpty ? "top level" : path }
}

/// Why ``StrictJSON`` refused a text.
struct StrictJSONError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}
