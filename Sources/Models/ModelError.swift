import Checkpoints
import Kernels

/// Why a model could not be loaded or run. Checkpoint problems name the file and tensor;
/// input problems name the sequence position or the limit exceeded.
public enum ModelError: Error, CustomStringConvertible, Equatable {
    /// The checkpoint is missing, malformed or does not match its config (file and tensor named).
    case checkpoint(CheckpointError)
    /// A kernel refused the input (token id outside the vocabulary, window too long).
    case kernel(KernelError)
    /// The request itself is inconsistent (token count not a multiple of the batch, k > vocab, …).
    case invalidInput(String)

    public var description: String {
        switch self {
        case let .checkpoint(e): return e.description
        case let .kernel(e): return e.description
        case let .invalidInput(reason): return reason
        }
    }
}
