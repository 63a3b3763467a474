import Capture
import Corpus
import Checkpoints
import Foundation
import Truncation
import Kernels
import Models
import ShardFormat
import Testing
import TestSupport
@testable import TeacherPass

/// A tiny random Llama teacher whose vocabulary matches the committed GPT-2-style fixture
/// tokenizer (2,000 ids), and a small multi-document corpus.
final class TeacherFixture {
    let dir = TempDir()
    let model: String
    let tokenizer: String
    let corpus: String

    static let tokenizerFixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("TokenizersTests/Fixtures/gpt2.tokenizer.json").path

    init(vocab: Int = 2000, documents: Int = 24) throws {
        model = dir.path + "/teacher"
        let config = try ModelConfig.llama(vocabSize: vocab, hiddenSize: 32, layerCount: 2, headCount: 4, kvHeadCount: 2,
                                           intermediateSize: 64, maxPositions: 128, tieWordEmbeddings: true)
        try FileManager.default.createDirectory(atPath: model, withIntermediateDirectories: true)
        try RandomCheckpoint.write(config: config, to: model, seed: 1)
        tokenizer = Self.tokenizerFixture
        var lines: [String] = []
        for d in 0..<documents {
            let words = (0..<(15 + d * 7 % 40)).map { i in ["the", "cache", "teacher", "student", "Ünïcode", "42", "tokens", "run"][(i * 5 + d) % 8] }
            let text = "Document \(d): " + words.joined(separator: " ") + "."
            let data = try JSONSerialization.data(withJSONObject: ["text": text])
            lines.append(String(decoding: data, as: UTF8.self))
        }
        corpus = dir.file("corpus.jsonl", lines.joined(separator: "\n") + "\n")
    }

    func options(out: String, context: Int = 32, policy: CapturePolicy = .topK(k: 8), threads: Int = 1) -> TeacherPassOptions {
        var o = TeacherPassOptions(modelDirectory: model, tokenizerPath: tokenizer, corpus: [corpus], output: out)
        o.context = context
        o.policy = policy
        o.threads = threads
        o.windowsPerBatch = 3
        return o
    }
}

/// Every shard file's bytes, by name.
func shardBytes(_ dir: String) throws -> [String: Data] {
    var out: [String: Data] = [:]
    for n in try FileManager.default.contentsOfDirectory(atPath: dir) where n.hasSuffix(".lcs") {
        out[n] = try Data(contentsOf: URL(fileURLWithPath: dir + "/" + n))
    }
    return out
}

/// Every decoded value of a cache, sequence by sequence, for content comparisons.
func decodedContent(_ dir: String, k: Int) throws -> [String] {
    let r = try CacheReader(directory: dir)
    let batch = TargetBatch()
    var rows: [String] = []
    for i in 0..<r.sequenceCount {
        let s = try r.sequence(i)
        try r.decode(tokens: s.firstToken ..< s.firstToken + s.length, k: k, samples: r.maxSamples > 0, into: batch)
        rows.append("\(s.documentKey) \(s.documentOffset) \(s.length) \(batch.inputIDs) \(batch.nextTokenLogProbs) "
                    + "\(batch.logSumExps) \(batch.entryCounts) \(batch.entryIDs) \(batch.entryLogProbs) \(batch.sampleIDs) \(batch.sampleDraws)")
    }
    return rows
}

@Suite struct TeacherPassJobTests {
    @Test func cachedEntriesEqualTheModelsFusedTopK() throws {
        let f = try TeacherFixture()
        let out = f.dir.path + "/cache"
        var o = f.options(out: out)
        o.writer.logProbs = .float32
        let job = try TeacherPassJob(options: o)
        let manifest = try job.run()
        #expect(manifest.totals.sequences == job.windows.count && job.windows.count > 3)

        let reader = try CacheReader(directory: out)
        let batch = TargetBatch()
        for i in 0..<reader.sequenceCount {
            let s = try reader.sequence(i)
            let w = job.stream.window(i, context: 32)
            #expect(s.length == w.length && s.documentOffset == job.stream.document(at: w.firstToken).offset)
            try reader.decode(tokens: s.firstToken ..< s.firstToken + s.length, k: 8, samples: false, into: batch)
            let inputs = Array(job.stream.ids[w.firstToken ..< w.firstToken + w.length])
            #expect(batch.inputIDs == inputs)
            // What `logitcache logits --top-k 8` computes for the same window.
            let ref = try job.model.topK(tokens: inputs, batch: 1, k: 8, pool: .serial)
            let full = try job.model.logits(tokens: inputs, batch: 1, pool: .serial)
            let V = job.model.config.vocabSize
            for t in 0..<w.length {
                #expect(Array(batch.entryIDs[t * 8 ..< t * 8 + 8]) == Array(ref.ids[t * 8 ..< t * 8 + 8]))
                for j in 0..<8 {
                    #expect(batch.entryLogProbs[t * 8 + j] == ref.logits[t * 8 + j] - ref.logsumexp[t])
                }
                #expect(batch.logSumExps[t] == ref.logsumexp[t])
                let next = Int(job.stream.ids[w.firstToken + t + 1])
                #expect(abs(batch.nextTokenLogProbs[t] - (full[t * V + next] - ref.logsumexp[t])) < 1e-5)
            }
        }
    }

    @Test(arguments: [CapturePolicy.topK(k: 8), .headTail(k: 4, draws: 20)])
    func sameBytesWhateverTheThreadCount(policy: CapturePolicy) throws {
        let f = try TeacherFixture()
        var caches: [[String: Data]] = []
        // Static splits (one chunk per thread) and dynamic ones (threads claiming chunks).
        for (threads, chunks) in [(1, 1), (2, 1), (3, 1), (2, 4), (3, 7)] {
            let out = f.dir.path + "/cache\(threads)-\(chunks)"
            // Small blocks and shards: the writer thread rolls several while the pool computes.
            var o = f.options(out: out, policy: policy, threads: threads)
            o.chunksPerThread = chunks
            o.writer.blockTokens = 50
            o.writer.targetShardBytes = 6000
            _ = try TeacherPassJob(options: o).run()
            caches.append(try shardBytes(out))
        }
        #expect(caches[0].count > 1 && caches.allSatisfy { $0 == caches[0] })
    }

    @Test func partitionsMergeToTheSingleRunsContent() throws {
        let f = try TeacherFixture()
        let single = f.dir.path + "/single", parts = f.dir.path + "/parts"
        _ = try TeacherPassJob(options: f.options(out: single)).run()
        for i in 0..<4 {
            var o = f.options(out: parts)
            o.partition = try Partition(index: i, count: 4)
            _ = try TeacherPassJob(options: o).run()
        }
        _ = try CacheManifest.merge(directory: parts)
        #expect(try decodedContent(parts, k: 8) == decodedContent(single, k: 8))
    }

    @Test func sampledPolicyStoresDrawCountsSummingToN() throws {
        let f = try TeacherFixture(documents: 6)
        let out = f.dir.path + "/sampled"
        _ = try TeacherPassJob(options: f.options(out: out, policy: .headTail(k: 4, draws: 20))).run()
        let r = try CacheReader(directory: out)
        let batch = TargetBatch()
        try r.decode(tokens: 0 ..< r.tokenCount, k: 4, samples: true, into: batch)
        for t in 0..<r.tokenCount {
            let draws = batch.sampleDraws[batch.sampleOffsets[t] ..< batch.sampleOffsets[t + 1]]
            #expect(draws.reduce(0, +) == 20)
            let head = Set(batch.entryIDs[t * 4 ..< t * 4 + 4])
            #expect(batch.sampleIDs[batch.sampleOffsets[t] ..< batch.sampleOffsets[t + 1]].allSatisfy { !head.contains($0) })
        }
    }

    @Test func rerunResumesAndDifferentSettingsAreRefused() throws {
        let f = try TeacherFixture()
        let out = f.dir.path + "/cache"
        _ = try TeacherPassJob(options: f.options(out: out)).run()
        let before = try shardBytes(out)
        // Same settings: nothing left to do, nothing changed.
        _ = try TeacherPassJob(options: f.options(out: out)).run()
        #expect(try shardBytes(out) == before)
        // Other capture settings or context into the same directory: refused, cache intact.
        #expect(throws: TeacherPassError.self) { try TeacherPassJob(options: f.options(out: out, policy: .topK(k: 4))) }
        #expect(throws: TeacherPassError.self) { try TeacherPassJob(options: f.options(out: out, context: 16)) }
        #expect(try shardBytes(out) == before)
    }

    @Test func badInputIsRefusedBeforeWork() throws {
        let f = try TeacherFixture(vocab: 1500)
        let out = f.dir.path + "/cache"
        // The 2,000-id tokenizer does not belong to a 1,500-id model.
        #expect(throws: TeacherPassError.self) { try TeacherPassJob(options: f.options(out: out)) }
        let g = try TeacherFixture()
        #expect(throws: TeacherPassError.self) { try TeacherPassJob(options: g.options(out: out, context: 129)) }
        var empty = g.options(out: out)
        empty.corpus = [g.dir.file("empty.txt", "")]
        #expect(throws: CorpusError.self) { try TeacherPassJob(options: empty) }
        #expect(!FileManager.default.fileExists(atPath: out))
    }
}
