import CZstd
import Foundation

/// Whole-file zstd decompression for compressed corpus files (`*.jsonl.zst`, `*.txt.zst`),
/// streaming so frames without a recorded content size work too.
enum CompressedCorpus {
    /// The decompressed bytes of a `.zst` file.
    /// - Throws: ``CorpusError/unreadable(path:reason:)`` naming the zstd error.
    static func read(path: String) throws -> Data {
        let input: Data
        do { input = try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped) }
        catch { throw CorpusError.unreadable(path: path, reason: error.localizedDescription) }
        guard let dctx = ZSTD_createDCtx() else { throw CorpusError.unreadable(path: path, reason: "ZSTD_createDCtx failed") }
        defer { ZSTD_freeDCtx(dctx) }
        var output = Data()
        let chunk = ZSTD_DStreamOutSize()
        var buffer = [UInt8](repeating: 0, count: chunk)
        var last: Int = 0
        try input.withUnsafeBytes { (src: UnsafeRawBufferPointer) in
            var inBuf = ZSTD_inBuffer(src: src.baseAddress, size: src.count, pos: 0)
            repeat {
                let produced: Int = try buffer.withUnsafeMutableBytes { dst in
                    var outBuf = ZSTD_outBuffer(dst: dst.baseAddress, size: dst.count, pos: 0)
                    let r = ZSTD_decompressStream(dctx, &outBuf, &inBuf)
                    if ZSTD_isError(r) != 0 {
                        throw CorpusError.unreadable(path: path, reason: "ZSTD_decompressStream: " + String(cString: ZSTD_getErrorName(r)))
                    }
                    last = r
                    return outBuf.pos
                }
                output.append(contentsOf: buffer[0..<produced])
            } while inBuf.pos < inBuf.size || last != 0 && inBuf.pos < inBuf.size
        }
        // A non-zero hint after all input was consumed means the last frame is cut short.
        if last != 0 { throw CorpusError.unreadable(path: path, reason: "truncated zstd frame") }
        return output
    }
}
