// lc_writer_*: one partition of a cache written through the Swift CacheWriter.

import Foundation
import ShardFormat
import Truncation

/// `lc_writer_open`'s description (keys of the manifest; see `Schemas/logitcache.h`).
private struct WriterRequest: Decodable {
    struct Capture: Decodable {
        var policy: String
        var k: Int
        var topP: Double?
        var samples: Int?
        var temperature: Double?
        var seed: UInt64?
    }
    var vocabularySize: Int
    var fingerprints: Fingerprints
    var capture: Capture
    var partition: Int?
    var partitionCount: Int?
    var codec: String?
    var level: Int?
    var logProbs: String?
    var stepLog2: Int?
    var stepMultiplier: Int?
    var blockTokens: Int?
    var targetShardBytes: Int?
    var origin: CacheOrigin?

    func settings() throws -> CaptureSettings {
        let c = capture
        let policy = try CapturePolicy(name: c.policy, k: c.k, topP: c.topP, samples: c.samples ?? 0)
        try policy.validate(vocabularySize: vocabularySize)
        let t = c.temperature ?? 1
        guard t.isFinite, t > 0 else { throw ABIError(status: .invalidArgument, message: "capture temperature \(t) must be finite and > 0") }
        return CaptureSettings(policy: policy, temperature: t, seed: c.seed ?? 0)
    }

    func options() throws -> WriterOptions {
        let codec: Codec
        switch self.codec ?? "zstd" {
        case "zstd":
            let l = level ?? 3
            guard let l32 = Int32(exactly: l) else { throw ABIError(status: .invalidArgument, message: "zstd level \(l) out of range") }
            codec = .zstd(level: l32)   // the writer checks the range
        case "lz4": codec = .lz4
        case "none": codec = .none
        case let other: throw ABIError(status: .invalidArgument, message: "codec \"\(other)\" is not zstd, lz4 or none")
        }
        let lp: LogProbEncoding?
        switch logProbs {
        case nil:
            guard stepLog2 == nil, stepMultiplier == nil else {
                throw ABIError(status: .invalidArgument, message: "stepLog2 / stepMultiplier need logProbs \"quantized\"")
            }
            lp = nil
        case "float32": lp = .float32
        case "quantized":
            guard let b = stepLog2 else { throw ABIError(status: .invalidArgument, message: "logProbs \"quantized\" needs stepLog2") }
            lp = .quantized(stepLog2: b, multiplier: stepMultiplier ?? 1)
        case let other?: throw ABIError(status: .invalidArgument, message: "logProbs \"\(other)\" is not quantized or float32")
        }
        let shardBytes = targetShardBytes ?? 256 << 20
        guard shardBytes >= 1 else { throw ABIError(status: .invalidArgument, message: "targetShardBytes \(shardBytes) must be >= 1") }
        return WriterOptions(codec: codec, logProbs: lp, blockTokens: blockTokens ?? 8192, targetShardBytes: shardBytes)
    }
}

@_cdecl("lc_writer_open")
public func lc_writer_open(_ directory: UnsafePointer<CChar>?, _ description: UnsafePointer<CChar>?,
                           _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    guarded {
        let out = try required(out, "out")
        out.pointee = nil
        let dir = try string(directory, "directory")
        let r = try decodeJSON(WriterRequest.self, description, "description_json")
        let d = CacheDescription(vocabularySize: r.vocabularySize, fingerprints: r.fingerprints, capture: try r.settings(), origin: r.origin)
        let w = try CacheWriter(directory: dir, description: d, options: try r.options(),
                                partition: r.partition ?? 0, partitionCount: r.partitionCount ?? 1)
        out.pointee = handle(w)
    }
}

@_cdecl("lc_writer_resumed_sequences")
public func lc_writer_resumed_sequences(_ writer: OpaquePointer?) -> Int64 {
    guard let w = try? object(writer, as: CacheWriter.self, "writer") else { return -1 }
    return Int64(w.resumedSequences)
}

@_cdecl("lc_writer_begin_sequence")
public func lc_writer_begin_sequence(_ writer: OpaquePointer?, _ high: UInt64, _ low: UInt64, _ offset: Int64) -> Int32 {
    guarded {
        let w = try object(writer, as: CacheWriter.self, "writer")
        guard offset >= 0, offset <= Int64(Int32.max) * 1024 else {
            throw ABIError(status: .invalidArgument, message: "document offset \(offset) out of range")
        }
        try w.beginSequence(documentKey: DocumentHash(high: high, low: low), documentOffset: Int(offset))
    }
}

@_cdecl("lc_writer_append")
public func lc_writer_append(_ writer: OpaquePointer?, _ n: Int64, _ inputIDs: UnsafePointer<Int32>?,
                             _ nextLogProbs: UnsafePointer<Float>?, _ logSumExps: UnsafePointer<Float>?,
                             _ entryCounts: UnsafePointer<Int32>?, _ entryIDs: UnsafePointer<Int32>?,
                             _ entryLogProbs: UnsafePointer<Float>?, _ entryStride: Int64,
                             _ sampleCounts: UnsafePointer<Int32>?, _ sampleIDs: UnsafePointer<Int32>?,
                             _ sampleDraws: UnsafePointer<UInt32>?, _ sampleStride: Int64) -> Int32 {
    guarded {
        let w = try object(writer, as: CacheWriter.self, "writer")
        guard n >= 0, n <= 1 << 32 else { throw ABIError(status: .invalidArgument, message: "n = \(n) out of range") }
        guard entryStride >= 0, entryStride <= 65535, sampleStride >= 0, sampleStride <= 1 << 20 else {
            throw ABIError(status: .invalidArgument, message: "entry stride \(entryStride) / sample stride \(sampleStride) out of range")
        }
        if n == 0 { return }
        let x = try required(inputIDs, "input_ids"), nx = try required(nextLogProbs, "next_token_logprobs")
        let lse = try required(logSumExps, "logsumexps"), ec = try required(entryCounts, "entry_counts")
        let es = Int(entryStride), ss = Int(sampleStride)
        let ids = try es == 0 ? nil : required(entryIDs, "entry_ids"), lps = try es == 0 ? nil : required(entryLogProbs, "entry_logprobs")
        let sids = try sampleCounts == nil || ss == 0 ? nil : required(sampleIDs, "sample_ids")
        let sd = try sampleCounts == nil || ss == 0 ? nil : required(sampleDraws, "sample_draws")
        for t in 0..<Int(n) {
            let c = Int(ec[t])
            guard (0...es).contains(c) else { throw ABIError(status: .invalidArgument, message: "position \(t): entry count \(c) outside 0...\(es)") }
            let sc = sampleCounts.map { Int($0[t]) } ?? 0
            guard (0...ss).contains(sc) else { throw ABIError(status: .invalidArgument, message: "position \(t): sample count \(sc) outside 0...\(ss)") }
            do {
                // Safe because rows are es (ss) wide and c <= es, sc <= ss were checked.
                try w.appendToken(inputID: x[t], nextTokenLogProb: nx[t], logSumExp: lse[t],
                                  entryIDs: UnsafeBufferPointer(start: ids.map { $0 + t * es }, count: c),
                                  entryLogProbs: UnsafeBufferPointer(start: lps.map { $0 + t * es }, count: c),
                                  sampleIDs: UnsafeBufferPointer(start: sids.map { $0 + t * ss }, count: sc),
                                  sampleDraws: UnsafeBufferPointer(start: sd.map { $0 + t * ss }, count: sc))
            } catch ShardFormatError.invalidInput(let m) {
                // Positions before t are in the cache; name the one refused.
                throw ABIError(status: .invalidArgument, message: "position \(t) of \(n): \(m) (positions before it were appended)")
            }
        }
    }
}

@_cdecl("lc_writer_end_sequence")
public func lc_writer_end_sequence(_ writer: OpaquePointer?) -> Int32 {
    guarded { try object(writer, as: CacheWriter.self, "writer").endSequence() }
}

@_cdecl("lc_writer_add_cost")
public func lc_writer_add_cost(_ writer: OpaquePointer?, _ tokens: Int64, _ flops: Double, _ seconds: Double) -> Int32 {
    guarded {
        let w = try object(writer, as: CacheWriter.self, "writer")
        guard tokens >= 0, tokens <= 1 << 50, flops.isFinite, flops >= 0, seconds.isFinite, seconds >= 0 else {
            throw ABIError(status: .invalidArgument, message: "cost tokens \(tokens), flops \(flops), seconds \(seconds): need finite values >= 0")
        }
        w.teacherCost = TeacherCost(tokens: w.teacherCost.tokens + Int(tokens), flops: w.teacherCost.flops + flops,
                                    seconds: w.teacherCost.seconds + seconds)
    }
}

@_cdecl("lc_writer_finish")
public func lc_writer_finish(_ writer: OpaquePointer?, _ out: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    guarded {
        let m = try object(writer, as: CacheWriter.self, "writer").finish()
        give(String(decoding: try m.encoded(), as: UTF8.self), to: out)
    }
}

@_cdecl("lc_writer_close")
public func lc_writer_close(_ writer: OpaquePointer?) { release(writer) }
