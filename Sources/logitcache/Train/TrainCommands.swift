import ArgumentParser

/// Commands of the training area (train, eval, bench train).
enum TrainCommands {
    static var top: [ParsableCommand.Type] { [TrainCommand.self, EvalCommand.self] }
    static var bench: [ParsableCommand.Type] { [BenchTrainCommand.self] }
}
