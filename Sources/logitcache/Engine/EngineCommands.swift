import ArgumentParser

/// Commands of the inference engine (tokenize, logits, bench forward) area.
enum EngineCommands {
    static var top: [ParsableCommand.Type] { [
        TokenizeCommand.self,
        LogitsCommand.self,
    ] }
    static var bench: [ParsableCommand.Type] { [
        BenchTokenizeCommand.self,
        BenchGemmCommand.self,
        BenchForwardCommand.self,
    ] }
}
