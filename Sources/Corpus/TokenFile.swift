import Foundation

/// Pre-tokenised corpus files, as nanoGPT and llm.c users have them.
///
/// Two layouts are read, both little-endian:
/// - **llm.c** (`.bin` with a header): 256 `Int32` header values — `[0]` magic, `[1]` version,
///   `[2]` token count — then the tokens: magic 20240520 / version 1 stores `UInt16` ids
///   (GPT-2 vocabularies), magic 20240801 / version 7 stores `UInt32` ids (Llama 3).
/// - **raw**: no header, `UInt16` ids (`.bin`, `.u16`, as nanoGPT's `train.bin`) or `UInt32`
///   ids (`.u32`).
///
/// A `.bin` file is taken as llm.c only when the magic, version and the token count agree
/// with the file size; otherwise it is raw `UInt16`. Documents inside a token file are
/// separated by the end-of-text id (llm.c puts it before every document).
public enum TokenFile {
    public static let headerInts = 256
    public static let gpt2Magic: Int32 = 20240520
    public static let llama3Magic: Int32 = 20240801

    /// Reads every token id of a token file.
    /// - Throws: ``CorpusError/badTokenFile(path:reason:)`` when the size or header is inconsistent.
    public static func read(path: String) throws -> [Int32] {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped) }
        catch { throw CorpusError.unreadable(path: path, reason: error.localizedDescription) }
        let ext = (path as NSString).pathExtension.lowercased()
        return try data.withUnsafeBytes { raw -> [Int32] in
            if ext == "bin", let (offset, width, count) = try llmcLayout(raw, path: path) {
                return decode(raw, offset: offset, width: width, count: count)
            }
            let width = ext == "u32" ? 4 : 2
            guard raw.count % width == 0 else {
                throw CorpusError.badTokenFile(path: path, reason: "size \(raw.count) is not a multiple of \(width) bytes")
            }
            return decode(raw, offset: 0, width: width, count: raw.count / width)
        }
    }

    /// Writes ids in the llm.c layout (`UInt16` when every id fits, else `UInt32`) or raw.
    /// - Throws: ``CorpusError/badTokenFile(path:reason:)`` for ids that do not fit the width.
    public static func write(_ ids: [Int32], path: String, llmcHeader: Bool = true) throws {
        let wide = ids.contains { $0 < 0 || $0 > Int32(UInt16.max) }
        if wide && !llmcHeader && !path.hasSuffix(".u32") {
            throw CorpusError.badTokenFile(path: path, reason: "ids above 65535 need .u32 or the llm.c header")
        }
        if ids.contains(where: { $0 < 0 }) {
            throw CorpusError.badTokenFile(path: path, reason: "negative token id")
        }
        var out = Data()
        if llmcHeader {
            var header = [Int32](repeating: 0, count: headerInts)
            header[0] = wide ? llama3Magic : gpt2Magic
            header[1] = wide ? 7 : 1
            header[2] = Int32(clamping: ids.count)
            header.withUnsafeBytes { out.append(contentsOf: $0) }
        }
        if wide || path.hasSuffix(".u32") {
            let v = ids.map { UInt32(truncatingIfNeeded: $0).littleEndian }
            v.withUnsafeBytes { out.append(contentsOf: $0) }
        } else {
            let v = ids.map { UInt16(truncatingIfNeeded: $0).littleEndian }
            v.withUnsafeBytes { out.append(contentsOf: $0) }
        }
        do { try out.write(to: URL(fileURLWithPath: path), options: .atomic) }
        catch { throw CorpusError.unreadable(path: path, reason: error.localizedDescription) }
    }

    private static func llmcLayout(_ raw: UnsafeRawBufferPointer, path: String) throws -> (Int, Int, Int)? {
        let headerBytes = headerInts * 4
        guard raw.count >= headerBytes else { return nil }
        let magic = Int32(littleEndian: raw.loadUnaligned(fromByteOffset: 0, as: Int32.self))
        let version = Int32(littleEndian: raw.loadUnaligned(fromByteOffset: 4, as: Int32.self))
        let count = Int(Int32(littleEndian: raw.loadUnaligned(fromByteOffset: 8, as: Int32.self)))
        let width: Int
        switch (magic, version) {
        case (gpt2Magic, 1): width = 2
        case (llama3Magic, 7): width = 4
        case (gpt2Magic, _), (llama3Magic, _):
            throw CorpusError.badTokenFile(path: path, reason: "llm.c magic \(magic) with unknown version \(version)")
        default: return nil
        }
        guard count >= 0, headerBytes + count * width == raw.count else {
            throw CorpusError.badTokenFile(
                path: path, reason: "header says \(count) tokens of \(width) bytes but the file has \(raw.count - headerBytes) data bytes")
        }
        return (headerBytes, width, count)
    }

    private static func decode(_ raw: UnsafeRawBufferPointer, offset: Int, width: Int, count: Int) -> [Int32] {
        // Safe because callers checked offset + count * width <= raw.count.
        if width == 2 {
            return (0..<count).map { Int32(UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: offset + 2 * $0, as: UInt16.self))) }
        }
        return (0..<count).map { Int32(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: offset + 4 * $0, as: UInt32.self))) }
    }
}
