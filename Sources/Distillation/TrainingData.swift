import Corpus
import Kernels
import Models
import StudentLoader
import Truncation

/// Where a student's batches come from, for `train` and the sweep alike.
public enum TrainingData {
    /// Teacher targets from a cache: `k` entries (or draws) per token, read in `mode`; checked
    /// against the student's tokenizer and vocabulary when `student` is given.
    case cache(directory: String, mode: TargetMode, k: Int, student: StudentVocabulary?)
    /// A tokenised corpus, with a teacher run inside the loop when one is given.
    case corpus(tokens: [Int32], teacher: OnlineTeacher?)

    /// The corpus's token stream as the teacher pass builds it, with an optional online teacher.
    /// - Throws: ``CorpusError`` naming the file at fault, and the tokenizer's errors.
    public static func corpus(paths: [String], tokenizerPath: String, vocabularySize V: Int,
                              teacher: OnlineTeacher? = nil) throws -> TrainingData {
        .corpus(tokens: try corpusTokens(corpus: paths, tokenizerPath: tokenizerPath, vocabularySize: V), teacher: teacher)
    }

    /// The batch stream: `batchSize` windows of `contextLength` tokens, in the order of `seed`.
    /// - Parameter temperature: τ of the targets a cache loader makes.
    /// - Throws: ``TrainingError/badSetting(_:)`` when the cache's vocabulary is not the
    ///   student's; the loader's and ``CorpusSource``'s errors.
    public func source(batchSize: Int, contextLength: Int, temperature: Float = 1, seed: UInt64,
                       vocabularySize V: Int) throws -> TrainingSource {
        switch self {
        case let .cache(directory, mode, k, student):
            let configuration = LoaderConfiguration(batchSize: batchSize, contextLength: contextLength, k: k, mode: mode,
                                                    temperature: Double(temperature), seed: seed)
            let loader = try StudentLoader(cache: directory, configuration: configuration, student: student)
            guard loader.reader.manifest.vocabularySize == V else {
                throw TrainingError.badSetting("cache \(directory) has vocabulary \(loader.reader.manifest.vocabularySize), the student \(V)")
            }
            return CacheSource(loader: loader, vocabularySize: V)
        case let .corpus(tokens, teacher):
            return try CorpusSource(tokens: tokens, batchSize: batchSize, length: contextLength, seed: seed,
                                    vocabularySize: V, teacher: teacher)
        }
    }
}
