import Foundation
import Testing
@testable import Checkpoints

/// A fresh temporary directory per test.
func temporaryDirectory() -> String {
    let path = NSTemporaryDirectory() + "/checkpoints-tests-" + UUID().uuidString
    try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// A safetensors file made by hand: `header` JSON, `data` bytes, optionally a lying length.
func rawSafetensors(_ header: String, data: [UInt8], claimedLength: UInt64? = nil) -> [UInt8] {
    let json = Array(header.utf8)
    var out: [UInt8] = []
    withUnsafeBytes(of: (claimedLength ?? UInt64(json.count)).littleEndian) { out += $0 }
    return out + json + data
}

func write(_ bytes: [UInt8], to path: String) {
    _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
}

/// The error opening `bytes` as a safetensors file gives, as text (nil when it opens).
func openError(_ bytes: [UInt8]) -> String? {
    let path = temporaryDirectory() + "/bad.safetensors"
    write(bytes, to: path)
    do {
        _ = try SafetensorsFile(path: path)
        return nil
    } catch {
        return error.description
    }
}

@Suite struct SafetensorsTests {
    @Test func writerOutputReadsBackExactlyInEveryDtype() throws {
        let path = temporaryDirectory() + "/t.safetensors"
        let a: [Float] = (0..<12).map { Float($0) * 0.37 - 2 }
        let b: [Float] = [1, -2.5, 0x1p-10, 65504, -0.0, 3.140625]
        let c: [Float] = [0.1, 0.2, 0.3]
        try SafetensorsWriter.write([
            .init(name: "a", dtype: .float32, shape: [3, 4], values: a),
            .init(name: "b", dtype: .float16, shape: [6], values: b),
            .init(name: "c.weight", dtype: .bfloat16, shape: [1, 3], values: c),
            .init(name: "empty", dtype: .float32, shape: [0, 5], values: []),
        ], metadata: ["format": "pt"], to: path)
        let file = try SafetensorsFile(path: path)
        #expect(file.metadata == ["format": "pt"])
        #expect(file.dataStart % 8 == 0)
        #expect(file.names == ["a", "b", "c.weight", "empty"])
        #expect(try file.tensor("a").floats() == a)
        #expect(try file.tensor("a").shape == [3, 4])
        #expect(try file.tensor("b").floats() == b)  // all exactly representable in half
        #expect(try file.tensor("b").dtype == .float16)
        let cBack = try file.tensor("c.weight").floats()
        for (x, y) in zip(c, cBack) { #expect(abs(Double(x) - Double(y)) <= abs(Double(x)) / 256) }
        #expect(try file.tensor("empty").elementCount == 0)
    }

    @Test func bfloat16RoundsToNearestEven() {
        // 1 + 2^-8 is halfway between bf16 neighbours 1 and 1 + 2^-7: ties go to even (1).
        #expect(FloatConversion.bfloat16(1 + 0x1p-8) == 0x3F80)
        #expect(FloatConversion.bfloat16(1 + 0x1p-8 + 0x1p-20) == 0x3F81)
        #expect(FloatConversion.bfloat16(1 + 3 * 0x1p-8) == 0x3F82)  // tie, odd below → up
        #expect(FloatConversion.float(bfloat16: 0xC040) == -3)
    }

    @Test func float16ConversionRoundTripsEveryFiniteValue() {
        for bits in 0...UInt16.max {
            let x = FloatConversion.float(float16: bits)
            if x.isNaN { continue }
            #expect(FloatConversion.float16(x) == bits, "bits \(String(bits, radix: 16))")
        }
        #expect(FloatConversion.float(float16: 0x0001) == 0x1p-24)
        #expect(FloatConversion.float16(70000) == 0x7C00)  // overflow to infinity
        #expect(FloatConversion.float16(1 + 0x1p-11) == 0x3C00)  // tie to even
    }

    @Test func writerRefusesValuesThatDoNotFillTheShape() {
        let path = temporaryDirectory() + "/w.safetensors"
        #expect(throws: CheckpointError.tensor(file: path, tensor: "x", reason: "3 values do not fill shape [2, 2]")) {
            try SafetensorsWriter.write([.init(name: "x", shape: [2, 2], values: [1, 2, 3])], to: path)
        }
        #expect(!FileManager.default.fileExists(atPath: path))
    }

    @Test func truncatedFileIsRefusedNamingTheFile() throws {
        let dir = temporaryDirectory()
        let path = dir + "/t.safetensors"
        try SafetensorsWriter.write([.init(name: "w", shape: [4, 4], values: .init(repeating: 1, count: 16))], to: path)
        let whole = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        let cutData = openError(Array(whole.dropLast(5)))
        #expect(cutData?.contains("tensors need 64 data bytes but the file has 59 (truncated?)") == true, "\(cutData ?? "")")
        let cutHeader = openError(Array(whole.prefix(20)))
        #expect(cutHeader?.contains("runs past the end of the 20-byte file") == true, "\(cutHeader ?? "")")
        #expect(openError([1, 2, 3])?.contains("file is 3 bytes") == true)
    }

    @Test func headerThatLiesIsRefused() {
        let data = [UInt8](repeating: 0, count: 8)
        let huge = openError(rawSafetensors(#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, data: data,
                                            claimedLength: 1 << 40))
        #expect(huge?.contains("exceeds the 100000000-byte limit") == true, "\(huge ?? "")")
        let notJSON = openError(rawSafetensors(#"{"w": [1, 2"#, data: data))
        #expect(notJSON?.contains("header is not a valid JSON object") == true)
        let notObject = openError(rawSafetensors(#"[1, 2, 3]"#, data: []))
        #expect(notObject?.contains("does not start with '{'") == true)
        let sizeMismatch = openError(rawSafetensors(#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, data: data))
        #expect(sizeMismatch?.contains("tensor 'w': data_offsets [0, 8] hold 8 bytes but shape [3] of F32 needs 12") == true,
                "\(sizeMismatch ?? "")")
        let negative = openError(rawSafetensors(#"{"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#, data: data))
        #expect(negative?.contains("tensor 'w': shape") == true)
        let overflow = openError(rawSafetensors(
            #"{"w":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,8]}}"#, data: data))
        #expect(overflow?.contains("overflows") == true, "\(overflow ?? "")")
        let backwards = openError(rawSafetensors(#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#, data: data))
        #expect(backwards?.contains("'data_offsets' must be two integers") == true)
        let badMetadata = openError(rawSafetensors(#"{"__metadata__":{"a":1}}"#, data: []))
        #expect(badMetadata?.contains("__metadata__ value for 'a' is not a string") == true)
    }

    @Test func overlappingGappedOrUncoveredTensorsAreRefused() {
        let data = [UInt8](repeating: 0, count: 16)
        let overlap = openError(rawSafetensors(
            #"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#,
            data: data))
        #expect(overlap?.contains("tensor 'b': data_offsets begin 8 overlaps tensor 'a'") == true, "\(overlap ?? "")")
        let gap = openError(rawSafetensors(
            #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#,
            data: data))
        #expect(gap?.contains("tensor 'b': data_offsets begin 8 leaves a gap after offset 4") == true, "\(gap ?? "")")
        let trailing = openError(rawSafetensors(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, data: data))
        #expect(trailing?.contains("8 bytes after the last tensor are not covered") == true, "\(trailing ?? "")")
    }

    @Test func dtypesAreCheckedByName() throws {
        let data = [UInt8](repeating: 0, count: 16)
        let unknown = openError(rawSafetensors(#"{"w":{"dtype":"Q4_K","shape":[2],"data_offsets":[0,16]}}"#, data: data))
        #expect(unknown?.contains("tensor 'w': unknown dtype 'Q4_K'") == true)
        // A valid I64 tensor opens (the file is well-formed) but is refused when asked for.
        let path = temporaryDirectory() + "/i64.safetensors"
        write(rawSafetensors(#"{"ids":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}}"#, data: data), to: path)
        let file = try SafetensorsFile(path: path)
        #expect(throws: CheckpointError.tensor(file: path, tensor: "ids", reason: "dtype I64 is not supported (only F32, F16, BF16)")) {
            try file.tensor("ids")
        }
        #expect(throws: CheckpointError.tensor(file: path, tensor: "nope", reason: "not in this file")) {
            try file.tensor("nope")
        }
    }

    @Test func missingFileNamesTheSystemCall() {
        let path = temporaryDirectory() + "/absent.safetensors"
        #expect(throws: CheckpointError.system(file: path, call: "open", errno: ENOENT)) {
            try SafetensorsFile(path: path)
        }
    }

    @Test func unalignedHalfPrecisionDataIsRead() throws {
        // A header of odd length puts the data at an odd offset; reads must not assume alignment.
        let header = #"{"h":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}}"#
        #expect((8 + header.utf8.count) % 2 == 1)
        let path = temporaryDirectory() + "/odd.safetensors"
        write(rawSafetensors(header, data: [0x80, 0x3F, 0x40, 0xC0]), to: path)
        #expect(try SafetensorsFile(path: path).tensor("h").floats() == [1, -3])
    }
}
