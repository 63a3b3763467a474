import Checkpoints
import Foundation
import Kernels
import Testing
@testable import Models

@Suite struct RandomCheckpointTests {
    /// Every fixture's config survives jsonObject → config.json → ModelConfig unchanged.
    @Test(arguments: parityFixtures)
    func configRoundTrips(name: String) throws {
        let config = try ModelConfig(path: fixtureRoot + "/" + name + "/config.json")
        let back = try ModelConfig(json: config.jsonObject, file: "round trip")
        #expect(back == config)
    }

    @Test func randomLlamaAndGPT2CheckpointsLoadAndRun() throws {
        let llama = try ModelConfig.llama(vocabSize: 100, hiddenSize: 32, layerCount: 2, headCount: 4, kvHeadCount: 2,
                                          intermediateSize: 48, maxPositions: 64, tieWordEmbeddings: true)
        var gpt2 = try ModelConfig(path: fixtureRoot + "/gpt2/config.json")
        gpt2.tieWordEmbeddings = false
        for (config, dtype) in [(llama, FloatDType.bfloat16), (gpt2, .float32)] {
            let dir = NSTemporaryDirectory() + "/random-" + UUID().uuidString
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            try RandomCheckpoint.write(config: config, to: dir, seed: 7, dtype: dtype)
            let model = try Transformer(directory: dir)
            #expect(model.config == config)
            let top = try model.topK(tokens: [1, 2, 3, 4, 5, 6], batch: 2, k: 4)
            // max <= logsumexp <= max + log V for every position.
            for r in 0..<6 {
                let best = top.logits[r * 4]
                #expect(top.logsumexp[r] >= best && top.logsumexp[r] <= best + log(Float(config.vocabSize)) + 1e-4)
            }
            // Same seed, same bytes.
            let again = dir + "/again"
            try FileManager.default.createDirectory(atPath: again, withIntermediateDirectories: true)
            try RandomCheckpoint.write(config: config, to: again, seed: 7, dtype: dtype)
            #expect(FileManager.default.contentsEqual(atPath: dir + "/model.safetensors", andPath: again + "/model.safetensors"))
        }
    }
}
