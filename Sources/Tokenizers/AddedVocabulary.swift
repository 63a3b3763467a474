/// One entry of `added_tokens` in a `tokenizer.json`.
public struct AddedToken: Sendable, Equatable {
    public var id: UInt32
    public var content: String
    /// Matches only when not inside a word (no `\w` character touching either end).
    public var singleWord: Bool
    /// Also swallows the whitespace before it.
    public var lstrip: Bool
    /// Also swallows the whitespace after it.
    public var rstrip: Bool
    /// Matched against the normalised text (after the normalizer) rather than the raw text.
    public var normalized: Bool
    /// Special tokens are skipped by `decode(_:skipSpecialTokens:)`.
    public var special: Bool
}

/// A segment of the input after added tokens are extracted.
enum Segment {
    case token(UInt32)
    case text(ArraySlice<UInt8>)
}

/// Finds added tokens in text with the semantics of the `tokenizers` library's
/// `AddedVocabulary`: leftmost-longest matching (its Aho-Corasick automaton), then the
/// `single_word`, `lstrip` and `rstrip` rules.
struct AddedTokenMatcher: Sendable {
    /// A byte trie. Node 0 is the root; `terminal[n]` is the index into `tokens` ending there.
    private var children: [[(UInt8, Int32)]] = [[]]
    private var terminal: [Int32] = [-1]
    private var firstByte = [Bool](repeating: false, count: 256)
    private var tokens: [AddedToken] = []

    var isEmpty: Bool { tokens.isEmpty }

    /// `patterns` are the byte strings to look for (the content, normalised when the token is).
    init(_ entries: [(pattern: [UInt8], token: AddedToken)]) {
        for (pattern, token) in entries where !pattern.isEmpty {
            var node = 0
            for b in pattern {
                if let child = children[node].first(where: { $0.0 == b }) {
                    node = Int(child.1)
                } else {
                    children.append([]); terminal.append(-1)
                    children[node].append((b, Int32(children.count - 1)))
                    node = children.count - 1
                }
            }
            // The first token given for a pattern wins, like the automaton's first pattern.
            if terminal[node] < 0 { terminal[node] = Int32(tokens.count); tokens.append(token) }
            firstByte[Int(pattern[0])] = true
        }
    }

    /// Longest pattern starting at `i`: (end, token index), or nil.
    private func longestMatch(_ p: UnsafeBufferPointer<UInt8>, _ i: Int) -> (Int, Int)? {
        var node = 0, j = i
        var best: (Int, Int)? = nil
        while j < p.count, let child = children[node].first(where: { $0.0 == p[j] }) {
            node = Int(child.1)
            j += 1
            if terminal[node] >= 0 { best = (j, Int(terminal[node])) }
        }
        return best
    }

    /// Splits `text` into added tokens and the text between them; empty texts are dropped.
    func split(_ text: ArraySlice<UInt8>, into out: inout [Segment]) {
        if text.isEmpty { return }
        if tokens.isEmpty { out.append(.text(text)); return }
        text.withUnsafeBufferPointer { p in
            let base = text.startIndex
            var startOffset = 0
            var i = 0
            while i < p.count {
                guard firstByte[Int(p[i])], let (stop0, t) = longestMatch(p, i) else { i += 1; continue }
                var start = i, stop = stop0
                i = stop0  // matches do not overlap, whatever the rules below decide
                let token = tokens[t]
                if token.singleWord {
                    let startSpace = start == 0 || !endsWithWord(p, start)
                    let stopSpace = stop == p.count || !ScalarClass.of(decodeScalar(p, stop).0).contains(.word)
                    if !startSpace || !stopSpace { continue }
                }
                if token.lstrip {
                    var s = start
                    while s > 0 {
                        let q = previousScalarStart(p, s)
                        guard ScalarClass.of(decodeScalar(p, q).0).contains(.space) else { break }
                        s = q
                    }
                    start = max(s, startOffset)
                }
                if token.rstrip {
                    while stop < p.count {
                        let (v, l) = decodeScalar(p, stop)
                        guard ScalarClass.of(v).contains(.space) else { break }
                        stop += l
                    }
                }
                if startOffset < start { out.append(.text(text[(base + startOffset)..<(base + start)])) }
                out.append(.token(token.id))
                startOffset = stop
            }
            if startOffset < p.count { out.append(.text(text[(base + startOffset)..<(base + p.count)])) }
        }
    }

    private func endsWithWord(_ p: UnsafeBufferPointer<UInt8>, _ end: Int) -> Bool {
        let q = previousScalarStart(p, end)
        return ScalarClass.of(decodeScalar(p, q).0).contains(.word)
    }
}
