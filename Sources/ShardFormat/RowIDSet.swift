/// Finds a repeated id within one position's ids (entries or samples must be distinct,
/// FORMAT.md section 4) in O(ids) time: a bitset over the vocabulary, allocated once
/// (V/8 bytes, at most 2 MiB) and left empty after every query.
struct RowIDSet {
    private var words: [UInt64]   // [ceil(V / 64)] bit i set while id i is in the current row

    init(vocabularySize V: Int) { words = [UInt64](repeating: 0, count: (V + 63) / 64) }

    /// The first id of `id(0) ..< id(n)` that already occurred before it, or nil. Every id must
    /// be below the vocabulary size (callers check ids first; the array access is checked).
    mutating func firstRepeat(count n: Int, _ id: (Int) -> UInt32) -> UInt32? {
        var repeated: UInt32?
        var end = n
        for i in 0..<n {
            let x = Int(id(i)), bit = UInt64(1) << UInt64(x & 63)
            if words[x >> 6] & bit != 0 { repeated = UInt32(x); end = i; break }
            words[x >> 6] |= bit
        }
        for i in 0..<end { words[Int(id(i)) >> 6] = 0 }   // clear only the row's words: O(ids)
        return repeated
    }
}
