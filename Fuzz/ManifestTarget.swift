// libFuzzer target: manifest bytes -> CacheManifest.decode (checksum, strict JSON pass,
// JSON decoding, every bound), the encode/decode round trip, and shard-name resolution.
//
// Input: a manifest file. It is decoded as it is, then (when it ends with a "checksum" member
// that is wrong) again with that checksum recomputed, so mutations reach the strict JSON pass
// and the decoder. A manifest that decodes must encode, decode again to an equal value, and
// have every shard name resolved inside its directory or refused (asserted: a failure is a bug).

import Foundation
@testable import ShardFormat
#if canImport(Glibc)
import Glibc
#endif

/// The directory shard names are resolved against: it holds the shard name the seed manifests
/// use, and `escape.lcs`, a link to a file outside it, which must be refused.
private let cacheDirectory: String = {
    let dir = FuzzHarness.path("cache")
    mkdir(dir, 0o755)
    FuzzHarness.write([UInt8](), to: dir + "/part-00000-shard-000000.lcs")
    FuzzHarness.write([UInt8](), to: FuzzHarness.path("outside.lcs"))
    symlink(FuzzHarness.path("outside.lcs"), dir + "/escape.lcs")
    atexit {
        // Remove what the generic scratch cleanup (files only, not directories) cannot.
        let d = FuzzHarness.directory + "/cache"
        unlink(d + "/part-00000-shard-000000.lcs"); unlink(d + "/escape.lcs"); rmdir(d)
    }
    return dir
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let input = FuzzHarness.bytes(data, size)
    decode(input)
    if let fixed = FuzzHarness.withManifestChecksum(input) { decode(fixed) }
    return 0
}

private func decode(_ bytes: [UInt8]) {
    let m: CacheManifest
    do { m = try CacheManifest.decode(bytes, file: "manifest.json") } catch {
        _ = "\(error)"
        return
    }
    // Round trip: what decode accepts, encode must write and decode must read back unchanged.
    let again: [UInt8]
    do { again = try m.encoded() } catch { fatalError("fuzz check failed: a decoded manifest does not encode: \(error)") }
    do {
        let m2 = try CacheManifest.decode(again, file: "re-encoded manifest.json")
        check(m2 == m, "the re-encoded manifest decodes to another value")
    } catch { fatalError("fuzz check failed: the re-encoded manifest does not decode: \(error)") }
    check(m.checksum == String(decoding: again[(again.count - 20)..<(again.count - 4)], as: UTF8.self), "checksum property differs from the encoded member")
    // Shard names: resolved inside the directory, or refused.
    let dir = cacheDirectory
    for s in m.shards.prefix(64) {
        do {
            let p = try CacheManifest.shardPath(directory: dir, name: s.file, manifestFile: dir + "/manifest.json")
            check(s.file != "escape.lcs", "a link leading outside the cache was accepted")
            check(p == dir + "/" + s.file && !s.file.contains("/") && s.file != "." && s.file != "..", "shard name \(s.file) accepted as \(p)")
        } catch {
            _ = "\(error)"
        }
    }
}
