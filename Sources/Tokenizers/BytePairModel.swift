/// The BPE model of a byte-level tokenizer, working on raw bytes: every vocabulary entry made
/// of byte-level characters is stored as the bytes it stands for, so a word never needs to be
/// mapped to characters and back.
struct BytePairModel: Sendable {
    /// `byteIds[b]`: id of the single-byte token for byte `b`, or -1 when the vocabulary lacks it.
    let byteIds: [Int64]
    /// (left id << 32 | right id) -> (rank << 32 | merged id). Lower rank merges first.
    let merges: [UInt64: UInt64]
    /// Whole-word lookup for `ignore_merges` (Llama 3): a word that is itself a token is not split.
    let wordIds: [[UInt8]: UInt32]
    let ignoreMerges: Bool
    /// The `unk_token` id, used for a byte the vocabulary lacks; nil drops such a byte, as the
    /// `tokenizers` library does.
    let unkId: UInt32?
    let fuseUnk: Bool

    @inline(__always) static func key(_ a: UInt32, _ b: UInt32) -> UInt64 { UInt64(a) << 32 | UInt64(b) }

    /// Appends the ids of one pre-tokenised word.
    func tokenize(_ word: UnsafeBufferPointer<UInt8>, into out: inout [UInt32]) {
        if word.isEmpty { return }
        if ignoreMerges, let id = wordIds[Array(word)] { out.append(id); return }
        var syms: [UInt32] = []
        syms.reserveCapacity(word.count)
        var lastWasUnk = false
        for b in word {
            let id = byteIds[Int(b)]
            if id >= 0 {
                syms.append(UInt32(id)); lastWasUnk = false
            } else if let unk = unkId {
                if !(fuseUnk && lastWasUnk) { syms.append(unk) }
                lastWasUnk = true
            }
        }
        if syms.count > 24 { mergeWithHeap(&syms) } else { mergeByScan(&syms) }
        out.append(contentsOf: syms)
    }

    /// Short words: repeatedly merge the lowest-rank adjacent pair, leftmost on ties.
    func mergeByScan(_ syms: inout [UInt32]) {
        while syms.count > 1 {
            var best = UInt64.max, at = -1
            for i in 0..<(syms.count - 1) {
                if let m = merges[Self.key(syms[i], syms[i + 1])], m < best { best = m; at = i }
            }
            if at < 0 { return }
            syms[at] = UInt32(truncatingIfNeeded: best)
            syms.remove(at: at + 1)
        }
    }

    /// Long words: the same order (lowest rank, then leftmost) with a min-heap of candidate
    /// pairs and a linked list of symbols, O(n log n). Stale heap entries are skipped.
    func mergeWithHeap(_ syms: inout [UInt32]) {
        let n = syms.count
        var next = Array(1...n)            // n means none
        var prev = Array(-1..<(n - 1))     // -1 means none
        var alive = [Bool](repeating: true, count: n)
        var heap = MinHeap()
        for i in 0..<(n - 1) {
            if let m = merges[Self.key(syms[i], syms[i + 1])] { heap.push((m >> 32) << 32 | UInt64(i)) }
        }
        while let top = heap.pop() {
            let rank = top >> 32, i = Int(top & 0xFFFF_FFFF)
            guard alive[i], next[i] < n else { continue }
            let j = next[i]
            guard let m = merges[Self.key(syms[i], syms[j])], m >> 32 == rank else { continue }
            syms[i] = UInt32(truncatingIfNeeded: m)
            alive[j] = false
            next[i] = next[j]
            if next[j] < n { prev[next[j]] = i }
            if prev[i] >= 0, let m2 = merges[Self.key(syms[prev[i]], syms[i])] {
                heap.push((m2 >> 32) << 32 | UInt64(prev[i]))
            }
            if next[i] < n, let m2 = merges[Self.key(syms[i], syms[next[i]])] {
                heap.push((m2 >> 32) << 32 | UInt64(i))
            }
        }
        var out: [UInt32] = []
        out.reserveCapacity(n)
        var i = 0
        while i < n { out.append(syms[i]); i = next[i] }
        syms = out
    }
}

/// A binary min-heap of packed (rank << 32 | position) keys.
struct MinHeap {
    private var a: [UInt64] = []

    mutating func push(_ x: UInt64) {
        a.append(x)
        var i = a.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            if a[parent] <= a[i] { break }
            a.swapAt(parent, i)
            i = parent
        }
    }

    mutating func pop() -> UInt64? {
        guard let top = a.first else { return nil }
        let last = a.removeLast()
        if a.isEmpty { return top }
        a[0] = last
        var i = 0
        while true {
            let l = 2 * i + 1, r = l + 1
            var m = i
            if l < a.count, a[l] < a[m] { m = l }
            if r < a.count, a[r] < a[m] { m = r }
            if m == i { break }
            a.swapAt(i, m)
            i = m
        }
        return top
    }
}
