import Foundation

/// The Unicode normalisation forms a byte-level tokenizer's `normalizer` may ask for.
enum NormalizationForm: String, Sendable {
    case nfc = "NFC", nfd = "NFD", nfkc = "NFKC", nfkd = "NFKD"

    func apply(_ s: String) -> String {
        switch self {
        case .nfc: return s.precomposedStringWithCanonicalMapping
        case .nfd: return s.decomposedStringWithCanonicalMapping
        case .nfkc: return s.precomposedStringWithCompatibilityMapping
        case .nfkd: return s.decomposedStringWithCompatibilityMapping
        }
    }
}

/// The normalizer: a list of forms applied in order (an empty list is no normalizer).
struct Normalizer: Sendable {
    var forms: [NormalizationForm]

    var isIdentity: Bool { forms.isEmpty }

    func apply(_ bytes: ArraySlice<UInt8>) -> [UInt8] {
        var s = String(decoding: bytes, as: UTF8.self)
        for f in forms { s = f.apply(s) }
        return Array(s.utf8)
    }

    /// ASCII text is unchanged by every supported form, so it skips the conversion.
    func applyIfNeeded(_ bytes: ArraySlice<UInt8>) -> [UInt8]? {
        if forms.isEmpty || bytes.allSatisfy({ $0 < 0x80 }) { return nil }
        return apply(bytes)
    }
}
