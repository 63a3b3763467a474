// lc_cache_*: opening a cache, its manifest and sequences, and rows into caller buffers.

import Foundation
import ShardFormat

/// What an `lc_cache` handle owns: the reader and a reusable decode buffer.
final class CacheHandle {
    let reader: CacheReader
    let rows = TargetBatch()
    init(reader: CacheReader) { self.reader = reader }
}

@_cdecl("lc_cache_open")
public func lc_cache_open(_ directory: UnsafePointer<CChar>?, _ tokenizer: UnsafePointer<CChar>?,
                          _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    guarded {
        let out = try required(out, "out")
        out.pointee = nil
        let dir = try string(directory, "directory")
        let reader = try CacheReader(directory: dir, tokenizerFingerprint: tokenizer.map { String(cString: $0) })
        out.pointee = handle(CacheHandle(reader: reader))
    }
}

@_cdecl("lc_cache_close")
public func lc_cache_close(_ cache: OpaquePointer?) { release(cache) }

@_cdecl("lc_cache_manifest")
public func lc_cache_manifest(_ cache: OpaquePointer?, _ out: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    guarded {
        let c = try object(cache, as: CacheHandle.self, "cache")
        let out = try required(out, "json")
        give(String(decoding: try c.reader.manifest.encoded(), as: UTF8.self), to: out)
    }
}

@_cdecl("lc_cache_info_get")
public func lc_cache_info_get(_ cache: OpaquePointer?, _ out: UnsafeMutableRawPointer?) -> Int32 {
    guarded {
        let r = try object(cache, as: CacheHandle.self, "cache").reader
        let p = try required(out, "out")
        // Safe because lc_cache_info is five int64 fields.
        let fields = [r.tokenCount, r.sequenceCount, r.vocabularySize, r.maxEntries, r.maxSamples]
        for (i, v) in fields.enumerated() { (p + 8 * i).storeBytes(of: Int64(v), as: Int64.self) }
    }
}

@_cdecl("lc_cache_sequence")
public func lc_cache_sequence(_ cache: OpaquePointer?, _ index: Int64, _ out: UnsafeMutableRawPointer?) -> Int32 {
    guarded {
        let r = try object(cache, as: CacheHandle.self, "cache").reader
        let p = try required(out, "out")
        guard index >= 0, index < Int64(r.sequenceCount) else {
            throw ABIError(status: .invalidArgument, message: "sequence \(index) outside 0..<\(r.sequenceCount)")
        }
        let q = try r.sequence(Int(index))
        // Safe because lc_sequence_info is three int64 and two uint64 fields.
        p.storeBytes(of: Int64(q.firstToken), as: Int64.self)
        (p + 8).storeBytes(of: Int64(q.length), as: Int64.self)
        (p + 16).storeBytes(of: Int64(q.documentOffset), as: Int64.self)
        (p + 24).storeBytes(of: q.documentKey.high, as: UInt64.self)
        (p + 32).storeBytes(of: q.documentKey.low, as: UInt64.self)
    }
}

/// Checks `start..<stop` against the cache's positions.
private func positions(_ start: Int64, _ stop: Int64, _ r: CacheReader) throws -> Range<Int> {
    guard start >= 0, start <= stop, stop <= Int64(r.tokenCount) else {
        throw ABIError(status: .invalidArgument, message: "positions \(start)..<\(stop) outside 0..<\(r.tokenCount)")
    }
    return Int(start)..<Int(stop)
}

@_cdecl("lc_cache_read")
public func lc_cache_read(_ cache: OpaquePointer?, _ start: Int64, _ stop: Int64, _ k: Int64, _ out: UnsafeRawPointer?) -> Int32 {
    guarded {
        let c = try object(cache, as: CacheHandle.self, "cache")
        let o = try required(out, "out")
        let range = try positions(start, stop, c.reader)
        guard k >= 0, k <= Int64(c.reader.maxEntries) else {
            throw ABIError(status: .unsupported, message: "k = \(k) outside 0...K = \(c.reader.maxEntries)")
        }
        let K = Int(k), n = range.count
        let tb = c.rows
        try c.reader.decode(tokens: range, k: K, into: tb)
        copy(tb.inputIDs, to: pointerField(o, 0, Int32.self))
        copy(tb.nextTokenLogProbs, to: pointerField(o, 1, Float.self))
        copy(tb.logSumExps, to: pointerField(o, 2, Float.self))
        copy(tb.entryCounts, to: pointerField(o, 3, Int32.self))
        copy(tb.entryLogProbs, to: pointerField(o, 5, Float.self))
        if let ids = pointerField(o, 4, Int32.self) {
            copy(tb.entryIDs, to: ids)
            // The reader pads ids with 0; the ABI marks unused slots with −1.
            for t in 0..<n {
                for j in Int(tb.entryCounts[t])..<K { ids[t * K + j] = -1 }
            }
        }
    }
}

/// Copies all of `a` to `p` (nothing when the caller passed NULL).
private func copy<E>(_ a: [E], to p: UnsafeMutablePointer<E>?) {
    guard let p else { return }
    a.withUnsafeBufferPointer { p.update(from: $0.baseAddress!, count: a.count) }
}

@_cdecl("lc_cache_read_samples")
public func lc_cache_read_samples(_ cache: OpaquePointer?, _ start: Int64, _ stop: Int64,
                                  _ offsets: UnsafeMutablePointer<Int64>?, _ ids: UnsafeMutablePointer<Int32>?,
                                  _ draws: UnsafeMutablePointer<UInt32>?, _ capacity: Int64,
                                  _ needed: UnsafeMutablePointer<Int64>?) -> Int32 {
    guarded {
        let c = try object(cache, as: CacheHandle.self, "cache")
        let range = try positions(start, stop, c.reader)
        let offsets = try required(offsets, "sample_offsets")
        let tb = c.rows
        try c.reader.decode(tokens: range, k: 0, samples: true, into: tb)
        let s = tb.sampleIDs.count
        needed?.pointee = Int64(s)
        guard Int64(s) <= capacity else {
            throw ABIError(status: .invalidArgument, message: "\(s) sampled entries exceed the capacity \(capacity)")
        }
        for (i, v) in tb.sampleOffsets.enumerated() { offsets[i] = Int64(v) }
        if s > 0 {
            copy(tb.sampleIDs, to: try required(ids, "sample_ids"))
            copy(tb.sampleDraws, to: try required(draws, "sample_draws"))
        }
    }
}

/// The report `lc_verify` returns.
private struct VerifyReport: Encodable {
    var sound: Bool
    var problems: [String]
    var shardsChecked: Int
    var tokensChecked: Int
}

@_cdecl("lc_verify")
public func lc_verify(_ directory: UnsafePointer<CChar>?, _ out: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    guarded {
        let dir = try string(directory, "directory")
        let out = try required(out, "report_json")
        let r = CacheVerifier.verify(directory: dir)
        give(try json(VerifyReport(sound: r.isSound, problems: r.problems, shardsChecked: r.shardsChecked, tokensChecked: r.tokensChecked)), to: out)
    }
}

@_cdecl("lc_merge")
public func lc_merge(_ directory: UnsafePointer<CChar>?, _ out: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    guarded {
        let dir = try string(directory, "directory")
        let m = try CacheManifest.merge(directory: dir)
        give(String(decoding: try m.encoded(), as: UTF8.self), to: out)
    }
}

// MARK: - Shards from a source (lc_shard_source)

private typealias TailCallback = @convention(c) (UnsafeMutableRawPointer?, Int64, UnsafePointer<CChar>?, Int64,
                                                 UnsafeMutablePointer<UInt8>?, Int64, UnsafeMutablePointer<Int64>?,
                                                 UnsafeMutablePointer<CChar>?, Int64) -> Int32
private typealias FetchCallback = @convention(c) (UnsafeMutableRawPointer?, Int64, UnsafePointer<CChar>?,
                                                  UnsafeMutablePointer<CChar>?, Int64, UnsafeMutablePointer<CChar>?, Int64) -> Int32
private typealias ReleaseCallback = @convention(c) (UnsafeMutableRawPointer?, Int64, UnsafePointer<CChar>?) -> Void

/// An `lc_shard_source` (context and three callbacks) as a ``ShardSource``.
private final class CallbackSource: ShardSource, @unchecked Sendable {
    // Sendable because the fields never change; the caller's callbacks take calls from any thread.
    let context: UnsafeMutableRawPointer?
    let tailCall: TailCallback
    let fetchCall: FetchCallback
    let releaseCall: ReleaseCallback

    init(_ p: UnsafeRawPointer) throws {
        // Safe because lc_shard_source is four pointer-sized fields.
        context = p.load(as: UnsafeMutableRawPointer?.self)
        tailCall = try required(p.load(fromByteOffset: 8, as: TailCallback?.self), "source.tail")
        fetchCall = try required(p.load(fromByteOffset: 16, as: FetchCallback?.self), "source.fetch")
        releaseCall = try required(p.load(fromByteOffset: 24, as: ReleaseCallback?.self), "source.release")
    }

    /// Runs a callback with a message buffer, turning a status other than LC_OK into an error.
    private func call(_ what: String, _ name: String, _ body: (UnsafeMutablePointer<CChar>, Int64) -> Int32) throws {
        var message = [CChar](repeating: 0, count: 1024)
        let status = message.withUnsafeMutableBufferPointer { body($0.baseAddress!, Int64($0.count - 1)) }
        guard status != Status.ok.rawValue else { return }
        let text = message.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        throw ABIError(status: Status(rawValue: status) ?? .io, message: text.isEmpty ? "shard source \(what) of \(name) failed (status \(status))" : text)
    }

    func tail(shard index: Int, name: String, size: Int) throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: min(size, 1 << 16))
        while true {
            var length: Int64 = 0
            try call("tail", name) { m, mc in
                buffer.withUnsafeMutableBufferPointer { b in
                    tailCall(context, Int64(index), name, Int64(size), b.baseAddress, Int64(b.count), &length, m, mc)
                }
            }
            guard length >= 0, length <= Int64(size) else {
                throw ABIError(status: .invalidArgument, message: "shard source tail of \(name): length \(length) outside 0...\(size)")
            }
            if length <= Int64(buffer.count) { return Array(buffer[..<Int(length)]) }
            buffer = [UInt8](repeating: 0, count: Int(length))
        }
    }

    func fetch(shard index: Int, name: String) throws -> String {
        var path = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        try call("fetch", name) { m, mc in
            path.withUnsafeMutableBufferPointer { p in fetchCall(context, Int64(index), name, p.baseAddress, Int64(p.count - 1), m, mc) }
        }
        path[path.count - 1] = 0   // a path that filled the buffer stays terminated
        return path.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    func release(shard index: Int, name: String) { releaseCall(context, Int64(index), name) }
}

@_cdecl("lc_cache_open_source")
public func lc_cache_open_source(_ directory: UnsafePointer<CChar>?, _ tokenizer: UnsafePointer<CChar>?,
                                 _ source: UnsafeRawPointer?, _ openShards: Int64,
                                 _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    guarded {
        let out = try required(out, "out")
        out.pointee = nil
        let dir = try string(directory, "directory")
        let src = try CallbackSource(try required(source, "source"))
        guard openShards >= 1 else { throw ABIError(status: .invalidArgument, message: "open_shards = \(openShards) must be >= 1") }
        let reader = try CacheReader(directory: dir, source: src, openShards: Int(min(openShards, Int64(Int32.max))),
                                     tokenizerFingerprint: tokenizer.map { String(cString: $0) })
        out.pointee = handle(CacheHandle(reader: reader))
    }
}
