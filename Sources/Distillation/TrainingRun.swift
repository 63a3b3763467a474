import Foundation
import Checkpoints
import Models

/// A training run's directory: a Hugging Face model (`config.json` + `model.safetensors`),
/// a resume checkpoint and a JSON Lines run log.
///
///     DIR/config.json, DIR/model.safetensors   the latest model (transformers loads it)
///     DIR/resume/                              model, AdamW moments and state.json
///     DIR/log.jsonl                            one JSON object per logged step or evaluation
///
/// A checkpoint is written into `resume.tmp/` and swapped in by renames, so a run killed at
/// any moment finds a complete checkpoint (`resume/`, or `resume.old/` if it died between the
/// two renames). State carries a fingerprint of the run's settings: a rerun with different
/// settings is refused instead of silently mixing two runs.
public final class TrainingRun {
    public let directory: String
    public let trainer: Trainer
    /// Describes everything that must match for a resume (model config, data, settings).
    public let fingerprint: String
    /// Seconds spent in earlier sessions of this run.
    public private(set) var previousSeconds = 0.0

    struct State: Codable {
        var version = 1
        var fingerprint: String
        var step: Int
        var tokensSeen: Int
        var flops: Double
        var seconds: Double
        var source: SourceState
    }

    public init(directory: String, trainer: Trainer, fingerprint: String) throws {
        self.directory = directory; self.trainer = trainer; self.fingerprint = fingerprint
        do { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) } catch {
            throw TrainingError.io(path: directory, reason: "cannot create: \(error.localizedDescription)")
        }
    }

    var resumePath: String { directory + "/resume" }
    public var logPath: String { directory + "/log.jsonl" }

    /// Loads the last checkpoint if one exists. Returns the step resumed at (0 for a new run).
    /// - Throws: ``TrainingError/resume(_:)`` when the checkpoint belongs to other settings or
    ///   is damaged (named), leaving it untouched.
    public func resumeIfPossible() throws -> Int {
        let fm = FileManager.default
        var dir = resumePath
        if !fm.fileExists(atPath: dir + "/state.json") {
            dir = resumePath + ".old"
            guard fm.fileExists(atPath: dir + "/state.json") else { return 0 }
        }
        let state: State
        do {
            state = try JSONDecoder().decode(State.self, from: Data(contentsOf: URL(fileURLWithPath: dir + "/state.json")))
        } catch {
            throw TrainingError.resume("\(dir)/state.json unreadable: \(error)")
        }
        guard state.fingerprint == fingerprint else {
            let saved = Set(state.fingerprint.components(separatedBy: "; "))
            let differing = fingerprint.components(separatedBy: "; ").filter { !saved.contains($0) }
            throw TrainingError.resume("\(dir) was written by a run with other settings (now: \(differing.joined(separator: "; "))); use another --out or remove it")
        }
        do {
            let checkpoint = try ModelCheckpoint(directory: dir)
            guard checkpoint.config == trainer.model.config else { throw TrainingError.resume("\(dir): model config differs") }
            try trainer.model.load(from: checkpoint)
            let moments = try SafetensorsFile(path: dir + "/optimizer.safetensors")
            let m = try moments.tensor("exp_avg").floats(), v = try moments.tensor("exp_avg_sq").floats()
            guard m.count == trainer.optimizer.count, v.count == trainer.optimizer.count else {
                throw TrainingError.resume("\(dir)/optimizer.safetensors holds \(m.count) moments for \(trainer.optimizer.count) parameters")
            }
            trainer.optimizer.restore(step: state.step, m: m, v: v)
        } catch let e as TrainingError {
            throw e
        } catch {
            throw TrainingError.resume("\(dir): \(error)")
        }
        try trainer.source.resume(from: state.source)
        trainer.step = state.step
        trainer.tokensSeen = state.tokensSeen
        trainer.flops = state.flops
        previousSeconds = state.seconds
        try truncateLog(after: state.step)
        return state.step
    }

    /// Writes the model into the run directory and a resume checkpoint, atomically.
    /// - Parameter seconds: wall seconds of this session so far (added to earlier sessions').
    public func save(seconds: Double) throws {
        let fm = FileManager.default
        let tmp = resumePath + ".tmp", old = resumePath + ".old"
        do {
            try? fm.removeItem(atPath: tmp)
            try fm.createDirectory(atPath: tmp, withIntermediateDirectories: true)
            let meta = ["step": "\(trainer.step)"]
            try trainer.model.export(to: tmp, metadata: meta)
            let n = trainer.optimizer.count
            try SafetensorsWriter.write([
                .init(name: "exp_avg", shape: [n], values: Array(UnsafeBufferPointer(start: trainer.optimizer.m, count: n))),
                .init(name: "exp_avg_sq", shape: [n], values: Array(UnsafeBufferPointer(start: trainer.optimizer.v, count: n))),
            ], metadata: meta, to: tmp + "/optimizer.safetensors")
            let state = State(fingerprint: fingerprint, step: trainer.step, tokensSeen: trainer.tokensSeen,
                              flops: trainer.flops, seconds: previousSeconds + seconds, source: trainer.source.state)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try encoder.encode(state).write(to: URL(fileURLWithPath: tmp + "/state.json"), options: .atomic)
            // Swap: resume -> resume.old, resume.tmp -> resume, drop resume.old.
            try? fm.removeItem(atPath: old)
            if fm.fileExists(atPath: resumePath) { try fm.moveItem(atPath: resumePath, toPath: old) }
            try fm.moveItem(atPath: tmp, toPath: resumePath)
            try? fm.removeItem(atPath: old)
            try trainer.model.export(to: directory, metadata: meta)
        } catch {
            throw TrainingError.io(path: directory, reason: "checkpoint failed: \(error)")
        }
    }

    /// Appends one JSON object (keys sorted) as a line of the run log.
    public func log(_ object: [String: Any]) throws {
        let data: Data
        do { data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) } catch {
            throw TrainingError.io(path: logPath, reason: "cannot encode log line: \(error)")
        }
        let line = data + Data("\n".utf8)
        if let h = FileHandle(forWritingAtPath: logPath) {
            defer { try? h.close() }
            do { try h.seekToEnd(); try h.write(contentsOf: line) } catch {
                throw TrainingError.io(path: logPath, reason: "\(error)")
            }
        } else {
            do { try line.write(to: URL(fileURLWithPath: logPath)) } catch {
                throw TrainingError.io(path: logPath, reason: "\(error)")
            }
        }
    }

    /// Drops log lines of steps after `step` (written after the last checkpoint by a killed run),
    /// so the log of a resumed run reads as one uninterrupted run.
    func truncateLog(after step: Int) throws {
        guard let data = FileManager.default.contents(atPath: logPath), let text = String(data: data, encoding: .utf8) else { return }
        var kept: [Substring] = []
        for line in text.split(separator: "\n") {
            if let o = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
               let s = o["step"] as? Int, s > step { continue }
            kept.append(line)
        }
        let out = kept.isEmpty ? "" : kept.joined(separator: "\n") + "\n"
        do { try Data(out.utf8).write(to: URL(fileURLWithPath: logPath), options: .atomic) } catch {
            throw TrainingError.io(path: logPath, reason: "\(error)")
        }
    }
}
