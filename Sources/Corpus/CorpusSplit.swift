import CXXHash
import ShardFormat

/// A deterministic division of a corpus into named parts by document, so that the data a
/// teacher was trained on, the data its targets are cached for and the data students are
/// evaluated on need not overlap.
///
/// A document goes to a part by its content key alone: `u = XXH3-64(key, seed) / 2^64` falls
/// into the cumulative fraction of one part. The assignment therefore does not depend on file
/// order, and adding documents never moves existing ones.
public struct CorpusSplit: Sendable, Equatable {
    public struct Part: Sendable, Equatable {
        public var name: String
        public var fraction: Double
    }
    public var parts: [Part]
    public var seed: UInt64

    /// Parses `name=fraction,name=fraction,…`; fractions must be positive and sum to 1.
    /// - Throws: ``CorpusError/badSplit(_:)`` naming the bad piece.
    public init(parsing text: String, seed: UInt64 = 0) throws {
        var parts: [Part] = []
        for piece in text.split(separator: ",") {
            let kv = piece.split(separator: "=", maxSplits: 1)
            guard kv.count == 2, let f = Double(kv[1]), f > 0, f <= 1 else {
                throw CorpusError.badSplit("\"\(piece)\" is not name=fraction with 0 < fraction <= 1")
            }
            let name = String(kv[0])
            guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }) else {
                throw CorpusError.badSplit("part name \"\(name)\" must be letters, digits, - or _")
            }
            guard !parts.contains(where: { $0.name == name }) else { throw CorpusError.badSplit("part \"\(name)\" named twice") }
            parts.append(Part(name: name, fraction: f))
        }
        let total = parts.reduce(0) { $0 + $1.fraction }
        guard !parts.isEmpty, abs(total - 1) < 1e-9 else {
            throw CorpusError.badSplit("fractions sum to \(total), not 1")
        }
        self.parts = parts
        self.seed = seed
    }

    /// The index into `parts` of the part a document belongs to.
    public func partIndex(for key: DocumentHash) -> Int {
        let words = [key.high.littleEndian, key.low.littleEndian]
        let h = words.withUnsafeBytes { XXH3_64bits_withSeed($0.baseAddress, 16, seed) }
        let u = Double(h >> 11) * 0x1p-53  // uniform in [0, 1)
        var cumulative = 0.0
        for (i, p) in parts.enumerated() {
            cumulative += p.fraction
            if u < cumulative { return i }
        }
        return parts.count - 1
    }
}
