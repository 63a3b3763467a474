import ArgumentParser

/// Commands of the training area (train, eval).
enum TrainCommands {
    static var top: [ParsableCommand.Type] { [TrainCommand.self, EvalCommand.self] }
}
