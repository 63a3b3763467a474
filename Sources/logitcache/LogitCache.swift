import ArgumentParser

/// The `logitcache` command line: thin commands over the library modules.
///
/// Each area registers its commands in its own `*Commands` enum (one file per area), so the
/// areas can grow without touching this file.
@main
struct LogitCacheCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "logitcache",
        abstract: "Run a teacher once, cache its next-token distributions, stream them to many students.",
        subcommands: FormatCommands.top + EngineCommands.top + TeacherCommands.top + LawCommands.top + LoaderCommands.top + TrainCommands.top + SweepCommands.top
    )
}
