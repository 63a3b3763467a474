/// The regular expressions a byte-level BPE tokenizer splits words with, implemented as
/// hand-written scanners over UTF-8 with the exact leftmost-first (backtracking) semantics
/// of the Oniguruma regex the `tokenizers` library compiles. Only patterns recognised
/// verbatim are accepted; any other regex is refused by `init(regex:)`.
enum SplitPattern: Equatable {
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
    /// (GPT-2; also the built-in regex of the ByteLevel pre-tokenizer).
    case gpt2
    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
    /// (Llama 3 with `maxDigits` 3; Qwen 2 writes `\p{N}` and has `maxDigits` 1).
    case llama3(maxDigits: Int)
    /// A literal string (a `Split` with a `String` pattern), matched left to right without overlap.
    case literal([UInt8])

    static let gpt2Regex = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#
    static let llama3Regex = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    static let qwen2Regex = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#

    /// The scanner for a regex given in a `tokenizer.json`, or nil when it is not one we implement.
    init?(regex: String) {
        // Compare bytes: Swift String equality is canonical equivalence, not identity.
        switch Array(regex.utf8) {
        case Array(Self.gpt2Regex.utf8): self = .gpt2
        case Array(Self.llama3Regex.utf8): self = .llama3(maxDigits: 3)
        case Array(Self.qwen2Regex.utf8): self = .llama3(maxDigits: 1)
        default: return nil
        }
    }

    /// Appends the byte ranges of every match in `p`, in order. Matches never overlap and are
    /// never empty.
    func matches(_ p: UnsafeBufferPointer<UInt8>, into out: inout [Range<Int>]) {
        switch self {
        case let .literal(needle):
            guard !needle.isEmpty, needle.count <= p.count else { return }
            var i = 0
            while i + needle.count <= p.count {
                var k = 0
                while k < needle.count, p[i + k] == needle[k] { k += 1 }
                if k == needle.count { out.append(i..<(i + k)); i += k } else { i += 1 }
            }
        case .gpt2:
            var i = 0
            while i < p.count { let e = Self.gpt2Match(p, i); out.append(i..<e); i = e }
        case let .llama3(maxDigits):
            var i = 0
            while i < p.count { let e = Self.llama3Match(p, i, maxDigits); out.append(i..<e); i = e }
        }
    }

    @inline(__always) static func cls(_ p: UnsafeBufferPointer<UInt8>, _ i: Int) -> ScalarClass {
        ScalarClass.of(decodeScalar(p, i).0)
    }

    /// `[^\s\p{L}\p{N}]`: anything that is not whitespace, letter or number.
    @inline(__always) static func isOther(_ c: ScalarClass) -> Bool {
        c.isDisjoint(with: [.space, .letter, .number])
    }

    /// End of the contraction starting with the apostrophe at `i`, or nil.
    /// Case-insensitive matching folds `ſ` (U+017F) to `s`, as Oniguruma does.
    static func contraction(_ p: UnsafeBufferPointer<UInt8>, _ i: Int, caseInsensitive: Bool) -> Int? {
        let j = i + 1
        guard j < p.count else { return nil }
        let (c1, l1) = decodeScalar(p, j)
        func lower(_ v: UInt32) -> UInt32 {
            guard caseInsensitive else { return v }
            if v >= 0x41 && v <= 0x5A { return v + 0x20 }
            if v == 0x17F { return 0x73 }
            return v
        }
        let a = lower(c1)
        switch a {
        case 0x73, 0x74, 0x6D, 0x64: return j + l1  // 's 't 'm 'd
        case 0x72, 0x76, 0x6C:                        // 're 've 'll
            let k = j + l1
            guard k < p.count else { return nil }
            let (c2, l2) = decodeScalar(p, k)
            let want: UInt32 = a == 0x6C ? 0x6C : 0x65
            return lower(c2) == want ? k + l2 : nil
        default: return nil
        }
    }

    /// End of a run starting at `i` of scalars whose class satisfies `pred`, at most `limit` scalars.
    @inline(__always)
    static func run(_ p: UnsafeBufferPointer<UInt8>, _ i: Int, limit: Int = .max,
                    _ pred: (ScalarClass) -> Bool) -> Int {
        var j = i, count = 0
        while j < p.count, count < limit {
            let (v, l) = decodeScalar(p, j)
            guard pred(ScalarClass.of(v)) else { break }
            j += l
            count += 1
        }
        return j
    }

    /// `\s+(?!\S)|\s+` from `i`, a whitespace scalar: the run, minus its last scalar when a
    /// non-space follows and the run has more than one scalar.
    @inline(__always)
    static func trailingSpaceRule(_ p: UnsafeBufferPointer<UInt8>, _ i: Int, _ e: Int) -> Int {
        if e == p.count { return e }
        let last = previousScalarStart(p, e)
        return last > i ? last : e
    }

    static func gpt2Match(_ p: UnsafeBufferPointer<UInt8>, _ i: Int) -> Int {
        let (v, l) = decodeScalar(p, i)
        if v == 0x27, let e = contraction(p, i, caseInsensitive: false) { return e }
        let c = ScalarClass.of(v)
        var start = i, cur = c
        if v == 0x20, i + 1 < p.count { start = i + 1; cur = cls(p, start) }
        if cur.contains(.letter) { return run(p, start) { $0.contains(.letter) } }
        if cur.contains(.number) { return run(p, start) { $0.contains(.number) } }
        if isOther(cur) { return run(p, start, isOther) }
        if c.contains(.letter) { return run(p, i) { $0.contains(.letter) } }
        if c.contains(.number) { return run(p, i) { $0.contains(.number) } }
        if isOther(c) { return run(p, i, isOther) }
        // Whitespace (a lone trailing space lands here too).
        let e = run(p, i) { $0.contains(.space) }
        return e > i ? trailingSpaceRule(p, i, e) : i + l
    }

    static func llama3Match(_ p: UnsafeBufferPointer<UInt8>, _ i: Int, _ maxDigits: Int) -> Int {
        let (v, l) = decodeScalar(p, i)
        if v == 0x27, let e = contraction(p, i, caseInsensitive: true) { return e }
        let c = ScalarClass.of(v)
        // [^\r\n\p{L}\p{N}]?\p{L}+
        if c.contains(.letter) { return run(p, i) { $0.contains(.letter) } }
        if !c.contains(.newline), !c.contains(.number), i + l < p.count, cls(p, i + l).contains(.letter) {
            return run(p, i + l) { $0.contains(.letter) }
        }
        // \p{N}{1,maxDigits}
        if c.contains(.number) { return run(p, i, limit: maxDigits) { $0.contains(.number) } }
        // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
        var start = -1
        if v == 0x20, i + 1 < p.count, isOther(cls(p, i + 1)) { start = i + 1 } else if isOther(c) { start = i }
        if start >= 0 {
            var e = run(p, start, isOther)
            while e < p.count, p[e] == 0x0A || p[e] == 0x0D { e += 1 }
            return e
        }
        // Whitespace from here on. \s*[\r\n]+ ends after the run's last newline.
        let e = run(p, i) { $0.contains(.space) }
        guard e > i else { return i + l }
        var k = e
        while k > i {
            k -= 1
            if p[k] == 0x0A || p[k] == 0x0D { return k + 1 }
        }
        return trailingSpaceRule(p, i, e)
    }
}
