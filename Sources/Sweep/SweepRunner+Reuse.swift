import Foundation
import Checkpoints
import Distillation
import ShardFormat

/// What a rerun may reuse. A sweep directory keeps, beside each finished piece, the settings
/// that produced it; a rerun reuses a piece only when its settings are the same, and refuses a
/// student made with other settings instead of mixing it into the new report.
extension SweepRunner {
    /// The fast-path key of the teacher pass: the options that choose what the pass computes.
    /// Paths, not contents — a different key only sends the rerun through
    /// ``TeacherPassJob``, which compares the teacher, tokenizer and corpus by content.
    var passKey: String {
        let o = options
        return ["teacher \(o.teacherDirectory)", "tokenizer \(o.tokenizerPath)", "corpus \(o.corpus.joined(separator: ","))",
                "context \(o.context)", "k \(o.maxK)", "samples \(o.wantsSamples ? o.samples : 0)",
                "windows \(o.teacherWindowLimit.map(String.init) ?? "all")"].joined(separator: "; ")
    }

    /// Everything a student's result depends on, as `; `-separated parts (so a mismatch can be
    /// named part by part): its setting, training settings, shape, student architecture, the
    /// evaluation tokens, and the cache it read (teacher, tokenizer and corpus fingerprints,
    /// capture settings, token count).
    func studentFingerprint(_ s: SweepSetting, config: ModelConfig, settings: TrainingSettings, evalTokens: [Int32],
                            pass m: CacheManifest) -> String {
        let o = options
        let evalHash = String(evalTokens.withUnsafeBytes { Checksum.xxh3($0) }, radix: 16)
        return ["setting \(s.name)", "training \(settings)", "batch \(o.batch)x\(o.context)", "student \(config)",
                "eval tokens xxh3:\(evalHash) (\(evalTokens.count)), \(o.evalWindows) windows",
                "teacher \(m.fingerprints.teacher)", "tokenizer \(m.fingerprints.tokenizer)", "corpus \(m.fingerprints.corpus)",
                "capture \(m.capture)", "cache tokens \(m.totals.tokens)"].joined(separator: "; ")
    }

    /// Checks a student's directory against `fingerprint` and returns its result if it finished.
    ///
    /// A directory without recorded settings gets them now; one with a result but no recorded
    /// settings (written before sweeps recorded them) is reused with a logged warning.
    /// - Throws: ``SweepError/failed(_:)`` when the directory was made with other settings
    ///   (naming the parts that differ) or its `result.json` is unreadable; nothing is changed.
    func finishedResult(in dir: String, fingerprint: String) throws -> SettingResult? {
        let fm = FileManager.default
        let settingsPath = dir + "/sweep-settings.txt", resultPath = dir + "/result.json"
        if let saved = try? String(contentsOfFile: settingsPath, encoding: .utf8) {
            guard saved == fingerprint else {
                let old = Set(saved.components(separatedBy: "; "))
                let differing = fingerprint.components(separatedBy: "; ").filter { !old.contains($0) }
                throw SweepError.failed("\(dir) holds a student made with other settings (now: \(differing.joined(separator: "; "))); use another --out or remove that directory")
            }
        } else if fm.fileExists(atPath: resultPath) {
            log("  \(dir): no recorded settings (written by an older sweep); reused unchecked")
        } else {
            do {
                try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
                try Data(fingerprint.utf8).write(to: URL(fileURLWithPath: settingsPath), options: .atomic)
            } catch {
                throw SweepError.failed("cannot record the student's settings in \(settingsPath): \(error.localizedDescription)")
            }
        }
        guard let data = fm.contents(atPath: resultPath) else { return nil }
        do {
            return try JSONDecoder().decode(SettingResult.self, from: data)
        } catch {
            throw SweepError.failed("\(resultPath) is unreadable (\(error)); remove it to train that student again")
        }
    }
}
