/// Builds a `Tokenizer` from a parsed `tokenizer.json`, checking every component and refusing
/// what it cannot honour exactly.
enum TokenizerLoader {
    static func load(_ root: JSONValue) throws -> Tokenizer {
        guard root.members != nil else { throw TokenizerError.malformed(path: "$", reason: "expected a JSON object") }
        let (model, modelTokens, modelIdsByBytes) = try loadModel(root["model"])
        let normalizer = Normalizer(forms: try loadNormalizer(root["normalizer"], path: "normalizer"))
        let steps = try loadPreTokenizer(root["pre_tokenizer"], path: "pre_tokenizer")
        guard steps.contains(where: { if case .byteLevel = $0 { return true } else { return false } }) else {
            throw TokenizerError.unsupported(
                component: "pre_tokenizer",
                detail: "no ByteLevel pre-tokenizer: BPE over Unicode characters (SentencePiece style) is not supported")
        }
        guard case .byteLevel = steps[steps.count - 1],
              steps.filter({ if case .byteLevel = $0 { return true } else { return false } }).count == 1 else {
            throw TokenizerError.unsupported(component: "pre_tokenizer",
                                             detail: "ByteLevel must appear once, as the last step")
        }
        let added = try loadAddedTokens(root["added_tokens"])
        var addedIds: [String: UInt32] = [:]
        for t in added { addedIds[t.content] = t.id }
        let post = try loadPostProcessor(root["post_processor"], path: "post_processor") { name, path in
            if let id = addedIds[name] { return [id] }
            if let id = modelIdsByBytes[Array(name.utf8)] { return [id] }
            throw TokenizerError.malformed(path: path, reason: "special token `\(name)` is not in the vocabulary")
        }
        let hasDecoder = try loadDecoder(root["decoder"])
        return Tokenizer(model: model, normalizer: normalizer, preTokenizer: steps, addedTokens: added,
                         postProcessors: post, hasDecoder: hasDecoder, modelTokens: modelTokens,
                         modelIdsByBytes: modelIdsByBytes,
                         truncationInFile: !(root["truncation"]?.isNull ?? true),
                         paddingInFile: !(root["padding"]?.isNull ?? true))
    }

    static func type(of v: JSONValue, path: String) throws -> String {
        guard let t = v["type"]?.string else { throw TokenizerError.malformed(path: "\(path).type", reason: "missing component type") }
        return t
    }

    static func flag(_ v: JSONValue, _ key: String, path: String, default d: Bool) throws -> Bool {
        guard let x = v[key], !x.isNull else { return d }
        guard let b = x.bool else { throw TokenizerError.malformed(path: "\(path).\(key)", reason: "expected true or false") }
        return b
    }

    // MARK: model

    static func loadModel(_ v: JSONValue?) throws -> (BytePairModel, [String?], [[UInt8]: UInt32]) {
        guard let v, v.members != nil else { throw TokenizerError.malformed(path: "model", reason: "missing model object") }
        let t = v["type"]?.string ?? (v["merges"] != nil ? "BPE" : "unknown")
        guard t == "BPE" else {
            throw TokenizerError.unsupported(component: "model \(t)", detail: "only BPE models are supported")
        }
        if let d = v["dropout"], !d.isNull {
            guard case let .number(p, _) = d else { throw TokenizerError.malformed(path: "model.dropout", reason: "expected a number") }
            if p != 0 && p != 1 {
                // The library treats 0 and 1 as no dropout; anything else is random.
                throw TokenizerError.unsupported(component: "model.dropout", detail: "BPE dropout \(p) makes encoding random")
            }
        }
        for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
            if let s = v[key], !s.isNull, s.string != "" {
                throw TokenizerError.unsupported(component: "model.\(key)", detail: "subword prefixes/suffixes are not used by byte-level BPE")
            }
        }
        if try flag(v, "byte_fallback", path: "model", default: false) {
            throw TokenizerError.unsupported(component: "model.byte_fallback", detail: "byte fallback belongs to SentencePiece-style BPE")
        }
        guard let vocab = v["vocab"]?.members else { throw TokenizerError.malformed(path: "model.vocab", reason: "expected an object of token -> id") }
        var maxId: Int = -1
        var idsByBytes: [[UInt8]: UInt32] = [:]
        idsByBytes.reserveCapacity(vocab.count)
        for (token, idValue) in vocab {
            guard let id = idValue.tokenId else {
                throw TokenizerError.malformed(path: "model.vocab[\(token)]", reason: "expected a non-negative integer id")
            }
            idsByBytes[Array(token.utf8)] = id
            maxId = max(maxId, Int(id))
        }
        guard maxId < 1 << 26 else {
            throw TokenizerError.malformed(path: "model.vocab", reason: "id \(maxId) is implausibly large")
        }
        var tokens = [String?](repeating: nil, count: maxId + 1)
        var byteIds = [Int64](repeating: -1, count: 256)
        var wordIds: [[UInt8]: UInt32] = [:]
        wordIds.reserveCapacity(vocab.count)
        for (token, idValue) in vocab {
            // Safe because every id was checked above.
            let id = idValue.tokenId!
            tokens[Int(id)] = token
            if let bytes = ByteLevel.bytes(of: token) {
                wordIds[bytes] = id
                if bytes.count == 1 { byteIds[Int(bytes[0])] = Int64(id) }
            }
        }
        let merges = try loadMerges(v["merges"], idsByBytes: idsByBytes)
        var unkId: UInt32? = nil
        if let u = v["unk_token"], !u.isNull {
            guard let s = u.string, let id = idsByBytes[Array(s.utf8)] else {
                throw TokenizerError.malformed(path: "model.unk_token", reason: "unknown token is not in the vocabulary")
            }
            unkId = id
        }
        let model = BytePairModel(byteIds: byteIds, merges: merges, wordIds: wordIds,
                                  ignoreMerges: try flag(v, "ignore_merges", path: "model", default: false),
                                  unkId: unkId, fuseUnk: try flag(v, "fuse_unk", path: "model", default: false))
        return (model, tokens, idsByBytes)
    }

    static func loadMerges(_ v: JSONValue?, idsByBytes: [[UInt8]: UInt32]) throws -> [UInt64: UInt64] {
        guard let list = v?.array else { throw TokenizerError.malformed(path: "model.merges", reason: "expected a list") }
        var merges: [UInt64: UInt64] = [:]
        merges.reserveCapacity(list.count)
        var rank: UInt64 = 0
        for (i, item) in list.enumerated() {
            let path = "model.merges[\(i)]"
            let a: [UInt8], b: [UInt8]
            if let s = item.string {
                // The legacy form "a b": the library skips "#version" lines and wants exactly two parts.
                if s.hasPrefix("#version") { continue }
                let parts = s.utf8.split(separator: UInt8(ascii: " "), omittingEmptySubsequences: false)
                guard parts.count == 2 else { throw TokenizerError.malformed(path: path, reason: "merge `\(s)` is not two tokens separated by one space") }
                a = Array(parts[0]); b = Array(parts[1])
            } else if let pair = item.array, pair.count == 2, let x = pair[0].string, let y = pair[1].string {
                a = Array(x.utf8); b = Array(y.utf8)
            } else {
                throw TokenizerError.malformed(path: path, reason: "expected \"a b\" or [\"a\", \"b\"]")
            }
            guard let ia = idsByBytes[a], let ib = idsByBytes[b] else {
                throw TokenizerError.malformed(path: path, reason: "merge uses a token that is not in model.vocab")
            }
            guard let merged = idsByBytes[a + b] else {
                throw TokenizerError.malformed(path: path, reason: "merged token `\(String(decoding: a + b, as: UTF8.self))` is not in model.vocab")
            }
            merges[BytePairModel.key(ia, ib)] = rank << 32 | UInt64(merged)
            rank += 1
        }
        return merges
    }

    // MARK: normalizer

    static func loadNormalizer(_ v: JSONValue?, path: String) throws -> [NormalizationForm] {
        guard let v, !v.isNull else { return [] }
        let t = try type(of: v, path: path)
        if t == "Sequence" {
            guard let list = v["normalizers"]?.array else { throw TokenizerError.malformed(path: "\(path).normalizers", reason: "expected a list") }
            return try list.enumerated().flatMap { try loadNormalizer($1, path: "\(path).normalizers[\($0)]") }
        }
        guard let form = NormalizationForm(rawValue: t) else {
            throw TokenizerError.unsupported(component: "normalizer \(t)", detail: "at \(path); supported: NFC, NFD, NFKC, NFKD, Sequence")
        }
        return [form]
    }

    // MARK: pre-tokenizer

    static func loadPreTokenizer(_ v: JSONValue?, path: String) throws -> [PreTokenizerStep] {
        guard let v, !v.isNull else { return [] }
        let t = try type(of: v, path: path)
        switch t {
        case "Sequence":
            guard let list = v["pretokenizers"]?.array else { throw TokenizerError.malformed(path: "\(path).pretokenizers", reason: "expected a list") }
            return try list.enumerated().flatMap { try loadPreTokenizer($1, path: "\(path).pretokenizers[\($0)]") }
        case "ByteLevel":
            return [.byteLevel(addPrefixSpace: try flag(v, "add_prefix_space", path: path, default: true),
                               useRegex: try flag(v, "use_regex", path: path, default: true))]
        case "Split":
            guard let pattern = v["pattern"] else { throw TokenizerError.malformed(path: "\(path).pattern", reason: "missing") }
            let scanner: SplitPattern
            if let regex = pattern["Regex"]?.string {
                guard let s = SplitPattern(regex: regex) else {
                    throw TokenizerError.unsupported(component: "pre_tokenizer Split regex",
                                                     detail: "at \(path): pattern \(regex) is not one of the GPT-2, Llama 3 or Qwen 2 patterns")
                }
                scanner = s
            } else if let literal = pattern["String"]?.string, !literal.isEmpty {
                scanner = .literal(Array(literal.utf8))
            } else {
                throw TokenizerError.malformed(path: "\(path).pattern", reason: "expected {\"Regex\": …} or a non-empty {\"String\": …}")
            }
            let b = v["behavior"]?.string ?? ""
            guard let behavior = SplitBehavior(rawValue: b) else {
                throw TokenizerError.malformed(path: "\(path).behavior", reason: "unknown split behavior `\(b)`")
            }
            return [.split(scanner, behavior, invert: try flag(v, "invert", path: path, default: false))]
        default:
            throw TokenizerError.unsupported(component: "pre_tokenizer \(t)", detail: "at \(path); supported: ByteLevel, Split, Sequence")
        }
    }

    // MARK: added tokens

    static func loadAddedTokens(_ v: JSONValue?) throws -> [AddedToken] {
        guard let v, !v.isNull else { return [] }
        guard let list = v.array else { throw TokenizerError.malformed(path: "added_tokens", reason: "expected a list") }
        return try list.enumerated().map { i, t in
            let path = "added_tokens[\(i)]"
            guard let id = t["id"]?.tokenId else { throw TokenizerError.malformed(path: "\(path).id", reason: "expected a non-negative integer") }
            guard let content = t["content"]?.string else { throw TokenizerError.malformed(path: "\(path).content", reason: "expected a string") }
            let special = try flag(t, "special", path: path, default: false)
            return AddedToken(id: id, content: content,
                              singleWord: try flag(t, "single_word", path: path, default: false),
                              lstrip: try flag(t, "lstrip", path: path, default: false),
                              rstrip: try flag(t, "rstrip", path: path, default: false),
                              normalized: try flag(t, "normalized", path: path, default: !special),
                              special: special)
        }
    }

    // MARK: post-processor

    static func loadPostProcessor(_ v: JSONValue?, path: String,
                                  resolve: (String, String) throws -> [UInt32]) throws -> [PostProcessor] {
        guard let v, !v.isNull else { return [] }
        let t = try type(of: v, path: path)
        switch t {
        case "Sequence":
            guard let list = v["processors"]?.array else { throw TokenizerError.malformed(path: "\(path).processors", reason: "expected a list") }
            return try list.enumerated().flatMap { try loadPostProcessor($1, path: "\(path).processors[\($0)]", resolve: resolve) }
        case "ByteLevel":
            return []  // only trims offsets; ids are unchanged
        case "RobertaProcessing", "BertProcessing":
            func pair(_ key: String) throws -> UInt32 {
                guard let p = v[key]?.array, p.count == 2, let id = p[1].tokenId else {
                    throw TokenizerError.malformed(path: "\(path).\(key)", reason: "expected [token, id]")
                }
                return id
            }
            return [.template([.special([try pair("cls")]), .sequence, .special([try pair("sep")])])]
        case "TemplateProcessing":
            guard let single = v["single"]?.array else { throw TokenizerError.malformed(path: "\(path).single", reason: "expected a list") }
            let specials = v["special_tokens"]?.members ?? []
            var pieces: [TemplatePiece] = []
            for (i, item) in single.enumerated() {
                let p = "\(path).single[\(i)]"
                if let s = item["SpecialToken"] {
                    guard let name = s["id"]?.string else { throw TokenizerError.malformed(path: "\(p).SpecialToken.id", reason: "expected a string") }
                    if let entry = specials.first(where: { $0.0 == name })?.1 {
                        guard let ids = entry["ids"]?.array?.compactMap(\.tokenId), ids.count == entry["ids"]?.array?.count else {
                            throw TokenizerError.malformed(path: "\(path).special_tokens.\(name).ids", reason: "expected a list of ids")
                        }
                        pieces.append(.special(ids))
                    } else {
                        pieces.append(.special(try resolve(name, p)))
                    }
                } else if let s = item["Sequence"] {
                    guard s["id"]?.string == "A" else {
                        throw TokenizerError.malformed(path: "\(p).Sequence.id", reason: "a single-sequence template can only use sequence A")
                    }
                    pieces.append(.sequence)
                } else {
                    throw TokenizerError.malformed(path: p, reason: "expected SpecialToken or Sequence")
                }
            }
            return [.template(pieces)]
        default:
            throw TokenizerError.unsupported(component: "post_processor \(t)",
                                             detail: "at \(path); supported: ByteLevel, TemplateProcessing, RobertaProcessing, BertProcessing, Sequence")
        }
    }

    // MARK: decoder

    static func loadDecoder(_ v: JSONValue?) throws -> Bool {
        guard let v, !v.isNull else { return false }
        let t = try type(of: v, path: "decoder")
        if t == "ByteLevel" { return true }
        if t == "Sequence", let list = v["decoders"]?.array, list.count == 1, list[0]["type"]?.string == "ByteLevel" {
            return true
        }
        throw TokenizerError.unsupported(component: "decoder \(t)", detail: "only the ByteLevel decoder is supported")
    }
}
