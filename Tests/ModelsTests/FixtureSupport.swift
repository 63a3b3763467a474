import Foundation
import Checkpoints

/// Reference models written by tools/make_model_fixtures.py.
let fixtureRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures").path

enum FixtureError: Error { case unreadable(String) }

/// A fixture's inputs and PyTorch (float64, rounded to float32) logits.
struct Reference {
    /// tokens (B, T)
    let tokens: [[Int32]]
    /// logits (B·T, V)
    let logits: [Float]
    let vocab: Int

    init(_ name: String) throws {
        let dir = fixtureRoot + "/" + name
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/inputs.json")))
        guard let tokens = (json as? [String: Any])?["tokens"] as? [[Int]] else { throw FixtureError.unreadable(dir + "/inputs.json") }
        self.tokens = tokens.map { $0.map { Int32($0) } }
        (logits, vocab) = try Self.npyFloat32(dir + "/logits.npy")
    }

    /// Reads a little-endian float32 .npy file (C order); returns the data and the last dimension.
    static func npyFloat32(_ path: String) throws -> ([Float], Int) {
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        guard bytes.count > 10, bytes[0] == 0x93, bytes[1...5].elementsEqual("NUMPY".utf8) else { throw FixtureError.unreadable(path) }
        let headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
        let header = String(decoding: bytes[10..<(10 + headerLength)], as: UTF8.self)
        guard header.contains("'descr': '<f4'"), header.contains("'fortran_order': False"),
              let open = header.firstIndex(of: "("), let close = header.firstIndex(of: ")")
        else { throw FixtureError.unreadable(path) }
        let shape = header[header.index(after: open)..<close].split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        let start = 10 + headerLength
        let count = shape.reduce(1, *)
        guard bytes.count == start + 4 * count, let last = shape.last else { throw FixtureError.unreadable(path) }
        let values = (0..<count).map { i in
            Float(bitPattern: UInt32(bytes[start + 4 * i]) | UInt32(bytes[start + 4 * i + 1]) << 8
                  | UInt32(bytes[start + 4 * i + 2]) << 16 | UInt32(bytes[start + 4 * i + 3]) << 24)
        }
        return (values, last)
    }
}

/// A copy of a fixture model in a temporary directory, to break on purpose.
func copyFixture(_ name: String) throws -> String {
    let dir = NSTemporaryDirectory() + "/models-tests-" + UUID().uuidString
    try FileManager.default.copyItem(atPath: fixtureRoot + "/" + name, toPath: dir)
    return dir
}

/// Rewrites `dir/model.safetensors` from its own tensors after `edit` changes the list.
func rewriteWeights(_ dir: String, _ edit: (inout [SafetensorsWriter.Entry]) -> Void) throws {
    let path = dir + "/model.safetensors"
    let file = try SafetensorsFile(path: path)
    var entries = try file.names.map { name in
        let t = try file.tensor(name)
        return SafetensorsWriter.Entry(name: name, dtype: t.dtype, shape: t.shape, values: t.floats())
    }
    edit(&entries)
    try SafetensorsWriter.write(entries, metadata: file.metadata, to: path)
}
