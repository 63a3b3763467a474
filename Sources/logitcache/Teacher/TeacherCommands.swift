import ArgumentParser

/// Commands of the teacher-pass area (teacher, split).
enum TeacherCommands {
    static var top: [ParsableCommand.Type] { [TeacherCommand.self, SplitCommand.self] }
}
