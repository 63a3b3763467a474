/// GPT-2's reversible byte <-> character table: printable Latin-1 bytes map to themselves,
/// the other 68 bytes to U+0100 upwards in byte order, so every byte has a visible character
/// and vocabulary entries are plain strings.
enum ByteLevel {
    /// `chars[b]` is the character that stands for byte `b`.
    static let chars: [Unicode.Scalar] = {
        var table = [Unicode.Scalar](repeating: " ", count: 256)
        var next: UInt32 = 256
        for b in 0..<256 {
            let printable = (0x21...0x7E).contains(b) || (0xA1...0xAC).contains(b) || (0xAE...0xFF).contains(b)
            if printable {
                table[b] = Unicode.Scalar(UInt8(b))
            } else {
                // Safe because next stays below 0x144, a valid scalar.
                table[b] = Unicode.Scalar(next)!
                next += 1
            }
        }
        return table
    }()

    /// The byte a character stands for, or nil when it is not one of the 256 table characters.
    static func byte(for scalar: Unicode.Scalar) -> UInt8? {
        let v = scalar.value
        if v < 256 { return chars[Int(v)] == scalar ? UInt8(v) : nil }
        if v < 0x144 { return inverse[Int(v - 256)] }
        return nil
    }

    private static let inverse: [UInt8] = {
        var t = [UInt8](repeating: 0, count: 0x144 - 256)
        for b in 0..<256 where chars[b].value >= 256 { t[Int(chars[b].value) - 256] = UInt8(b) }
        return t
    }()

    /// The bytes a vocabulary entry stands for, or nil when one of its characters is not in
    /// the table (such an entry can only come from the added tokens, never from the BPE model).
    static func bytes(of token: String) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(token.unicodeScalars.count)
        for s in token.unicodeScalars {
            guard let b = byte(for: s) else { return nil }
            out.append(b)
        }
        return out
    }

    /// The table string for some bytes (the form vocabulary entries are written in).
    static func string(of bytes: some Sequence<UInt8>) -> String {
        var s = String.UnicodeScalarView()
        for b in bytes { s.append(chars[Int(b)]) }
        return String(s)
    }
}
