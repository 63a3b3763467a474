import Foundation
import Checkpoints

/// A student or teacher architecture from a small JSON file:
///
///     {"layers": 4, "hidden": 256, "heads": 4, "kv_heads": 2, "ffn": 768,
///      "vocab": 8192, "context": 256, "rope_theta": 10000, "tied": true}
///
/// (`kv_heads` defaults to `heads`, `rope_theta` to 10000, `tied` to true, `ffn` to
/// 8/3·hidden rounded up to a multiple of 64). A Hugging Face `config.json` (a file with
/// `architectures`) is accepted as well.
public enum ModelSpec {
    /// - Throws: ``TrainingError/badSetting(_:)`` naming the file and field.
    public static func load(path: String) throws -> ModelConfig {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw TrainingError.io(path: path, reason: "cannot read: \(error.localizedDescription)")
        }
        guard let o = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw TrainingError.badSetting("\(path): not a JSON object")
        }
        if o["architectures"] != nil {
            do { return try ModelConfig(path: path) } catch { throw TrainingError.badSetting("\(error)") }
        }
        func int(_ key: String, _ fallback: Int? = nil) throws -> Int {
            if let v = o[key] as? Int, v > 0 { return v }
            if o[key] == nil, let fallback { return fallback }
            throw TrainingError.badSetting("\(path): \"\(key)\" must be a positive integer")
        }
        let known: Set = ["layers", "hidden", "heads", "kv_heads", "ffn", "vocab", "context", "rope_theta", "tied", "head_dim", "norm_eps"]
        if let unknown = o.keys.sorted().first(where: { !known.contains($0) }) {
            throw TrainingError.badSetting("\(path): unknown field \"\(unknown)\" (known: \(known.sorted().joined(separator: ", ")))")
        }
        let hidden = try int("hidden"), heads = try int("heads")
        let ffn = try int("ffn", (hidden * 8 / 3 + 63) / 64 * 64)
        let theta = (o["rope_theta"] as? Double) ?? 10_000
        let tied = (o["tied"] as? Bool) ?? true
        let headDim = try int("head_dim", hidden / heads)
        guard headDim * heads == hidden || o["head_dim"] != nil else {
            throw TrainingError.badSetting("\(path): hidden \(hidden) is not a multiple of heads \(heads); give head_dim")
        }
        do {
            return try ModelConfig.llama(vocabSize: try int("vocab"), hiddenSize: hidden, layerCount: try int("layers"),
                                         headCount: heads, kvHeadCount: try int("kv_heads", heads),
                                         headDim: o["head_dim"] == nil ? nil : headDim, intermediateSize: ffn,
                                         maxPositions: try int("context"), tieWordEmbeddings: tied, ropeTheta: theta,
                                         normEpsilon: Float((o["norm_eps"] as? Double) ?? 1e-5))
        } catch let e as TrainingError {
            throw e
        } catch {
            throw TrainingError.badSetting("\(path): \(error)")
        }
    }
}
