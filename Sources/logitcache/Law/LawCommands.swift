import ArgumentParser

/// Commands of the scaling laws (law …) area.
enum LawCommands {
    static var top: [ParsableCommand.Type] { [LawCommand.self] }
}

/// `logitcache law …`: the distillation scaling law of Busbridge et al. (2025) and the compute
/// accounting that says when one cached teacher pass pays for itself.
struct LawCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "law",
        abstract: "Scaling-law predictions, FLOP accounting for cached vs online teachers, and fits.",
        subcommands: [LawFlopsCommand.self, LawPredictCommand.self, LawFitCommand.self, LawPlanCommand.self])
}
