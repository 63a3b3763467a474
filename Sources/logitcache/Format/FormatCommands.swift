import ArgumentParser
import CommandLineSupport
import Foundation
import Truncation
import ShardFormat
import SyntheticData

/// Commands of the cache format (inspect, verify, synth, dump, merge) area.
enum FormatCommands {
    static var top: [ParsableCommand.Type] {
        [InspectCommand.self, VerifyCommand.self, SynthCommand.self, DumpCommand.self, MergeCommand.self]
    }
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
    @Option(help: "Format minor version to write: 4 (sample references), 3 (next-token links, entry references), 2 (steps M·2^-N), 1 (bucket filters) or 0 (byte planes only, read by format 1.0 readers).")
    var formatMinor: Int = ShardFormatVersion.minor

    func run() throws {
        guard let c = Codec(parsing: codec) else { throw ValidationError("unknown codec \(codec) (none, lz4, zstd, zstd:LEVEL)") }
        do {
            let opts = WriterOptions(codec: c, logProbs: try logProbEncoding(lossless: lossless, stepLog2: stepLog2, stepMultiplier: stepMultiplier),
                                     blockTokens: blockTokens, targetShardBytes: shardBytes, formatMinorVersion: formatMinor)
            let synthetic = SyntheticCache(vocabularySize: vocab, tokens: tokens, sequenceLength: seqLen, k: k, seed: seed,
                                           draws: sampled ? draws : 0, topP: topP, writer: opts, partition: partition,
                                           partitionCount: partitions)
            let (m, resumed) = try synthetic.write(to: out)
            print("wrote \(m.totals.tokens) tokens, \(m.totals.sequences) sequences, \(m.shards.count) shards, \(m.totals.bytes) bytes to \(out)" +
                  (resumed > 0 ? " (resumed after \(resumed) sequences)" : ""))
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

