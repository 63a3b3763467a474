import ArgumentParser
import Corpus
import Foundation
import TeacherPass

/// `logitcache split`: divide a corpus by document into named parts.
struct SplitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "split",
        abstract: "Divide a corpus deterministically by document into named parts (e.g. teacher-train / student-train / eval).",
        discussion: """
            A document's part depends only on its content hash and --seed, not on file order.
            Text documents go to OUT/<part>.jsonl ({"text": ...} per line); pre-tokenised
            documents to OUT/<part>.bin (llm.c layout).
            """)

    @Option(parsing: .upToNextOption, help: "Corpus files, directories or globs.") var corpus: [String]
    @Option(help: "Output directory.") var out: String
    @Option(help: "Parts as name=fraction,… summing to 1.") var parts = "teacher-train=0.45,student-train=0.45,eval=0.1"
    @Option(help: "Seed of the assignment.") var seed: UInt64 = 0
    @Flag(help: "Plain text: documents are separated by blank lines.") var blankLineDocs = false
    @Option(help: "JSON Lines: the field holding the text.") var textField = "text"
    @Option(help: "Token files: the id separating documents.") var eotId: Int32?

    func run() throws {
        let split = try CorpusSplit(parsing: parts, seed: seed)
        let options = CorpusOptions(blankLineDocuments: blankLineDocs, textField: textField, endOfTextID: eotId)
        var texts = [[String]](repeating: [], count: split.parts.count)
        var tokens = [[Int32]](repeating: [], count: split.parts.count)
        var counts = [Int](repeating: 0, count: split.parts.count)
        for path in try expandCorpusPaths(corpus) {
            for doc in try readDocuments(path: path, options: options) {
                let p = split.partIndex(for: doc.key)
                counts[p] += 1
                switch doc.content {
                case .text(let t):
                    let data = try JSONSerialization.data(withJSONObject: ["text": t], options: [.withoutEscapingSlashes])
                    texts[p].append(String(decoding: data, as: UTF8.self))
                case .tokens(let ids): tokens[p] += ids
                }
            }
        }
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        for (i, part) in split.parts.enumerated() {
            if !texts[i].isEmpty {
                let path = (out as NSString).appendingPathComponent(part.name + ".jsonl")
                try Data((texts[i].joined(separator: "\n") + "\n").utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
            }
            if !tokens[i].isEmpty {
                try TokenFile.write(tokens[i], path: (out as NSString).appendingPathComponent(part.name + ".bin"))
            }
            print("\(part.name): \(counts[i]) documents")
        }
    }
}
