/// One of N deterministic parts of a corpus's windows, for scale-out on job arrays.
///
/// Part `i` of `N` owns windows `[i*W/N, (i+1)*W/N)` of the corpus's W windows, so parts are
/// disjoint, cover everything, differ in size by at most one, and a merge of all N equals a
/// single run.
public struct Partition: Sendable, Equatable, CustomStringConvertible {
    public var index: Int
    public var count: Int

    /// The whole corpus as one part.
    public static let whole = try! Partition(index: 0, count: 1)  // Safe because 0 < 1.

    /// - Throws: ``CorpusError/badPartition(_:)`` unless `0 <= index < count`.
    public init(index: Int, count: Int) throws {
        guard count >= 1, index >= 0, index < count else {
            throw CorpusError.badPartition("index \(index) of \(count): need 0 <= i < N")
        }
        self.index = index
        self.count = count
    }

    /// Parses `i/N`.
    public init(parsing text: String) throws {
        let parts = text.split(separator: "/")
        guard parts.count == 2, let i = Int(parts[0]), let n = Int(parts[1]) else {
            throw CorpusError.badPartition("\"\(text)\" is not of the form i/N")
        }
        try self.init(index: i, count: n)
    }

    /// The partition a scheduler assigned: Slurm job arrays (`SLURM_ARRAY_TASK_ID` minus
    /// `SLURM_ARRAY_TASK_MIN`, of `SLURM_ARRAY_TASK_COUNT`) or a Kubernetes Indexed Job
    /// (`JOB_COMPLETION_INDEX`, of `kubernetesCount`, which the Job's `completions` gives).
    /// Returns nil when neither is present.
    public static func fromEnvironment(_ env: [String: String], kubernetesCount: Int? = nil) throws -> Partition? {
        if let id = env["SLURM_ARRAY_TASK_ID"] {
            guard let i = Int(id), let n = env["SLURM_ARRAY_TASK_COUNT"].flatMap(Int.init) else {
                throw CorpusError.badPartition("SLURM_ARRAY_TASK_ID=\(id) needs a numeric SLURM_ARRAY_TASK_COUNT")
            }
            let base = env["SLURM_ARRAY_TASK_MIN"].flatMap(Int.init) ?? 0
            return try Partition(index: i - base, count: n)
        }
        if let idx = env["JOB_COMPLETION_INDEX"] {
            guard let i = Int(idx) else { throw CorpusError.badPartition("JOB_COMPLETION_INDEX=\(idx) is not a number") }
            guard let n = kubernetesCount else {
                throw CorpusError.badPartition("JOB_COMPLETION_INDEX is set: give the number of completions (--partition-count)")
            }
            return try Partition(index: i, count: n)
        }
        return nil
    }

    /// The windows this partition owns out of `total`.
    public func windowRange(total: Int) -> Range<Int> {
        (index * total / count) ..< ((index + 1) * total / count)
    }

    public var description: String { "\(index)/\(count)" }
}
