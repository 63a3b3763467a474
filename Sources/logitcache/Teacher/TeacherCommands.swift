import ArgumentParser

/// Commands of the teacher-pass area (teacher, split, bench teacher).
enum TeacherCommands {
    static var top: [ParsableCommand.Type] { [TeacherCommand.self, SplitCommand.self] }
    static var bench: [ParsableCommand.Type] { [BenchTeacherCommand.self] }
}
