/// How a `Split` pre-tokenizer treats the delimiters it finds (`behavior` in the file).
enum SplitBehavior: String {
    case isolated = "Isolated", removed = "Removed", mergedWithPrevious = "MergedWithPrevious"
    case mergedWithNext = "MergedWithNext", contiguous = "Contiguous"
}

/// One step of pre-tokenisation, applied to every piece the previous steps produced.
enum PreTokenizerStep {
    case split(SplitPattern, SplitBehavior, invert: Bool)
    /// Byte-level mapping; with `useRegex` also the GPT-2 split. It must be the last step:
    /// after it the pieces are byte-level characters, which the scanners do not model.
    case byteLevel(addPrefixSpace: Bool, useRegex: Bool)

    /// The pieces of `p` (byte ranges into `p`), following `NormalizedString::split` of the
    /// `tokenizers` library: matches and gaps are paired per `behavior`, empty pieces dropped.
    static func split(_ p: UnsafeBufferPointer<UInt8>, _ pattern: SplitPattern, _ behavior: SplitBehavior,
                      invert: Bool, into out: inout [Range<Int>]) {
        if p.isEmpty { return }
        var found: [Range<Int>] = []
        pattern.matches(p, into: &found)
        // The whole piece as alternating (range, isMatch) spans.
        var spans: [(Range<Int>, Bool)] = []
        spans.reserveCapacity(found.count * 2 + 1)
        var prev = 0
        for m in found {
            if prev != m.lowerBound { spans.append((prev..<m.lowerBound, invert)) }
            spans.append((m, !invert))
            prev = m.upperBound
        }
        if prev != p.count { spans.append((prev..<p.count, invert)) }

        var pieces: [(Range<Int>, Bool)] = []  // (range, remove)
        switch behavior {
        case .isolated:
            pieces = spans.map { ($0.0, false) }
        case .removed:
            pieces = spans
        case .contiguous:
            var previousMatch = false
            for (r, isMatch) in spans {
                if isMatch == previousMatch, let last = pieces.last {
                    pieces[pieces.count - 1] = (last.0.lowerBound..<r.upperBound, false)
                } else {
                    pieces.append((r, false))
                }
                previousMatch = isMatch
            }
        case .mergedWithPrevious:
            var previousMatch = false
            for (r, isMatch) in spans {
                if isMatch, !previousMatch, let last = pieces.last {
                    pieces[pieces.count - 1] = (last.0.lowerBound..<r.upperBound, false)
                } else {
                    pieces.append((r, false))
                }
                previousMatch = isMatch
            }
        case .mergedWithNext:
            var previousMatch = false
            for (r, isMatch) in spans.reversed() {
                if isMatch, !previousMatch, let last = pieces.last {
                    pieces[pieces.count - 1] = (r.lowerBound..<last.0.upperBound, false)
                } else {
                    pieces.append((r, false))
                }
                previousMatch = isMatch
            }
            pieces.reverse()
        }
        for (r, remove) in pieces where !remove && !r.isEmpty { out.append(r) }
    }
}

/// The pre-tokenizer pipeline: feeds each final piece (a word, as raw bytes) to `body`.
struct PreTokenizer {
    var steps: [PreTokenizerStep]

    func forEachWord(_ text: ArraySlice<UInt8>, _ body: (UnsafeBufferPointer<UInt8>) -> Void) {
        text.withUnsafeBufferPointer { run($0, step: 0, body) }
    }

    private func run(_ p: UnsafeBufferPointer<UInt8>, step: Int, _ body: (UnsafeBufferPointer<UInt8>) -> Void) {
        if p.isEmpty { return }
        guard step < steps.count else { body(p); return }
        switch steps[step] {
        case let .split(pattern, behavior, invert):
            var pieces: [Range<Int>] = []
            PreTokenizerStep.split(p, pattern, behavior, invert: invert, into: &pieces)
            for r in pieces { run(UnsafeBufferPointer(rebasing: p[r]), step: step + 1, body) }
        case let .byteLevel(addPrefixSpace, useRegex):
            if addPrefixSpace && p[0] != 0x20 {
                var prefixed = [UInt8](repeating: 0x20, count: p.count + 1)
                prefixed.withUnsafeMutableBufferPointer { q in
                    // Safe because q has p.count + 1 elements and we write from index 1.
                    _ = UnsafeMutableBufferPointer(rebasing: q[1...]).initialize(from: p)
                }
                prefixed.withUnsafeBufferPointer { q in byteLevel(q, useRegex: useRegex, step: step, body) }
            } else {
                byteLevel(p, useRegex: useRegex, step: step, body)
            }
        }
    }

    private func byteLevel(_ p: UnsafeBufferPointer<UInt8>, useRegex: Bool, step: Int,
                           _ body: (UnsafeBufferPointer<UInt8>) -> Void) {
        guard useRegex else { run(p, step: step + 1, body); return }
        var pieces: [Range<Int>] = []
        PreTokenizerStep.split(p, .gpt2, .isolated, invert: false, into: &pieces)
        for r in pieces { run(UnsafeBufferPointer(rebasing: p[r]), step: step + 1, body) }
    }
}
