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
        subcommands: FormatCommands.top + EngineCommands.top + TeacherCommands.top + LawCommands.top + LoaderCommands.top + TrainCommands.top + SweepCommands.top + [BenchCommand.self]
    )
}

/// `logitcache bench …`: side-by-side benchmarks; each prints a table and, with `--json`,
/// machine-readable results.
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Benchmarks that compare against a named baseline in one run.",
        subcommands: FormatCommands.bench + EngineCommands.bench + TeacherCommands.bench + LawCommands.bench + LoaderCommands.bench + TrainCommands.bench
    )
}
