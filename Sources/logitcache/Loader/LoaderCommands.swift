import ArgumentParser
import CommandLineSupport
import Foundation
import Truncation
import ShardFormat
import StudentLoader

/// Commands of the student loader area (batches).
enum LoaderCommands {
    static var top: [ParsableCommand.Type] { [BatchesCommand.self] }
}

struct BatchesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "batches",
        abstract: "Print the loader's batches (a digest per batch, or full contents with --json).")
    @Argument(help: "Cache directory.") var cache: String
    @OptionGroup var options: LoaderOptions
    @Option(help: "First epoch.") var epoch: Int = 0
    @Option(help: "Start at a saved position instead: a loader state as JSON text or a file holding it (the `state` of a --json line).")
    var resume: String?
    @Option(help: "Batches to print (default: the rest of the epoch).") var count: Int?
    @Option(help: "Refuse the cache unless its tokenizer fingerprint is this.") var tokenizer: String?
    @Option(help: "The student's vocabulary size (required with --tokenizer).") var vocab: Int?
    @Flag(help: "One JSON object per batch with every array.") var json = false

    func run() throws {
        do {
            if let c = count, c < 0 { throw ValidationError("--count \(c) must be >= 0") }
            guard (0...Int(Int32.max)).contains(epoch) else { throw ValidationError("--epoch \(epoch) must be in 0...\(Int32.max)") }
            let c = try options.configuration()
            guard (tokenizer == nil) == (vocab == nil) else { throw ValidationError("--tokenizer and --vocab go together") }
            let student = tokenizer.map { StudentVocabulary(tokenizerFingerprint: $0, vocabularySize: vocab ?? 0) }
            let loader = try StudentLoader(cache: cache, configuration: c, student: student)
            if let resume { try loader.resume(from: try Self.state(resume)) } else { try loader.seek(epoch: epoch, batch: 0) }
            let n = count ?? loader.batchesInEpoch - loader.batchIndex
            let b = Batch()
            for _ in 0..<n {
                try loader.next(into: b)
                if json {
                    var o: [String: Any] = ["epoch": b.epoch, "index": b.index, "tokens": b.tokenCount, "digest": hex16(b.digest)]
                    o["windows"] = b.windows.map { Int($0) }
                    o["input_ids"] = b.inputIDs.map { Int($0) }
                    o["labels"] = b.labels.map { Int($0) }
                    o["target_ids"] = b.targetIDs.map { Int($0) }
                    o["target_weights"] = b.targetWeights.map { Double($0) }
                    o["tail_mass"] = b.tailMass.map { Double($0) }
                    o["entry_counts"] = b.entryCounts.map { Int($0) }
                    // The state as the loader encodes it (segments included after an elastic resume).
                    o["state"] = try JSONSerialization.jsonObject(with: JSONEncoder().encode(loader.state))
                    printJSON(o)
                } else {
                    print("epoch \(b.epoch) batch \(b.index): \(b.tokenCount) tokens, windows \(b.windows.map(String.init).joined(separator: ",")), digest \(hex16(b.digest))")
                }
            }
        } catch let e as ValidationError { throw e } catch { throw fail(error) }
    }

    /// Parses `--resume`: inline JSON when it starts with `{`, else the file it names.
    static func state(_ text: String) throws -> LoaderState {
        let data: Data
        if text.hasPrefix("{") { data = Data(text.utf8) } else {
            guard let d = FileManager.default.contents(atPath: text) else { throw ValidationError("--resume: cannot read \(text)") }
            data = d
        }
        do { return try JSONDecoder().decode(LoaderState.self, from: data) } catch {
            throw ValidationError("--resume: not a loader state (version, epoch, batch, configuration, cache): \(error)")
        }
    }
}
