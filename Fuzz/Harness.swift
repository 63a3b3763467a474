// Shared helpers of the libFuzzer targets (compiled into each target binary by tools/fuzz).
//
// The format checksums everything (chunks, footer, manifest), so a mutated byte almost always
// ends in a checksum mismatch and the parsers behind it stay unexplored. The targets therefore
// run each input as it is first, and then again after these helpers recompute the checksums it
// carries ("fix-ups"): the fuzzer mutates freely and the code behind every checksum is reached.

import Foundation
@testable import ShardFormat
#if canImport(Glibc)
import Glibc
#endif

enum FuzzHarness {
    /// A private scratch directory of this process (on tmpfs when there is one), removed at exit.
    static let directory: String = {
        let root = ProcessInfo.processInfo.environment["LOGITCACHE_FUZZ_TMPDIR"]
            ?? (access("/dev/shm", W_OK) == 0 ? "/dev/shm" : NSTemporaryDirectory())
        var template = Array((root + "/logitcache-fuzz-XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else { fatalError("fuzz harness: mkdtemp in \(root) failed (errno \(errno))") }
        let dir = String(cString: made)
        scratchDirectory = strdup(dir)
        atexit { removeScratch() }
        return dir
    }()

    /// Path of `name` inside the scratch directory.
    static func path(_ name: String) -> String { directory + "/" + name }

    /// Replaces `path` by a new file holding `bytes`. Unlinks first: a mapping of the old file
    /// that somehow survived would otherwise see it truncated (SIGBUS) instead of keeping it.
    static func write<C: Collection>(_ bytes: C, to path: String) where C.Element == UInt8 {
        unlink(path)
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { fatalError("fuzz harness: open \(path) failed (errno \(errno))") }
        defer { close(fd) }
        let a = Array(bytes)
        a.withUnsafeBytes { b in
            var done = 0
            while done < b.count {
                let n = Glibc.write(fd, b.baseAddress! + done, b.count - done)
                if n < 0 { if errno == EINTR { continue }; fatalError("fuzz harness: write \(path) failed (errno \(errno))") }
                done += n
            }
        }
    }

    /// Removes `name` from the scratch directory (missing is fine).
    static func remove(_ name: String) { unlink(path(name)) }

    static func u64(_ b: [UInt8], _ o: Int) -> UInt64 {
        var v: UInt64 = 0
        for i in 0..<8 { v |= UInt64(b[o + i]) << (8 * UInt64(i)) }
        return v
    }

    static func put64(_ b: inout [UInt8], _ o: Int, _ v: UInt64) {
        for i in 0..<8 { b[o + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) }
    }

    /// The footer range `[offset, offset + length)` a shard's trailer names, when it lies
    /// inside the file before the trailer; nil otherwise.
    static func footerRange(_ b: [UInt8]) -> Range<Int>? {
        let s = b.count
        guard s >= 56 else { return nil }
        let fo = u64(b, s - 40), fl = u64(b, s - 32)
        guard fo >= 16, fo <= UInt64(s - 40), fl <= UInt64(s - 40) - fo else { return nil }
        return Int(fo)..<Int(fo + fl)
    }

    /// `b` with the trailer's footer checksum recomputed (nothing else changed), or nil when
    /// the trailer's offset and length do not frame a footer or the checksum was right already.
    static func withFooterChecksum(_ b: [UInt8]) -> [UInt8]? {
        guard let r = footerRange(b) else { return nil }
        let sum = b.withUnsafeBytes { Checksum.xxh3(UnsafeRawBufferPointer(rebasing: $0[r])) }
        guard sum != u64(b, b.count - 24) else { return nil }
        var out = b
        put64(&out, b.count - 24, sum)
        return out
    }

    /// `b` with every chunk checksum in the footer recomputed from the bytes the chunk names
    /// (when they lie in the file before the footer), the footer re-encoded as sorted-key JSON
    /// and placed right after the chunk area, and the trailer's offset, length and checksum
    /// set to match. The trailer's version and flags words and both magics are kept as they
    /// are, so the fuzzer still reaches those checks. Nil when no footer JSON decodes.
    static func withChunkChecksums(_ b: [UInt8]) -> [UInt8]? {
        guard let r = footerRange(b),
              var f = try? JSONDecoder().decode(FooterJSON.self, from: Data(b[r])) else { return nil }
        let chunkEnd = r.lowerBound
        b.withUnsafeBytes { raw in
            for i in f.blocks.indices {
                for j in f.blocks[i].chunks.indices {
                    let c = f.blocks[i].chunks[j]
                    guard c.offset >= 0, c.size >= 0, c.offset <= chunkEnd, c.size <= chunkEnd - c.offset else { continue }
                    f.blocks[i].chunks[j].xxh3 = hex16(Checksum.xxh3(UnsafeRawBufferPointer(rebasing: raw[c.offset..<(c.offset + c.size)])))
                }
            }
        }
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        guard let footer = try? Array(enc.encode(f)) else { return nil }
        var out = Array(b[0..<chunkEnd]) + footer
        let trailer = Array(b[(b.count - 40)...])
        let at = out.count
        out += trailer
        put64(&out, at, UInt64(chunkEnd))
        put64(&out, at + 8, UInt64(footer.count))
        put64(&out, at + 16, Checksum.xxh3(footer))
        return out
    }

    /// Manifest bytes with the trailing `"checksum": "…"` member recomputed (FORMAT.md section
    /// 7), or nil when the text does not end with that member's shape or the sum was right.
    static func withManifestChecksum(_ b: [UInt8]) -> [UInt8]? {
        let key = Array("\"checksum\": \"".utf8), end = Array("\"\n}\n".utf8)
        let tail = key.count + 16 + end.count
        guard b.count >= tail else { return nil }
        let i = b.count - tail
        guard Array(b[i..<(i + key.count)]) == key, Array(b[(b.count - end.count)...]) == end else { return nil }
        let sum = Array(hex16(b.withUnsafeBytes { Checksum.xxh3(UnsafeRawBufferPointer(rebasing: $0[0..<i])) }).utf8)
        guard Array(b[(i + key.count)..<(i + key.count + 16)]) != sum else { return nil }
        var out = b
        out.replaceSubrange((i + key.count)..<(i + key.count + 16), with: sum)
        return out
    }

    /// Manifest text with the value of every `"bytes"` member (a shard's size and the total)
    /// set to `size`: the ABI target rewrites a shard, which changes its size.
    static func withShardBytes(_ b: [UInt8], size: Int) -> [UInt8] {
        let key = Array("\"bytes\"".utf8), digits = Array(String(size).utf8)
        var out: [UInt8] = [], i = 0
        out.reserveCapacity(b.count + 16)
        while i < b.count {
            if b[i] == key[0], i + key.count <= b.count, Array(b[i..<(i + key.count)]) == key {
                var j = i + key.count
                while j < b.count, b[j] == 0x20 { j += 1 }
                if j < b.count, b[j] == UInt8(ascii: ":") {
                    j += 1
                    while j < b.count, b[j] == 0x20 { j += 1 }
                    var k = j
                    while k < b.count, (48...57).contains(b[k]) { k += 1 }
                    if k > j {
                        out += b[i..<j]; out += digits; i = k
                        continue
                    }
                }
            }
            out.append(b[i]); i += 1
        }
        return out
    }

    /// The input as bytes.
    static func bytes(_ data: UnsafePointer<UInt8>, _ size: Int) -> [UInt8] {
        Array(UnsafeBufferPointer(start: data, count: size))
    }
}

/// A property a target asserts: traps with `message` when it does not hold. Unlike
/// `precondition`, whose message -O drops, the message reaches the crash report.
func check(_ condition: Bool, _ message: @autoclosure () -> String) {
    if !condition { fatalError("fuzz check failed: " + message()) }
}

/// The scratch directory's path for the exit handler (a C function pointer cannot capture).
private nonisolated(unsafe) var scratchDirectory: UnsafeMutablePointer<CChar>?

private func removeScratch() {
    guard let p = scratchDirectory else { return }
    let dir = String(cString: p)
    if let names = try? FileManager.default.contentsOfDirectory(atPath: dir) {
        for n in names { unlink(dir + "/" + n) }
    }
    rmdir(dir)
}
