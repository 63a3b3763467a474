import ArgumentParser

/// Commands of the inference engine (tokenize, logits) area.
enum EngineCommands {
    static var top: [ParsableCommand.Type] { [
        TokenizeCommand.self,
        LogitsCommand.self,
    ] }
}
