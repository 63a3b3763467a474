import ArgumentParser
import Foundation
import Truncation
import ShardFormat

/// Commands of the cache format (inspect, verify, synth, dump, merge, bench format, bench read) area.
enum FormatCommands {
    static var top: [ParsableCommand.Type] {
        [InspectCommand.self, VerifyCommand.self, SynthCommand.self, DumpCommand.self, MergeCommand.self]
    }
    static var bench: [ParsableCommand.Type] { [BenchFormatCommand.self, BenchReadCommand.self] }
}

/// Prints a JSON object (sorted keys) on one line to stdout. Non-finite numbers, which JSON
/// cannot express, are written as the strings of ``jsonFloatValue(_:)``; anything else that is not
/// JSON (a programming error) ends the process with a message rather than a trap.
func printJSON(_ value: Any) {
    let v = JSONSerialization.isValidJSONObject(value) ? value : jsonSanitized(value)
    do {
        let data = try JSONSerialization.data(withJSONObject: v, options: [.sortedKeys, .withoutEscapingSlashes])
        print(String(decoding: data, as: UTF8.self))
    } catch {
        FileHandle.standardError.write(Data("logitcache: cannot write JSON output: \(error)\n".utf8))
        exit(2)
    }
}

/// A float for JSON output: the number itself when finite, else the string `"inf"`, `"-inf"` or
/// `"nan"` (Python's `float()` reads all three back; NaN payload bits are not kept).
func jsonFloatValue(_ x: Double) -> Any {
    x.isFinite ? x : x.isNaN ? "nan" : x < 0 ? "-inf" : "inf"
}
func jsonFloatValue(_ x: Float) -> Any { jsonFloatValue(Double(x)) }

/// `value` with every non-finite number replaced by ``jsonFloatValue(_:)`` (arrays and dictionaries
/// walked recursively).
func jsonSanitized(_ value: Any) -> Any {
    switch value {
    case let d as [String: Any]: return d.mapValues(jsonSanitized)
    case let a as [Any]: return a.map(jsonSanitized)
    case let x as Double: return jsonFloatValue(x)
    case let x as Float: return jsonFloatValue(x)
    default: return value
    }
}

/// Exits with a one-line error naming the problem.
func fail(_ error: Error) -> ExitCode {
    FileHandle.standardError.write(Data("logitcache: \(error)\n".utf8))
    return ExitCode(2)
}

struct VerifyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Check a cache's structure and every checksum; exit 0 only if all is sound.")
    @Argument(help: "Cache directory.") var path: String

    func run() throws {
        let r = CacheVerifier.verify(directory: path)
        for p in r.problems { print("PROBLEM \(p)") }
        if r.isSound {
            print("OK \(path): \(r.shardsChecked) shards, \(r.tokensChecked) tokens, every checksum and value checked")
        } else {
            print("FAILED \(path): \(r.problems.count) problem(s)")
            throw ExitCode(1)
        }
    }
}

struct MergeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge",
        abstract: "Build manifest.json from the partition manifests of a cache (no shard data is copied).")
    @Argument(help: "Cache directory.") var path: String

    func run() throws {
        do {
            let m = try CacheManifest.merge(directory: path)
            print("merged \(m.shards.count) shards, \(m.totals.tokens) tokens into \(path)/\(CacheManifest.fileName)")
        } catch { throw fail(error) }
    }
}

struct SynthCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "synth",
        abstract: "Write a synthetic cache of teacher-like targets (seeded; resumable after a kill).")
    @Argument(help: "Output cache directory.") var out: String
    @Option(help: "Seed.") var seed: UInt64 = 1
    @Option(help: "Vocabulary size (2...16777216).") var vocab: Int = 32000
    @Option(help: "Total tokens.") var tokens: Int = 65536
    @Option(help: "Tokens per sequence.") var seqLen: Int = 1024
    @Option(help: "K: entries per position.") var k: Int = 64
    @Option(help: "Top-p truncation of each position's entries (1 = keep K).") var topP: Double = 1
    @Flag(help: "Also store sampled entries (ids + draw counts).") var sampled = false
    @Option(help: "Draws per position when --sampled.") var draws: Int = 50
    @Option(help: "Codec: none, lz4, zstd or zstd:LEVEL.") var codec: String = "zstd"
    @Flag(help: "Store log-probs exactly (float32) instead of quantised.") var lossless = false
    @Option(help: "Quantisation step M·2^-N nats: N (default: the format's default step, 5·2^-8 in format 1.2, 2^-6 before).")
    var stepLog2: Int?
    @Option(help: "Quantisation step M·2^-N nats: M, 1...255 (format 1.2; default 1 when --step-log2 is given).")
    var stepMultiplier: Int?
    @Option(help: "Tokens per block.") var blockTokens: Int = 8192
    @Option(help: "Target shard size in bytes.") var shardBytes: Int = 256 << 20
    @Option(help: "This writer's partition index.") var partition: Int = 0
    @Option(help: "Number of partitions (sequences are dealt round-robin).") var partitions: Int = 1
    @Option(help: "Format minor version to write: 3 (next-token links), 2 (steps M·2^-N), 1 (bucket filters) or 0 (byte planes only, read by format 1.0 readers).")
    var formatMinor: Int = ShardFormatVersion.minor

    func run() throws {
        guard let c = Codec(parsing: codec) else { throw ValidationError("unknown codec \(codec) (none, lz4, zstd, zstd:LEVEL)") }
        guard tokens >= 0, seqLen >= 1, k >= 0, vocab >= 2 else { throw ValidationError("need tokens >= 0, seq-len >= 1, k >= 0, vocab >= 2") }
        do {
            let g = TeacherLikeGenerator(vocabularySize: vocab, k: k, seed: seed, draws: sampled ? draws : 0, topP: topP)
            let desc = CacheDescription(
                vocabularySize: vocab,
                fingerprints: Fingerprints(teacher: "synthetic-\(seed)", tokenizer: "synthetic-vocab-\(vocab)", corpus: "synthetic-\(seed)-\(tokens)"),
                capture: CaptureSettings(policy: sampled ? (g.k > 0 ? .topKAndSampled(k: g.k, draws: draws) : .sampled(draws: draws))
                                                    : (topP < 1 ? .topP(p: topP, maxK: g.k) : .topK(k: g.k)),
                                         temperature: 1, seed: seed))
            let opts = WriterOptions(codec: c, logProbs: try logProbEncoding(lossless: lossless, stepLog2: stepLog2, stepMultiplier: stepMultiplier),
                                     blockTokens: blockTokens, targetShardBytes: shardBytes, formatMinorVersion: formatMinor)
            let w = try CacheWriter(directory: out, description: desc, options: opts, partition: partition, partitionCount: partitions)
            let nSeq = (tokens + seqLen - 1) / seqLen
            let mine = stride(from: partition, to: nSeq, by: partitions).map { $0 }
            for i in mine.dropFirst(w.resumedSequences) {
                try w.append(g.sequence(i, length: min(seqLen, tokens - i * seqLen)))
            }
            let m = try w.finish()
            print("wrote \(m.totals.tokens) tokens, \(m.totals.sequences) sequences, \(m.shards.count) shards, \(m.totals.bytes) bytes to \(out)" +
                  (w.resumedSequences > 0 ? " (resumed after \(w.resumedSequences) sequences)" : ""))
        } catch { throw fail(error) }
    }
}

struct DumpCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dump",
        abstract: "Print every decoded value of a cache (for independent readers to compare against).")
    @Argument(help: "Cache directory.") var path: String
    @Flag(help: "One JSON object per sequence (JSON Lines) instead of text; non-finite log-probs are the strings \"-inf\", \"inf\", \"nan\".") var json = false

    func run() throws {
        do {
            let r = try CacheReader(directory: path)
            let b = TargetBatch()
            var out = ""
            for i in 0..<r.sequenceCount {
                let s = try r.sequence(i)
                try r.decode(tokens: s.firstToken..<(s.firstToken + s.length), k: r.maxEntries, samples: r.maxSamples > 0, into: b)
                let K = b.k
                func row<T>(_ a: [T], _ t: Int) -> [T] { Array(a[(t * K)..<(t * K + Int(b.entryCounts[t]))]) }
                func samples(_ t: Int) -> Range<Int> { b.sampleOffsets[t]..<b.sampleOffsets[t + 1] }
                if json {
                    var toks: [[String: Any]] = []
                    for t in 0..<s.length {
                        toks.append(["input": b.inputIDs[t], "next": jsonFloatValue(b.nextTokenLogProbs[t]), "lse": jsonFloatValue(b.logSumExps[t]),
                                     "ids": row(b.entryIDs, t), "logprobs": row(b.entryLogProbs, t).map(jsonFloatValue),
                                     "sample_ids": r.maxSamples > 0 ? Array(b.sampleIDs[samples(t)]) : [],
                                     "sample_draws": r.maxSamples > 0 ? Array(b.sampleDraws[samples(t)]) : []])
                    }
                    printJSON(["sequence": i, "document_key": s.documentKey.description, "document_offset": s.documentOffset,
                               "length": s.length, "tokens": toks])
                } else {
                    out += "sequence \(i) key \(s.documentKey) offset \(s.documentOffset) length \(s.length)\n"
                    for t in 0..<s.length {
                        out += "  \(t) input \(b.inputIDs[t]) next \(b.nextTokenLogProbs[t]) lse \(b.logSumExps[t])"
                        out += " entries " + zip(row(b.entryIDs, t), row(b.entryLogProbs, t)).map { "\($0):\($1)" }.joined(separator: " ")
                        if r.maxSamples > 0 {
                            out += " samples " + samples(t).map { "\(b.sampleIDs[$0])x\(b.sampleDraws[$0])" }.joined(separator: " ")
                        }
                        out += "\n"
                    }
                    if out.utf8.count > 1 << 20 { print(out, terminator: ""); out = "" }
                }
            }
            print(out, terminator: "")
        } catch { throw fail(error) }
    }
}

/// The log-prob encoding that `--lossless`, `--step-log2 N` and `--step-multiplier M` ask for,
/// or nil for the writer's default.
func logProbEncoding(lossless: Bool, stepLog2: Int?, stepMultiplier: Int?) throws -> LogProbEncoding? {
    if lossless {
        guard stepLog2 == nil, stepMultiplier == nil else { throw ValidationError("--lossless stores exact float32: drop --step-log2/--step-multiplier") }
        return .float32
    }
    if stepLog2 == nil && stepMultiplier == nil { return nil }
    guard let b = stepLog2 else { throw ValidationError("--step-multiplier needs --step-log2") }
    guard (0...20).contains(b) else { throw ValidationError("--step-log2 \(b) outside 0...20") }
    let m = stepMultiplier ?? 1
    guard (1...255).contains(m) else { throw ValidationError("--step-multiplier \(m) outside 1...255") }
    return .quantized(stepLog2: b, multiplier: m)
}
