/// Unicode character classes used by the pre-tokenizer scanners and added-token matching,
/// with the semantics of the regex engines the `tokenizers` library uses:
/// `\p{L}` = general category L*, `\p{N}` = N*, `\s` = the White_Space property (Oniguruma's
/// `\s` for Unicode text is the same set), `\w` = Alphabetic, marks, Nd, Pc and Join_Control
/// (the Rust `regex` crate's Unicode `\w`).
struct ScalarClass: OptionSet {
    let rawValue: UInt8
    static let letter = ScalarClass(rawValue: 1)
    static let number = ScalarClass(rawValue: 2)
    static let space = ScalarClass(rawValue: 4)
    /// `\r` or `\n` (also `space`).
    static let newline = ScalarClass(rawValue: 8)
    static let word = ScalarClass(rawValue: 16)

    /// The Unicode version of the regex engine inside the `tokenizers` library (Oniguruma with
    /// Unicode 16.0 data, measured with tokenizers 0.23). Scalars assigned later are still
    /// unassigned there, so they get no class here either, whatever this Swift runtime knows.
    static let regexUnicodeVersion = (major: 16, minor: 0)

    static func compute(_ v: UInt32) -> ScalarClass {
        guard let scalar = Unicode.Scalar(v) else { return [] }
        let p = scalar.properties
        guard let age = p.age,
              (age.major, age.minor) <= (regexUnicodeVersion.major, regexUnicodeVersion.minor) else { return [] }
        var c: ScalarClass = []
        switch p.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
            c.insert(.letter)
        case .decimalNumber:
            c.insert(.number); c.insert(.word)
        case .letterNumber, .otherNumber:
            c.insert(.number)
        case .nonspacingMark, .spacingMark, .enclosingMark, .connectorPunctuation:
            c.insert(.word)
        default: break
        }
        if p.isAlphabetic || p.isJoinControl { c.insert(.word) }
        if p.isWhitespace { c.insert(.space) }
        if v == 0x0A || v == 0x0D { c.insert(.newline) }
        return c
    }

    /// Classes of the Basic Multilingual Plane, computed once; other planes are computed on use.
    static let bmp: [ScalarClass] = (0..<0x10000).map { compute(UInt32($0)) }

    @inline(__always) static func of(_ v: UInt32) -> ScalarClass {
        v < 0x10000 ? bmp[Int(v)] : compute(v)
    }
}

/// Decodes the scalar starting at `i` of valid UTF-8 (the bytes of a Swift `String`).
/// Returns the scalar value and its byte length. A stray byte (impossible for `String`
/// input) is returned as itself with length 1 so scanning always advances.
@inline(__always)
func decodeScalar(_ p: UnsafeBufferPointer<UInt8>, _ i: Int) -> (UInt32, Int) {
    let b0 = UInt32(p[i])
    if b0 < 0x80 { return (b0, 1) }
    let n = p.count
    if b0 >= 0xF0, i + 3 < n {
        return ((b0 & 0x07) << 18 | (UInt32(p[i + 1]) & 0x3F) << 12 | (UInt32(p[i + 2]) & 0x3F) << 6
                | (UInt32(p[i + 3]) & 0x3F), 4)
    }
    if b0 >= 0xE0, i + 2 < n {
        return ((b0 & 0x0F) << 12 | (UInt32(p[i + 1]) & 0x3F) << 6 | (UInt32(p[i + 2]) & 0x3F), 3)
    }
    if b0 >= 0xC0, i + 1 < n { return ((b0 & 0x1F) << 6 | (UInt32(p[i + 1]) & 0x3F), 2) }
    return (b0, 1)
}

/// Start of the scalar that ends at byte `end` (exclusive) of valid UTF-8.
@inline(__always)
func previousScalarStart(_ p: UnsafeBufferPointer<UInt8>, _ end: Int) -> Int {
    var j = end - 1
    while j > 0, p[j] & 0xC0 == 0x80 { j -= 1 }
    return j
}
