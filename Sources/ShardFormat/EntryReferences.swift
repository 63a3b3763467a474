/// Entry references (format 1.3, FORMAT.md section 4): a teacher's top entries at a position
/// resemble those at the last position with the same input token (the same two tokens,
/// preferably), so a band may name an entry by its index in that earlier position's list.

/// Finds each token's reference position inside a block, from the input ids alone, so that
/// writer and readers derive the same ones: the most recent earlier token of the block whose
/// (previous input, input) pair equals this token's, else the most recent with the same input,
/// else none. The block's first token has no previous input.
///
/// One open-addressing table holds both kinds of keys (a block of n tokens inserts at most 2n,
/// the table has at least 4n slots), cleared per block; a class so the hot loop touches raw
/// storage, not copy-on-write arrays.
final class ReferenceFinder {
    private var keys: UnsafeMutablePointer<UInt64>   // [slots] 0 = empty
    private var values: UnsafeMutablePointer<Int32>  // [slots] latest position of the key
    private var capacity = 1, slots = 0, shift: UInt64 = 64
    private var previous: UInt64 = 0                  // previous input id + 1; 0 = none
    private var position: Int32 = 0

    init() { keys = .allocate(capacity: 1); values = .allocate(capacity: 1) }
    deinit { keys.deallocate(); values.deallocate() }

    /// Starts a block of `tokens` tokens.
    func reset(tokens n: Int) {
        var s = 16, bits: UInt64 = 4
        while s < 4 * n { s <<= 1; bits += 1 }
        if s > capacity {
            keys.deallocate(); values.deallocate()
            keys = .allocate(capacity: s); values = .allocate(capacity: s); capacity = s
        }
        slots = s; shift = 64 - bits
        keys.update(repeating: 0, count: s)
        previous = 0; position = 0
    }

    /// Sets `key`'s position to `t`, returning its previous position or -1.
    @inline(__always) private func swap(_ key: UInt64, _ t: Int32) -> Int32 {
        var i = Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> shift)
        let mask = slots - 1
        while true {
            // Safe because i < slots (masked) and the table is never full (load <= 1/2).
            let k = keys[i]
            if k == key { let old = values[i]; values[i] = t; return old }
            if k == 0 { keys[i] = key; values[i] = t; return -1 }
            i = (i + 1) & mask
        }
    }

    /// The reference position (or -1) of the block's next token, whose input id is `x` (< 2^24).
    @inline(__always) func next(_ x: UInt32) -> Int {
        let pair = 1 << 63 | previous << 24 | UInt64(x)   // previous <= 2^24 fits bits 24...48
        let a = swap(pair, position), b = swap(UInt64(x) + 1, position)
        previous = UInt64(x) + 1; position += 1
        return Int(a >= 0 ? a : b)
    }
}

/// Zigzag code of a signed difference: 0, -1, 1, -2, … -> 0, 1, 2, 3, …
@inline(__always) func zigzag(_ d: Int32) -> UInt32 { UInt32(bitPattern: (d << 1) ^ (d >> 31)) }
/// Inverse of ``zigzag(_:)``.
@inline(__always) func unzigzag(_ z: UInt32) -> Int32 { Int32(bitPattern: (z >> 1) ^ (0 &- (z & 1))) }
