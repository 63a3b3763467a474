import ShardFormat

/// The tokenised corpus as one stream: every document's ids followed by the end-of-text id
/// (pre-tokenised documents already carry their separators and are taken as they are).
///
/// Memory: 4 bytes per token plus 24 bytes per document.
public struct TokenStream: Sendable, Equatable {
    /// All ids, documents back to back. Shape [totalTokens].
    public private(set) var ids: [Int32] = []
    /// Start of each document in `ids`, ascending. Shape [documents].
    public private(set) var documentStarts: [Int] = []
    /// Content key of each document. Shape [documents].
    public private(set) var documentKeys: [DocumentHash] = []

    public init() {}

    /// Appends one document's ids; `endOfText` is appended after them when given.
    public mutating func append(_ tokens: [Int32], key: DocumentHash, endOfText: Int32?) {
        guard !tokens.isEmpty || endOfText != nil else { return }
        documentStarts.append(ids.count)
        documentKeys.append(key)
        ids.append(contentsOf: tokens)
        if let e = endOfText { ids.append(e) }
    }

    /// The number of windows of `context` tokens the stream cuts into. Each window needs the
    /// token after it as the last target, so `n` tokens give ceil((n - 1) / context) windows.
    public func windowCount(context: Int) -> Int {
        precondition(context > 0, "context must be positive")
        return ids.count < 2 ? 0 : (ids.count - 1 + context - 1) / context
    }

    /// Window `w`: inputs `ids[s ..< s+L]`, next tokens `ids[s+1 ..< s+L+1]`, where
    /// `s = w * context` and `L = min(context, count - 1 - s)`; only the last window is short.
    /// Every window's last label exists (`sequenceEnd` is the stream's length).
    public func window(_ w: Int, context: Int) -> Window {
        let start = w * context
        let length = min(context, ids.count - 1 - start)
        precondition(w >= 0 && length > 0, "window \(w) out of range")
        return Window(firstToken: start, length: length, sequenceEnd: ids.count)
    }

    /// The document that position `p` of the stream lies in: its key, and `p`'s offset inside
    /// it in tokens (the key and offset a cache records for a sequence starting at `p`).
    public func document(at p: Int) -> (key: DocumentHash, offset: Int) {
        // The last document starting at or before `p`.
        var lo = 0, hi = documentStarts.count - 1
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if documentStarts[mid] <= p { lo = mid } else { hi = mid - 1 }
        }
        return (documentKeys[lo], p - documentStarts[lo])
    }
}
