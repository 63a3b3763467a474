/// Errors kernels report for bad input data (as opposed to programming errors such as
/// mismatched buffer shapes, which are preconditions).
///
/// API status: final (cases may be added).
public enum KernelError: Error, Equatable, CustomStringConvertible, Sendable {
    /// A token id at `row` (flattened batch·position index) is outside `0..<vocab`.
    case tokenOutOfRange(row: Int, id: Int32, vocab: Int)
    /// A sequence of `length` positions is longer than a table of `limit` positions.
    case sequenceTooLong(length: Int, limit: Int)

    public var description: String {
        switch self {
        case let .tokenOutOfRange(row, id, vocab):
            return "token id \(id) at row \(row) is outside the vocabulary 0..<\(vocab)"
        case let .sequenceTooLong(length, limit):
            return "sequence of \(length) positions exceeds the table's \(limit) positions"
        }
    }
}
