// lc_loader_*: the Swift StudentLoader behind a handle, batches into caller buffers.

import Foundation
import ShardFormat
import StudentLoader
import Truncation

/// `lc_loader_open`'s configuration: ``LoaderConfiguration``'s fields, each optional (absent
/// ones take the Swift defaults), and the student's vocabulary.
private struct LoaderRequest: Decodable {
    var batchSize: Int?
    var contextLength: Int?
    var k: Int?
    var mode: TargetMode?
    var temperature: Double?
    var seed: UInt64?
    var rank: Int?
    var worldSize: Int?
    var shuffleBuffer: Int?
    var remainder: RemainderPolicy?
    var decodeThreads: Int?
    var prefetchBlocks: Int?
    var tokenizerFingerprint: String?
    var vocabularySize: Int?

    var configuration: LoaderConfiguration {
        let d = LoaderConfiguration(batchSize: 8, contextLength: 1024, k: 8)
        return LoaderConfiguration(batchSize: batchSize ?? d.batchSize, contextLength: contextLength ?? d.contextLength, k: k ?? d.k,
                                   mode: mode ?? d.mode, temperature: temperature ?? d.temperature, seed: seed ?? d.seed,
                                   rank: rank ?? d.rank, worldSize: worldSize ?? d.worldSize,
                                   shuffleBuffer: shuffleBuffer ?? d.shuffleBuffer, remainder: remainder ?? d.remainder,
                                   decodeThreads: decodeThreads ?? d.decodeThreads, prefetchBlocks: prefetchBlocks ?? d.prefetchBlocks)
    }

    func student() throws -> StudentVocabulary? {
        switch (tokenizerFingerprint, vocabularySize) {
        case (nil, nil): return nil
        case (let f?, let v?): return StudentVocabulary(tokenizerFingerprint: f, vocabularySize: v)
        default: throw ABIError(status: .invalidArgument, message: "tokenizerFingerprint and vocabularySize go together")
        }
    }
}

@_cdecl("lc_loader_open")
public func lc_loader_open(_ directory: UnsafePointer<CChar>?, _ configuration: UnsafePointer<CChar>?,
                           _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    guarded {
        let out = try required(out, "out")
        out.pointee = nil
        let dir = try string(directory, "directory")
        let request = try decodeJSON(LoaderRequest.self, configuration, "configuration_json")
        let loader = try StudentLoader(cache: dir, configuration: request.configuration, student: try request.student())
        out.pointee = handle(loader)
    }
}

@_cdecl("lc_loader_open_cache")
public func lc_loader_open_cache(_ cache: OpaquePointer?, _ configuration: UnsafePointer<CChar>?,
                                 _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    guarded {
        let out = try required(out, "out")
        out.pointee = nil
        let reader = try object(cache, as: CacheHandle.self, "cache").reader
        let request = try decodeJSON(LoaderRequest.self, configuration, "configuration_json")
        let loader = try StudentLoader(reader: reader, configuration: request.configuration, student: try request.student())
        out.pointee = handle(loader)
    }
}

@_cdecl("lc_loader_close")
public func lc_loader_close(_ loader: OpaquePointer?) {
    // Joins the decode threads first, so nothing of the loader (its cache reader, a shard
    // source's callbacks) runs after this returns.
    (try? object(loader, as: StudentLoader.self, "loader"))?.close()
    release(loader)
}

@_cdecl("lc_loader_position")
public func lc_loader_position(_ loader: OpaquePointer?, _ epoch: UnsafeMutablePointer<Int64>?,
                               _ batch: UnsafeMutablePointer<Int64>?, _ batches: UnsafeMutablePointer<Int64>?) -> Int32 {
    guarded {
        let l = try object(loader, as: StudentLoader.self, "loader")
        epoch?.pointee = Int64(l.epoch)
        batch?.pointee = Int64(l.batchIndex)
        batches?.pointee = Int64(l.batchesInEpoch)
    }
}

@_cdecl("lc_loader_next")
public func lc_loader_next(_ loader: OpaquePointer?, _ batch: UnsafeMutableRawPointer?) -> Int32 {
    guarded {
        let l = try object(loader, as: StudentLoader.self, "loader")
        let p = try required(batch, "batch")
        func field<T>(_ i: Int, _ name: String, _ t: T.Type) throws -> UnsafeMutablePointer<T> {
            try required(pointerField(p, i, t), "batch.\(name)")
        }
        let out = BatchBuffers(windows: try field(0, "windows", Int32.self), inputIDs: try field(1, "input_ids", Int32.self),
                               labels: try field(2, "labels", Int32.self), targetIDs: try field(3, "target_ids", Int32.self),
                               targetWeights: try field(4, "target_weights", Float.self), tailMass: try field(5, "tail_mass", Float.self),
                               entryCounts: try field(6, "entry_counts", Int32.self))
        let (e, i, n) = try l.next(into: out)
        // Safe because lc_batch holds seven pointers, then epoch, index and tokens as int64.
        (p + 56).storeBytes(of: Int64(e), as: Int64.self)
        (p + 64).storeBytes(of: Int64(i), as: Int64.self)
        (p + 72).storeBytes(of: Int64(n), as: Int64.self)
    }
}

@_cdecl("lc_loader_seek")
public func lc_loader_seek(_ loader: OpaquePointer?, _ epoch: Int64, _ batch: Int64) -> Int32 {
    guarded {
        let l = try object(loader, as: StudentLoader.self, "loader")
        guard epoch >= 0, epoch < Int64(Int32.max), batch >= 0 else {
            throw ABIError(status: .invalidArgument, message: "epoch \(epoch) / batch \(batch) out of range")
        }
        try l.seek(epoch: Int(epoch), batch: Int(batch))
    }
}

@_cdecl("lc_loader_state")
public func lc_loader_state(_ loader: OpaquePointer?, _ out: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    guarded {
        let l = try object(loader, as: StudentLoader.self, "loader")
        give(try json(l.state), to: try required(out, "state_json"))
    }
}

@_cdecl("lc_loader_resume")
public func lc_loader_resume(_ loader: OpaquePointer?, _ state: UnsafePointer<CChar>?) -> Int32 {
    guarded {
        let l = try object(loader, as: StudentLoader.self, "loader")
        try l.resume(from: try decodeJSON(LoaderState.self, state, "state_json"))
    }
}
