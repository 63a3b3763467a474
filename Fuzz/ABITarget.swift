// libFuzzer target: the C ABI (Schemas/logitcache.h) opening and reading a cache, through the
// @_cdecl functions of Sources/LogitCacheABI: lc_cache_open, _info_get, _manifest, _sequence,
// _read (whole and partial blocks), _read_samples, lc_verify, and lc_loader_open, _next,
// _position, _state, _resume, _seek in each target mode the cache allows.
//
// Input: manifest.json's bytes followed by one shard file's bytes (the split is at the first
// shard magic "LCSHARD\x1a"; no magic means no shard file). The harness recomputes the shard's
// chunk and footer checksums, sets the manifest's "bytes" members to the shard's new size and
// recomputes the manifest checksum, then writes both into a scratch cache directory (the shard
// as part-00000-shard-000000.lcs, the name the seed manifests use). Every call must return a
// status; none may crash, whatever the files hold; and no loader worker thread may outlive its
// loader by more than 5 s.

import Foundation
@testable import ShardFormat
import LogitCacheABI
#if canImport(Glibc)
import Glibc
#endif

private let shardName = "part-00000-shard-000000.lcs"

/// The scratch cache directory (created once; its two files are rewritten for each input).
private let cacheDirectory: String = {
    let dir = FuzzHarness.path("cache")
    mkdir(dir, 0o755)
    atexit {
        let d = FuzzHarness.directory + "/cache"
        if let names = try? FileManager.default.contentsOfDirectory(atPath: d) { for n in names { unlink(d + "/" + n) } }
        rmdir(d)
    }
    return dir
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let input = FuzzHarness.bytes(data, size)
    var manifest = input, shard: [UInt8]? = nil
    if let at = firstIndex(of: shardMagic, in: input) {
        manifest = Array(input[..<at])
        let s = Array(input[at...])
        shard = FuzzHarness.withChunkChecksums(s) ?? FuzzHarness.withFooterChecksum(s) ?? s
    }
    if let s = shard { manifest = FuzzHarness.withShardBytes(manifest, size: s.count) }
    manifest = FuzzHarness.withManifestChecksum(manifest) ?? manifest
    let dir = cacheDirectory
    FuzzHarness.write(manifest, to: dir + "/manifest.json")
    if let s = shard { FuzzHarness.write(s, to: dir + "/" + shardName) } else { unlink(dir + "/" + shardName) }
    let before = threadCount()
    exercise(dir, inputSize: size)
    // lc_loader_close does not join the loader's worker threads, but each must end soon after
    // it; one that does not is leaked with all it holds (the reader, its mappings, rows).
    var waited = 0
    while threadCount() > before {
        check(waited < 5000, "\(threadCount() - before) loader worker thread(s) still alive 5 s after lc_loader_close")
        usleep(1000); waited += 1
    }
    return 0
}

/// Threads of this process (0 where /proc is missing: the check above is then off).
private func threadCount() -> Int {
    (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task").count) ?? 0
}

private func firstIndex(of needle: [UInt8], in b: [UInt8]) -> Int? {
    guard b.count >= needle.count else { return nil }
    for i in 0...(b.count - needle.count) where b[i] == needle[0] {
        if b[i..<(i + needle.count)].elementsEqual(needle) { return i }
    }
    return nil
}

/// Caller-owned buffers of `count` values, released on deinit.
private final class Buffer<T> {
    let p: UnsafeMutablePointer<T>
    init(_ count: Int, _ fill: T) { p = .allocate(capacity: max(count, 1)); p.initialize(repeating: fill, count: max(count, 1)) }
    deinit { p.deallocate() }
    var raw: UnsafeMutableRawPointer { UnsafeMutableRawPointer(p) }
}

/// Most values any one output buffer gets (a forged footer may claim K = 65535 or 2^20 samples).
private let maxValues = 1 << 18

private func exercise(_ dir: String, inputSize: Int) {
    var K = 0, S = 0, temperature = 1.0
    var cache: OpaquePointer? = nil
    if lc_cache_open(dir, nil, &cache) == 0, let cache {
        defer { lc_cache_close(cache) }
        let info = Buffer<Int64>(5, 0)
        check(lc_cache_info_get(cache, info.raw) == 0, "lc_cache_info_get failed on an open cache")
        let tokens = Int(info.p[0]), sequences = Int(info.p[1])
        K = Int(info.p[3]); S = Int(info.p[4])
        var json: UnsafeMutablePointer<CChar>? = nil
        if lc_cache_manifest(cache, &json) == 0, let json {
            let text = String(cString: json)
            lc_string_free(json)
            if let o = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
               let c = o["capture"] as? [String: Any], let t = c["temperature"] as? Double { temperature = t }
        }
        let seq = Buffer<Int64>(5, 0)
        for i in 0..<min(sequences, 4) { _ = lc_cache_sequence(cache, Int64(i), seq.raw) }
        _ = lc_cache_sequence(cache, Int64(sequences), seq.raw)   // one past the end: refused
        let n = min(tokens, max(1, maxValues / max(K, 1)), 4096)
        if n > 0 {
            read(cache, 0..<n, k: K)
            if n > 1 { read(cache, 1..<n, k: min(K, 1)) }   // a partial block: the reader's block cache
            let offsets = Buffer<Int64>(n + 1, 0)
            var needed: Int64 = 0
            let st = lc_cache_read_samples(cache, 0, Int64(n), offsets.p, nil, nil, 0, &needed)
            if st != 0, needed > 0, needed <= Int64(maxValues) {
                let ids = Buffer<Int32>(Int(needed), 0), draws = Buffer<UInt32>(Int(needed), 0)
                _ = lc_cache_read_samples(cache, 0, Int64(n), offsets.p, ids.p, draws.p, needed, &needed)
            }
        }
    }
    var report: UnsafeMutablePointer<CChar>? = nil
    if lc_verify(dir, &report) == 0 { lc_string_free(report) }
    // The loader opens the cache on its own (with no open cache, to see it refused). One mode
    // per input, picked by the input's size (deterministic, and mutations vary it): a loader
    // opening costs as much as everything above.
    var modes: [(String, Int, Double)] = [("renormalized", min(K, 4), temperature)]
    if K > 0 { modes.append(("tail", min(K, 4), temperature == 1 ? 2 : temperature)) }
    if S > 0, S <= 256 { modes.append(("sampled", S, temperature)) }
    let (mode, k, tau) = modes[inputSize % modes.count]
    load(dir, mode: mode, k: k, temperature: tau, closeEarly: (inputSize / modes.count) % 2 == 1)
}

/// lc_cache_read of `range` with k slots into fresh buffers.
private func read(_ cache: OpaquePointer, _ range: Range<Int>, k: Int) {
    let n = range.count
    let ids = Buffer<Int32>(n, 0), next = Buffer<Float>(n, 0), lse = Buffer<Float>(n, 0), counts = Buffer<Int32>(n, 0)
    let eids = Buffer<Int32>(n * k, 0), elps = Buffer<Float>(n * k, 0)
    let rows = Buffer<UnsafeMutableRawPointer?>(6, nil)
    for (i, b) in [ids.raw, next.raw, lse.raw, counts.raw, eids.raw, elps.raw].enumerated() { rows.p[i] = b }
    if lc_cache_read(cache, Int64(range.lowerBound), Int64(range.upperBound), Int64(k), rows.raw) == 0 {
        for t in 0..<n { check(counts.p[t] >= 0 && Int(counts.p[t]) <= k, "entry count \(counts.p[t]) outside 0...\(k)") }
    }
}

/// A loader in `mode`: three batches, its position, a state round trip and a seek; or, with
/// `closeEarly`, two decoding threads prefetching four blocks, closed after the first batch
/// while they still decode (how a training script drops a loader mid-epoch).
private func load(_ dir: String, mode: String, k: Int, temperature: Double, closeEarly: Bool) {
    let B = 2, T = 8
    let config = "{\"batchSize\": \(B), \"contextLength\": \(T), \"k\": \(k), \"mode\": \"\(mode)\", \"temperature\": \(temperature), "
        + "\"shuffleBuffer\": 4, \"decodeThreads\": \(closeEarly ? 2 : 1), \"prefetchBlocks\": \(closeEarly ? 4 : 1)}"
    var loader: OpaquePointer? = nil
    guard lc_loader_open(dir, config, &loader) == 0, let loader else { return }
    defer { lc_loader_close(loader) }
    let windows = Buffer<Int32>(B, 0), inputs = Buffer<Int32>(B * T, 0), labels = Buffer<Int32>(B * T, 0)
    let tids = Buffer<Int32>(B * T * k, 0), weights = Buffer<Float>(B * T * k, 0)
    let tail = Buffer<Float>(B * T, 0), counts = Buffer<Int32>(B * T, 0)
    // lc_batch: seven pointers, then epoch, index, tokens (int64).
    let batch = UnsafeMutableRawPointer.allocate(byteCount: 80, alignment: 8)
    defer { batch.deallocate() }
    batch.initializeMemory(as: UInt8.self, repeating: 0, count: 80)
    for (i, b) in [windows.raw, inputs.raw, labels.raw, tids.raw, weights.raw, tail.raw, counts.raw].enumerated() {
        batch.storeBytes(of: b, toByteOffset: 8 * i, as: UnsafeMutableRawPointer.self)
    }
    if closeEarly { _ = lc_loader_next(loader, batch); return }
    for _ in 0..<3 { if lc_loader_next(loader, batch) != 0 { break } }
    var epoch: Int64 = 0, index: Int64 = 0, batches: Int64 = 0
    _ = lc_loader_position(loader, &epoch, &index, &batches)
    var state: UnsafeMutablePointer<CChar>? = nil
    if lc_loader_state(loader, &state) == 0, let state {
        _ = lc_loader_resume(loader, state)
        lc_string_free(state)
    }
    if lc_loader_seek(loader, 0, 1) == 0 { _ = lc_loader_next(loader, batch) }
}
