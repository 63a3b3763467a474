import ArgumentParser

/// Commands of the cache format (inspect, verify, bench format) area.
enum FormatCommands {
    static var top: [ParsableCommand.Type] { [] }
    static var bench: [ParsableCommand.Type] { [] }
}
