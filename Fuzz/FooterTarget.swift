// libFuzzer target: shard bytes -> trailer, footer checksum, footer JSON -> ShardLayout.
//
// Input: a whole shard file. It is opened as it is, then (when the trailer frames a footer
// whose checksum is wrong) again with the footer checksum recomputed, so mutations of the
// footer JSON reach the JSON decoder and every check of ShardLayout. When a shard opens, the
// promises ShardLayout makes to the decoder are asserted (a failure is a validator bug).

import Foundation
@testable import ShardFormat

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let input = FuzzHarness.bytes(data, size)
    openShard(input)
    if let fixed = FuzzHarness.withFooterChecksum(input) { openShard(fixed) }
    return 0
}

private func openShard(_ bytes: [UInt8]) {
    let path = FuzzHarness.path("footer.lcs")
    FuzzHarness.write(bytes, to: path)
    defer { FuzzHarness.remove("footer.lcs") }
    let r: ShardReader
    do { r = try ShardReader(path: path) } catch {
        _ = "\(error)"   // every refusal renders its message (string building is code too)
        return
    }
    // Safe to unwrap: ShardReader accepted the same trailer.
    checkLayout(r.layout, chunkEnd: FuzzHarness.footerRange(bytes)!.lowerBound)
}

/// What ShardReader.decodeBlock relies on without re-checking.
private func checkLayout(_ L: ShardLayout, chunkEnd: Int) {
    var tokens = 0, entries = 0, samples = 0
    let m = L.bands.count - 1
    check(L.bands.first == 0 && L.bands.last == L.maxEntries, "bands \(L.bands) vs K \(L.maxEntries)")
    check(L.sequenceStarts.count == L.lengths.count + 1 && L.sequenceStarts.last == L.tokens, "sequence starts")
    for (b, bl) in L.blocks.enumerated() {
        check(bl.firstToken == tokens && bl.tokens >= 1 && bl.tokens <= L.blockTokens, "block \(b) tokens")
        tokens += bl.tokens; entries += bl.entries; samples += bl.samples
        var all = [bl.inputIDs, bl.nextLogProb, bl.logSumExp, bl.entryCount] + bl.entryIDs + bl.entryLogProbs
        all += [bl.entryIDDict, bl.nextLink, bl.nextLogProbDelta, bl.sampleCount, bl.sampleIDs, bl.sampleDraws].compactMap { $0 }
        all += bl.entryRefs.compactMap { $0 }
        for d in all {
            check(d.offset >= 16 && d.size >= 0 && d.offset + d.size <= chunkEnd, "block \(b): chunk [\(d.offset), +\(d.size)) outside the file")
            check((1...4).contains(d.width) && d.count >= 0, "block \(b): width \(d.width) count \(d.count)")
        }
        check(bl.entryIDs.count == m && bl.entryLogProbs.count == m && bl.entryRefs.count == m, "block \(b): bands")
        check(bl.entryCount.count == bl.tokens && bl.logSumExp.count == bl.tokens, "block \(b): per-token columns")
    }
    check(tokens == L.tokens && entries == L.entries && samples == L.samples, "totals")
}
