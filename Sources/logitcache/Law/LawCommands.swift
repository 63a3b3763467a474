import ArgumentParser

/// Commands of the scaling laws (law …) area.
enum LawCommands {
    static var top: [ParsableCommand.Type] { [] }
    static var bench: [ParsableCommand.Type] { [] }
}
