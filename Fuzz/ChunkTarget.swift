// libFuzzer target: chunk decoding for every codec (none, lz4, zstd) and filter (raw, planes,
// buckets, delta-buckets), dictionaries, next-token links, entry references, quantised and
// float32 log-probs and samples.
//
// Input: a whole shard file. The footer's chunk checksums and the trailer are recomputed first
// (FuzzHarness.withChunkChecksums), so mutated chunk bytes reach the decoders instead of the
// checksum check. When the footer parses, every block is decoded as CacheVerifier does (all
// bands, with samples) and its values checked; then band 0 alone without samples (the prefix
// read of k <= e_1, which links and references make differ from the full read).

import Foundation
@testable import ShardFormat

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let input = FuzzHarness.bytes(data, size)
    let shard = FuzzHarness.withChunkChecksums(input) ?? FuzzHarness.withFooterChecksum(input) ?? input
    let path = FuzzHarness.path("chunks.lcs")
    FuzzHarness.write(shard, to: path)
    defer { FuzzHarness.remove("chunks.lcs") }
    guard let r = try? ShardReader(path: path) else { return 0 }
    let L = r.layout, m = L.bands.count - 1
    let scratch = DecodeScratch()
    var rowIDs = RowIDSet(vocabularySize: L.vocabularySize)
    for b in L.blocks.indices {
        do {
            try r.decodeBlock(b, bandCount: m, samples: true, into: scratch.block, decoder: scratch.decoder)
            checkDecoded(scratch.block, L, block: b, bands: m)
            try CacheVerifier.checkValues(scratch.block, layout: L, file: path, block: b, rowIDs: &rowIDs)
        } catch {
            _ = "\(error)"
        }
    }
    if m > 1 {
        let one = DecodeScratch()
        for b in L.blocks.indices {
            do {
                try r.decodeBlock(b, bandCount: 1, samples: false, into: one.block, decoder: one.decoder)
                checkDecoded(one.block, L, block: b, bands: 1)
            } catch {
                _ = "\(error)"
            }
        }
    }
    return 0
}

/// What a successful decodeBlock promises its readers (CacheReader.scatter copies by these
/// counts without checking): per-token columns of n values, band j holding exactly the
/// entries the counts give it, ids below V.
private func checkDecoded(_ d: DecodedBlock, _ L: ShardLayout, block b: Int, bands m: Int) {
    let n = L.blocks[b].tokens
    check(d.tokens == n && d.bandsDecoded >= min(m, L.bands.count - 1), "block \(b): \(d.tokens) tokens, \(d.bandsDecoded) bands")
    for c in [d.inputIDs, d.nextLogProb, d.logSumExp, d.entryCount] {
        check(c.count == n && (n == 0 || c.base != nil), "block \(b): a per-token column has \(c.count) values, not \(n)")
    }
    let V = UInt32(L.vocabularySize)
    for t in 0..<n { check(d.inputIDs[t] < V, "block \(b): input id \(d.inputIDs[t]) >= V") }
    for j in 0..<d.bandsDecoded {
        let lo = L.bands[j], hi = L.bands[j + 1]
        var expect = 0
        for t in 0..<n { let c = Int(d.entryCount[t]); if c > lo { expect += min(c, hi) - lo } }
        check(d.bandIDs[j].count == expect && d.bandLogProbs[j].count == expect,
                     "block \(b) band \(j): \(d.bandIDs[j].count) ids, \(d.bandLogProbs[j].count) log-probs, counts imply \(expect)")
        for i in 0..<expect { check(d.bandIDs[j][i] < V, "block \(b) band \(j): id \(d.bandIDs[j][i]) >= V") }
    }
    if d.hasSamples {
        var s = 0
        for t in 0..<n { s += Int(d.sampleCount[t]) }
        check(d.sampleIDs.count == s && d.sampleDraws.count == s, "block \(b): \(d.sampleIDs.count) sampled ids for \(s)")
        for i in 0..<s { check(d.sampleIDs[i] < V, "block \(b): sampled id >= V") }
    }
}
