import Foundation
import Testing
import TestSupport

/// The repository root, from this file's path.
let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().path

@Suite(.serialized) struct TrainProcessTests {
    func arguments(config: String, out: String) -> [String] {
        ["train", "--config", config, "--corpus", repositoryRoot + "/Data/corpus/eval.jsonl.zst",
         "--tokenizer", repositoryRoot + "/Data/tokenizer.json", "--out", out, "--steps", "16", "--batch", "2",
         "--context", "32", "--checkpoint-every", "2", "--lr", "5e-3", "--seed", "4"]
    }

    func loggedSteps(_ dir: String) -> Int {
        guard let text = try? String(contentsOfFile: dir + "/log.jsonl", encoding: .utf8) else { return 0 }
        return text.split(separator: "\n").filter { $0.contains("\"loss\"") }.count
    }

    /// A run killed (SIGKILL) mid-training and rerun ends with the same weights, byte for
    /// byte, as an uninterrupted run, and its log holds each step once.
    @Test func killedRunResumesToTheSameWeights() throws {
        let root = freshDirectory("kill")
        defer { try? FileManager.default.removeItem(atPath: root) }
        let config = root + "/student.json"
        try Data(#"{"layers": 1, "hidden": 32, "heads": 2, "ffn": 64, "vocab": 8000, "context": 32}"#.utf8)
            .write(to: URL(fileURLWithPath: config))
        let straight = try launchLogitcache(arguments(config: config, out: root + "/a"))
        straight.waitUntilExit()
        #expect(straight.terminationStatus == 0)

        let killed = try launchLogitcache(arguments(config: config, out: root + "/b"))
        let deadline = Date().addingTimeInterval(120)
        while loggedSteps(root + "/b") < 7 && killed.isRunning && Date() < deadline { usleep(2000) }
        kill(killed.processIdentifier, SIGKILL)
        killed.waitUntilExit()
        #expect(loggedSteps(root + "/b") < 16, "the run finished before it could be killed")
        let rerun = try launchLogitcache(arguments(config: config, out: root + "/b"))
        rerun.waitUntilExit()
        #expect(rerun.terminationStatus == 0)

        let a = try Data(contentsOf: URL(fileURLWithPath: root + "/a/model.safetensors"))
        let b = try Data(contentsOf: URL(fileURLWithPath: root + "/b/model.safetensors"))
        #expect(a == b)
        #expect(loggedSteps(root + "/b") == 16 && loggedSteps(root + "/a") == 16)

        // Other settings in the same directory are refused; the checkpoint stays.
        var other = arguments(config: config, out: root + "/b")
        other[other.firstIndex(of: "--lr")! + 1] = "1e-3"
        let refused = try launchLogitcache(other)
        refused.waitUntilExit()
        #expect(refused.terminationStatus != 0)
        #expect(try Data(contentsOf: URL(fileURLWithPath: root + "/b/model.safetensors")) == b)
    }
}
