import Foundation
import ShardFormat

/// Content fingerprints recorded in a cache's manifest: `xxh3:` and 16 hex digits.
///
/// - teacher: XXH3-64 over the XXH3-64 of `config.json` and of every `*.safetensors` file in
///   name order (weights and architecture; a renamed directory keeps its fingerprint);
/// - tokenizer: XXH3-64 of the `tokenizer.json` bytes;
/// - corpus: XXH3-64 of the token stream, the document keys and the window length — the
///   exact windows a cache holds.
public enum Fingerprint {
    static func render(_ h: UInt64) -> String {
        let s = String(h, radix: 16)
        return "xxh3:" + String(repeating: "0", count: 16 - s.count) + s
    }

    static func file(_ path: String) throws -> UInt64 {
        do {
            let data = try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped)
            return data.withUnsafeBytes { Checksum.xxh3($0) }
        } catch {
            throw CorpusError.unreadable(path: path, reason: error.localizedDescription)
        }
    }

    /// The tokenizer fingerprint of a `tokenizer.json`, for checking a student against a cache.
    /// - Throws: ``CorpusError/unreadable(path:reason:)``.
    public static func tokenizer(path: String) throws -> String {
        render(try file(path))
    }

    static func combine(_ hashes: [UInt64]) -> UInt64 {
        let le = hashes.map(\.littleEndian)
        return le.withUnsafeBytes { Checksum.xxh3($0) }
    }

    /// The teacher fingerprint of a model directory.
    /// - Throws: ``CorpusError/unreadable(path:reason:)`` naming a file that cannot be read.
    public static func teacher(directory: String) throws -> String {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        let weights = names.filter { $0.hasSuffix(".safetensors") }.sorted()
        let parts = try (["config.json"] + weights).map { try file((directory as NSString).appendingPathComponent($0)) }
        return render(combine(parts))
    }

    /// The corpus fingerprint of a stream cut into windows of `context` tokens.
    public static func corpus(_ stream: TokenStream, context: Int) -> String {
        let ids = stream.ids.withUnsafeBytes { Checksum.xxh3($0) }
        let keys = stream.documentKeys.flatMap { [$0.high, $0.low] }
        return render(combine([ids, combine(keys), UInt64(context)]))
    }
}
