import ArgumentParser

/// `logitcache-bench`: side-by-side benchmarks, apart from the product command line. Each
/// compares against a named baseline in one run, prints a table and, with `--json`, writes
/// machine-readable results. Benchmarks that run a Python baseline take the interpreter
/// (`--python`) and the script (`--script`) explicitly, so an installed binary finds them.
@main
struct LogitCacheBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "logitcache-bench",
        abstract: "Benchmarks that compare against a named baseline in one run.",
        subcommands: [
            BenchGemmCommand.self, BenchForwardCommand.self, BenchTokenizeCommand.self, BenchFormatCommand.self,
            BenchReadCommand.self, BenchLoaderCommand.self, BenchTeacherCommand.self, BenchTrainCommand.self,
        ])
}
