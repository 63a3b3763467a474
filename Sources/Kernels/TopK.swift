#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Streaming per-row top-K + logsumexp over values that arrive in vocabulary tiles, in
// ascending id order.
//
// Why a tile at a time: inserting every newcomer into the sorted top-K costs a mispredicted
// binary search and a shift of ~K/2 entries; on a trained 8000-token head that scalar work
// cost as much as the head GEMM itself (about 200 newcomers per row at K = 64). Here a tile is
// compared 16 values at a time against the current K-th value; the few that pass are
// collected, cut to their own top K by a quickselect when there are more than K (the first
// tile), sorted, and merged into the kept row once per tile.

/// One thread's scratch for the streaming top-K, reused for every row and tile it handles.
@usableFromInline struct TopKScratch {
    /// Most values one ``TopKAccumulator/consume(_:_:firstId:scratch:)`` call may pass.
    let tile: Int
    /// candidateValues, candidateIds (tile): a tile's values that pass the bound, ascending ids.
    let candidateValues: UnsafeMutablePointer<Float>
    let candidateIds: UnsafeMutablePointer<Int32>
    /// select (2, tile): the quickselect's two buffers (the side kept by a split, alternately).
    let select: UnsafeMutablePointer<Float>
    /// keys (max(tile, 64)): sort keys of the surviving candidates.
    let keys: UnsafeMutablePointer<UInt64>
    /// sortedValues, sortedIds (tile): the survivors in output order.
    let sortedValues: UnsafeMutablePointer<Float>
    let sortedIds: UnsafeMutablePointer<Int32>
    /// displacedValues, displacedIds (k): kept entries a merge moves down.
    let displacedValues: UnsafeMutablePointer<Float>
    let displacedIds: UnsafeMutablePointer<Int32>
}

/// Allocates the scratch of a streaming top-K with tiles of at most `tile` values (about
/// 32·tile + 8·k bytes) and passes it to `body`.
@inline(__always)
func withTopKScratch<R>(tile: Int, k: Int, _ body: (TopKScratch) -> R) -> R {
    let t = max(1, tile), kk = max(1, k)
    let floats = 4 * t + kk, ints = 2 * t + kk
    // Safe because both buffers are carved into disjoint ranges, used only inside body and freed after.
    let f = UnsafeMutablePointer<Float>.allocate(capacity: floats)
    let i = UnsafeMutablePointer<Int32>.allocate(capacity: ints)
    let keys = UnsafeMutablePointer<UInt64>.allocate(capacity: max(t, 64))
    defer { f.deallocate(); i.deallocate(); keys.deallocate() }
    return body(TopKScratch(tile: t, candidateValues: f, candidateIds: i, select: f + t, keys: keys,
                            sortedValues: f + 3 * t, sortedIds: i + t,
                            displacedValues: f + 4 * t, displacedIds: i + 2 * t))
}

/// The lanes of a 16-lane mask as the low 16 bits of an integer (lane j = bit j). The
/// library's `any`/`all` reduce lane by lane; this is a short tree of vector ORs.
@inline(__always)
func laneBits(_ m: SIMDMask<SIMD16<Int32>>) -> UInt32 {
    let weights = SIMD16<Int32>(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
    let b = SIMD16<Int32>(repeating: 0).replacing(with: weights, where: m)
    let b8 = b.lowHalf | b.highHalf, b4 = b8.lowHalf | b8.highHalf, b2 = b4.lowHalf | b4.highHalf
    return UInt32(bitPattern: b2[0] | b2[1])
}

/// Copies the elements of x[0..<n] for which `keep` holds, in order, to dst; returns how
/// many. Tested 16 at a time; only the kept lanes are touched one by one.
@inline(__always)
func compact(_ x: UnsafePointer<Float>, _ n: Int, into dst: UnsafeMutablePointer<Float>,
             _ keep: (SIMD16<Float>) -> SIMDMask<SIMD16<Int32>>, _ keepOne: (Float) -> Bool) -> Int {
    let raw = UnsafeRawPointer(x)
    var o = 0, i = 0
    while i + 16 <= n {
        // Safe because i+16 <= n elements exist and at most n are written to dst.
        var bits = laneBits(keep(raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)))
        while bits != 0 {
            dst[o] = x[i + bits.trailingZeroBitCount]; o += 1
            bits &= bits - 1
        }
        i += 16
    }
    while i < n { if keepOne(x[i]) { dst[o] = x[i]; o += 1 }; i += 1 }
    return o
}

/// The value at index `k-1` of src[0..<n] sorted descending (1 <= k <= n, no NaN).
///
/// Quickselect (pivot from 16 samples near the wanted rank, or a median of three below 128
/// values) with a three-way split (values above, equal to, below the pivot): the sides are
/// counted 16 lanes at a time, and only the side that holds
/// the answer is copied out; the equal band makes rows of repeated values (ties, -inf)
/// finish at once. buffers (2, n) scratch; src is only read.
func kthLargest(_ src: UnsafePointer<Float>, _ n: Int, _ k: Int, buffers: UnsafeMutablePointer<Float>) -> Float {
    precondition(k >= 1 && k <= n, "kthLargest: k=\(k) outside 1...\(n)")
    var a = src, count = n, t = k - 1
    var next = buffers, spare = buffers + n
    while true {
        // Safe because 0 <= t < count <= n throughout: the pivot's band is never empty, so
        // every round shrinks the range and still contains t; a side holds at most count.
        let p = count >= 128 ? sampledPivot(a, count, rank: t) : medianOfThree(a[0], a[count >> 1], a[count - 1])
        let p16 = SIMD16<Float>(repeating: p)
        var gt = SIMD16<Int32>(), lt = SIMD16<Int32>()
        let raw = UnsafeRawPointer(a)
        var i = 0
        while i + 16 <= count {
            // Safe because i+16 <= count elements exist.
            let v = raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
            gt &-= SIMD16<Int32>(repeating: 0).replacing(with: -1, where: v .> p16)
            lt &-= SIMD16<Int32>(repeating: 0).replacing(with: -1, where: v .< p16)
            i += 16
        }
        var above = Int(gt.wrappedSum()), below = Int(lt.wrappedSum())
        while i < count { above += a[i] > p ? 1 : 0; below += a[i] < p ? 1 : 0; i += 1 }
        if t < above {
            count = compact(a, count, into: next, { $0 .> p16 }, { $0 > p })
        } else if t < count - below {
            return p
        } else {
            t -= count - below
            count = compact(a, count, into: next, { $0 .< p16 }, { $0 < p })
        }
        a = UnsafePointer(next)
        swap(&next, &spare)
    }
}

@inline(__always)
func medianOfThree(_ x: Float, _ y: Float, _ z: Float) -> Float {
    Swift.max(Swift.min(x, y), Swift.min(Swift.max(x, y), z))
}

/// A pivot just below the element of descending rank `rank` in a[0..<n] (n >= 16), read off
/// 16 evenly spaced samples: the K-th largest of a tile sits far from the median, where a
/// median pivot would copy half the tile per round.
func sampledPivot(_ a: UnsafePointer<Float>, _ n: Int, rank t: Int) -> Float {
    var sample = SIMD16<Float>()
    // Safe because (2j+1)·n/32 < n for j < 16.
    for j in 0..<16 { sample[j] = a[(2 * j + 1) * n / 32] }
    // Descending insertion sort of the 16 samples.
    for j in 1..<16 {
        let v = sample[j]
        var p = j
        while p > 0 && sample[p - 1] < v { sample[p] = sample[p - 1]; p -= 1 }
        sample[p] = v
    }
    // The r-th largest sample (0-based) has expected rank (r+1)·n/17: take the first one
    // expected past rank t, so the answer usually lies in the small "above" side.
    return sample[Swift.min(15, (t + 1) * 17 / n)]
}

/// Sort key of (value, index) for descending value, ties by ascending index: the value's
/// bits made monotonic (−0 counted as +0, no NaN) above the complemented index.
@inline(__always)
func topKKey(_ v: Float, _ index: Int) -> UInt64 {
    let b = (v + 0).bitPattern  // −0 + 0 = +0: equal values get equal keys
    let ordered = b & 0x8000_0000 != 0 ? ~b : b | 0x8000_0000
    return UInt64(ordered) << 32 | UInt64(UInt32.max - UInt32(truncatingIfNeeded: index))
}

/// Copies the values of x[0..<n] that are >= `bound`, with their ids firstId + index, to the
/// scratch's candidates in ascending id order; returns how many (<= n <= tile).
///
/// After the first tile almost nothing passes, so four vectors are tested with one mask
/// reduction and only a block with a hit is looked at lane by lane.
@inline(__always)
func collectCandidates(_ x: UnsafePointer<Float>, _ n: Int, atLeast bound: Float, firstId: Int,
                       into s: TopKScratch) -> Int {
    let b = SIMD16<Float>(repeating: bound)
    let lane = SIMD16<Int32>(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
    let raw = UnsafeRawPointer(x)
    let cv = s.candidateValues, ci = s.candidateIds
    var c = 0
    // Gathers the passing lanes of the 16 values at i.
    func gather(_ i: Int) {
        // Safe because i+16 <= n elements exist and at most n candidates are written.
        let v = raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
        var bits = laneBits(v .>= b)
        if bits == 0xFFFF {
            UnsafeMutableRawPointer(cv + c).storeBytes(of: v, as: SIMD16<Float>.self)
            UnsafeMutableRawPointer(ci + c).storeBytes(of: lane &+ Int32(truncatingIfNeeded: firstId + i), as: SIMD16<Int32>.self)
            c += 16
            return
        }
        while bits != 0 {
            let j = bits.trailingZeroBitCount
            cv[c] = x[i + j]; ci[c] = Int32(truncatingIfNeeded: firstId + i + j)
            c += 1
            bits &= bits - 1
        }
    }
    var i = 0
    while i + 64 <= n {
        // Safe because i+64 <= n elements exist.
        let v0 = raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
        let v1 = raw.loadUnaligned(fromByteOffset: i * 4 + 64, as: SIMD16<Float>.self)
        let v2 = raw.loadUnaligned(fromByteOffset: i * 4 + 128, as: SIMD16<Float>.self)
        let v3 = raw.loadUnaligned(fromByteOffset: i * 4 + 192, as: SIMD16<Float>.self)
        if laneBits((v0 .>= b) .| (v1 .>= b) .| (v2 .>= b) .| (v3 .>= b)) != 0 {
            gather(i); gather(i + 16); gather(i + 32); gather(i + 48)
        }
        i += 64
    }
    while i + 16 <= n { gather(i); i += 16 }
    while i < n {
        // Safe because i < n.
        if x[i] >= bound { cv[c] = x[i]; ci[c] = Int32(truncatingIfNeeded: firstId + i); c += 1 }
        i += 1
    }
    return c
}

/// e^x for lanes x <= 0 (NaN lanes give NaN): ``simdExp(_:)``'s reduction and polynomial with
/// fused multiply-adds and without its upper clamp. The logsumexp of every vocabulary row
/// runs through it, where the separate multiplies and adds were a third of the selection cost.
@inline(__always)
func expNonPositive(_ x: SIMD16<Float>) -> SIMD16<Float> {
    let lo = SIMD16<Float>(repeating: -87.3)
    let under = x .< lo
    let v = x.replacing(with: lo, where: under)
    let t = SIMD16<Float>(repeating: 12_582_912).addingProduct(v, 1.442_695_040_888_963_4)
    let n = t - 12_582_912
    let r = v.addingProduct(n, -0.693_359_375).addingProduct(n, 2.121_944_400_546_905_827_679e-4)
    var p = SIMD16<Float>(repeating: 1.398_199_950_7e-3).addingProduct(SIMD16(repeating: 1.987_569_150_0e-4), r)
    p = SIMD16<Float>(repeating: 8.333_451_907_3e-3).addingProduct(p, r)
    p = SIMD16<Float>(repeating: 4.166_579_589_4e-2).addingProduct(p, r)
    p = SIMD16<Float>(repeating: 1.666_666_545_9e-1).addingProduct(p, r)
    p = SIMD16<Float>(repeating: 5.000_000_120_1e-1).addingProduct(p, r)
    p = (r + 1).addingProduct(p, r * r)
    // Safe because SIMD16<Int32> and SIMD16<Float> have the same size; these are bit casts.
    let bits = (unsafeBitCast(t, to: SIMD16<Int32>.self) &- 0x4B40_0000 &+ 127) &<< 23
    return (p * unsafeBitCast(bits, to: SIMD16<Float>.self)).replacing(with: 0, where: under)
}

/// Σ e^(x[i] - shift) over n elements, all <= shift, 64 lanes per step in four independent
/// sums (tail through a -inf padded vector). Not `sumExp`: that one serves softmax and the
/// losses, whose rounding training results depend on; here x <= shift allows the cheaper
/// `expNonPositive` and four sums for the fused head's throughput.
@inline(__always)
func sumExpBelow(_ x: UnsafePointer<Float>, _ n: Int, _ shift: Float) -> Float {
    var s0 = SIMD16<Float>(), s1 = s0, s2 = s0, s3 = s0
    let raw = UnsafeRawPointer(x)
    let sh = SIMD16<Float>(repeating: shift)
    var i = 0
    while i + 64 <= n {
        // Safe because i+64 <= n elements exist.
        s0 += expNonPositive(raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self) - sh)
        s1 += expNonPositive(raw.loadUnaligned(fromByteOffset: i * 4 + 64, as: SIMD16<Float>.self) - sh)
        s2 += expNonPositive(raw.loadUnaligned(fromByteOffset: i * 4 + 128, as: SIMD16<Float>.self) - sh)
        s3 += expNonPositive(raw.loadUnaligned(fromByteOffset: i * 4 + 192, as: SIMD16<Float>.self) - sh)
        i += 64
    }
    while i + 16 <= n {
        // Safe because i+16 <= n elements exist.
        s0 += expNonPositive(raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self) - sh)
        i += 16
    }
    if i < n {
        var v = SIMD16<Float>(repeating: -.infinity)
        // Safe because only the n-i remaining elements are read.
        for j in 0..<(n - i) { v[j] = x[i + j] }
        s1 += expNonPositive(v - sh)
    }
    let s = (s0 + s1) + (s2 + s3)
    let s8 = s.lowHalf + s.highHalf, s4 = s8.lowHalf + s8.highHalf, s2h = s4.lowHalf + s4.highHalf
    return s2h[0] + s2h[1]
}

/// Whether x[0..<n] holds a NaN, 16 lanes at a time.
@inline(__always)
func containsNaN(_ x: UnsafePointer<Float>, _ n: Int) -> Bool {
    var nan = SIMDMask<SIMD16<Int32>>(repeating: false)
    let raw = UnsafeRawPointer(x)
    var i = 0
    while i + 16 <= n {
        // Safe because i+16 <= n elements exist.
        let v = raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
        nan .|= v .!= v
        i += 16
    }
    if laneBits(nan) != 0 { return true }
    while i < n { if x[i].isNaN { return true }; i += 1 }
    return false
}

/// Streaming per-row top-K and logsumexp over values that arrive in ascending id order.
/// Holds the K best (value, id) pairs sorted by value descending, ties by lower id — which,
/// since ids arrive ascending, means a newcomer must be strictly greater than the worst kept
/// once K are kept. NaN never enters. Slots past the number of non-NaN values seen are left
/// untouched.
@usableFromInline
struct TopKAccumulator {
    /// vals (k), ids (k): the output row itself, filled in place.
    let vals: UnsafeMutablePointer<Float>
    let ids: UnsafeMutablePointer<Int32>
    let k: Int
    var filled = 0
    /// Running maximum and Σ e^(x - maximum) for the logsumexp.
    var maximum: Float = -.infinity
    var sum: Double = 0

    init(vals: UnsafeMutablePointer<Float>, ids: UnsafeMutablePointer<Int32>, k: Int) {
        self.vals = vals; self.ids = ids; self.k = k
    }

    /// Feeds values x (n) with ids firstId..<firstId+n; n <= `scratch.tile`.
    @inline(__always)
    mutating func consume(_ x: UnsafePointer<Float>, _ n: Int, firstId: Int, scratch s: TopKScratch) {
        guard n > 0 else { return }
        precondition(n <= s.tile, "TopKAccumulator: \(n) values exceed the scratch tile \(s.tile)")
        let m = rowMax(x, n)
        if m > maximum {
            if maximum != -.infinity { sum *= Double(scalarExp(maximum - m)) }
            maximum = m
        }
        let finite = maximum != -.infinity && maximum != .infinity
        // Until K are kept every non-NaN value is a candidate (v >= -inf); then only values
        // strictly above the K-th kept one (v >= its successor). A kept +inf admits nothing.
        let full = filled == k
        let collect = k > 0 && !(full && vals[k - 1] == .infinity)
        var bound = full && k > 0 ? vals[k - 1].nextUp : -Float.infinity
        if !full && k > 0 && n > k && !containsNaN(x, n) {
            // Before K are kept (the first tile): nothing below the tile's own K-th value can
            // enter, and selecting it up front saves collecting the whole tile.
            bound = kthLargest(x, n, k, buffers: s.select)
        }
        if finite { sum += Double(sumExpBelow(x, n, maximum)) }
        if collect {
            let c = collectCandidates(x, n, atLeast: bound, firstId: firstId, into: s)
            if c > 0 { merge(s, count: c) }
        }
    }

    /// Merges the tile's `count` candidates (ascending ids, all above the bound) into the kept row.
    @inline(never)
    mutating func merge(_ s: TopKScratch, count: Int) {
        let cv = s.candidateValues, ci = s.candidateIds, vals = self.vals, ids = self.ids
        var c = count
        if c > k {
            // Only the candidates' own top K can enter: everything above their K-th value and,
            // of the values equal to it, the lowest ids (the first ones, ids being ascending).
            let t = kthLargest(cv, c, k, buffers: s.select)
            var above = 0
            for j in 0..<c { above &+= cv[j] > t ? 1 : 0 }
            var ties = k - above, o = 0
            for j in 0..<c {
                // Safe because o <= j: the compaction writes only slots already read.
                let v = cv[j], id = ci[j]
                let tie = v == t && ties > 0
                cv[o] = v; ci[o] = id
                o &+= v > t || tie ? 1 : 0
                ties &-= tie ? 1 : 0
            }
            c = o
        }
        // Sort descending by value, ties by candidate order (= ascending id).
        let sv = s.sortedValues, si = s.sortedIds, keys = s.keys
        for j in 0..<c { keys[j] = topKKey(cv[j], j) }
        if c <= 64 {
            // Rank sort: a key's slot is the number of keys above it (keys are distinct), found
            // 8 keys at a time without a branch — cheaper than any comparison sort at this size.
            let padded = (c + 7) & ~7
            for j in c..<padded { keys[j] = 0 }  // below every real key
            let kp = UnsafeRawPointer(keys)
            for i in 0..<c {
                let ki = SIMD8<UInt64>(repeating: keys[i])
                var above = SIMD8<Int64>()
                var j = 0
                while j < padded {
                    // Safe because j+8 <= padded <= 64 keys exist.
                    let kv = kp.loadUnaligned(fromByteOffset: j * 8, as: SIMD8<UInt64>.self)
                    above &-= SIMD8<Int64>(repeating: 0).replacing(with: -1, where: kv .> ki)
                    j += 8
                }
                let a4 = above.lowHalf &+ above.highHalf, a2 = a4.lowHalf &+ a4.highHalf
                let r = Int(a2[0] &+ a2[1])
                // Safe because r < c: at most c-1 keys are above any one.
                sv[r] = cv[i]; si[r] = ci[i]
            }
        } else {
            // Safe because c <= tile keys were written.
            var all = UnsafeMutableBufferPointer(start: keys, count: c)
            all.sort(by: >)
            for j in 0..<c {
                let from = Int(UInt32.max - UInt32(truncatingIfNeeded: keys[j]))
                // Safe because `from` is a candidate index < c.
                sv[j] = cv[from]; si[j] = ci[from]
            }
        }
        // Kept entries from the first one below the best candidate move down; equal values
        // stay ahead (their ids are lower).
        let best = sv[0]
        var lo = 0, hi = filled
        while lo < hi {
            let mid = (lo + hi) >> 1
            // Safe because mid < filled <= k.
            if vals[mid] < best { hi = mid } else { lo = mid + 1 }
        }
        let total = Swift.min(k, filled + c)
        let moved = filled - lo
        let dv = s.displacedValues, di = s.displacedIds
        // Safe because lo + moved = filled <= k, the displaced buffers' size.
        for j in 0..<moved { dv[j] = vals[lo + j]; di[j] = ids[lo + j] }
        var a = 0, b = 0, o = lo
        while o < total {
            let kept = a < moved && (b >= c || dv[a] >= sv[b])
            // Safe because o < total <= k and a < moved, b < c when read.
            if kept { vals[o] = dv[a]; ids[o] = di[a]; a += 1 } else { vals[o] = sv[b]; ids[o] = si[b]; b += 1 }
            o += 1
        }
        filled = total
    }

    var logsumexp: Float {
        if maximum == -.infinity || maximum == .infinity || maximum.isNaN { return maximum }
        return maximum + Float(log(sum))
    }
}

/// Per-row top-K and logsumexp of full logits.
///
/// logits (rows, V) -> topIds (rows, k), topLogits (rows, k) in descending order, ties broken
/// by lower id; logsumexp (rows) over the full row. NaN logits never enter the top-K.
/// Results are bit-identical to ``lmHeadTopK(hidden:rows:weight:k:scale:topIds:topLogits:logsumexp:targets:targetLogits:pool:)``
/// on the same logits. k must be <= V.
///
/// API status: final.
public func topKLogsumexp(logits: UnsafePointer<Float>, rows: Int, vocab V: Int, k: Int,
                          topIds: UnsafeMutablePointer<Int32>, topLogits: UnsafeMutablePointer<Float>,
                          logsumexp lse: UnsafeMutablePointer<Float>, pool: ThreadPool) {
    precondition(k >= 0 && k <= V, "topKLogsumexp: k=\(k) outside 0...\(V)")
    pool.parallelFor(rows) { rs in
        withTopKScratch(tile: lmHeadTileV, k: k) { scratch in
            for r in rs {
                // Safe because r < rows keeps every access inside row r of each buffer.
                var acc = TopKAccumulator(vals: topLogits + r * k, ids: topIds + r * k, k: k)
                // Same vocabulary tiles as lmHeadTopK, so both paths round identically.
                var n0 = 0
                while n0 < V {
                    let w = min(lmHeadTileV, V - n0)
                    acc.consume(logits + r * V + n0, w, firstId: n0, scratch: scratch)
                    n0 += w
                }
                lse[r] = acc.logsumexp
            }
        }
    }
}
