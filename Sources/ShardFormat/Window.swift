/// One training window: at most T consecutive tokens of one token sequence — a sequence of a
/// cache (the student loader's windows) or a corpus's whole token stream (the teacher pass's).
public struct Window: Sendable, Equatable {
    /// Global index of the first token (``CacheReader`` token order, or the position in the
    /// corpus stream).
    public var firstToken: Int
    /// Tokens in the window, 1...T.
    public var length: Int
    /// Global index one past the last token of the window's sequence: the label of the last
    /// token is the next input id only when `firstToken + length < sequenceEnd`.
    public var sequenceEnd: Int

    public init(firstToken: Int, length: Int, sequenceEnd: Int) {
        self.firstToken = firstToken
        self.length = length
        self.sequenceEnd = sequenceEnd
    }
}
