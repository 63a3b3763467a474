/// A Hugging Face model directory: `config.json` plus either `model.safetensors` or a sharded
/// `model.safetensors.index.json` whose `weight_map` names the shard holding each tensor.
///
/// Every file is memory-mapped and validated on open. Shard names must be plain file names in
/// the directory (no `/`, no `..`): an index may come from someone else.
public final class ModelCheckpoint: @unchecked Sendable {
    // Sendable because all state is immutable after init.
    public let directory: String
    public let config: ModelConfig
    /// The opened safetensors files (one, or the shards in name order).
    public let files: [SafetensorsFile]
    private let location: [String: Int]

    /// Opens `directory`. Throws naming the file (and tensor) at fault.
    public init(directory: String) throws(CheckpointError) {
        self.directory = directory
        config = try ModelConfig(path: directory + "/config.json")
        let single = directory + "/model.safetensors"
        let index = directory + "/model.safetensors.index.json"
        if Self.exists(single) {
            let file = try SafetensorsFile(path: single)
            files = [file]
            location = file.tensors.mapValues { _ in 0 }
        } else if Self.exists(index) {
            (files, location) = try Self.openShards(index: index, directory: directory)
        } else {
            throw .malformed(file: directory, reason: "neither model.safetensors nor model.safetensors.index.json is in this directory")
        }
    }

    /// All tensor names, sorted.
    public var tensorNames: [String] { location.keys.sorted() }

    public func contains(_ name: String) -> Bool { location[name] != nil }

    /// The tensor `name` from whichever file holds it.
    public func tensor(_ name: String) throws(CheckpointError) -> TensorView {
        guard let i = location[name] else {
            throw .tensor(file: files.count == 1 ? files[0].path : directory, tensor: name, reason: "missing from the checkpoint")
        }
        return try files[i].tensor(name)
    }

    private static func exists(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0
    }

    private static func openShards(index: String, directory: String) throws(CheckpointError)
        -> ([SafetensorsFile], [String: Int])
    {
        let mapped = try MappedFile(path: index)
        guard let json = JSONValue.parse(mapped.bytes), let members = json.object else {
            throw .malformed(file: index, reason: "not a valid JSON object")
        }
        guard let weightMap = members["weight_map"]?.object else {
            throw .malformed(file: index, reason: "missing 'weight_map' object")
        }
        var shardNames: [String: Int] = [:]
        var assignment: [String: String] = [:]
        for (tensor, value) in weightMap {
            guard let shard = value.string else {
                throw .tensor(file: index, tensor: tensor, reason: "weight_map value is not a file name")
            }
            guard !shard.isEmpty, !shard.contains("/"), !shard.contains("\\"), shard != ".", shard != ".." else {
                throw .tensor(file: index, tensor: tensor, reason: "shard '\(shard)' is not a plain file name in the model directory")
            }
            assignment[tensor] = shard
            shardNames[shard] = 0
        }
        let ordered = shardNames.keys.sorted()
        var files: [SafetensorsFile] = []
        for (i, name) in ordered.enumerated() {
            files.append(try SafetensorsFile(path: directory + "/" + name))
            shardNames[name] = i
        }
        var location: [String: Int] = [:]
        for (tensor, shard) in assignment {
            // Safe because every shard in `assignment` was entered in `shardNames` above.
            let i = shardNames[shard] ?? 0
            guard files[i].tensors[tensor] != nil else {
                throw .tensor(file: files[i].path, tensor: tensor, reason: "listed in \(index) but not in this shard")
            }
            location[tensor] = i
        }
        return (files, location)
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
