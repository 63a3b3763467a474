import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The kinds of corpus file LogitCache reads, chosen by file extension.
public enum CorpusFileKind: String, Sendable, Codable {
    /// UTF-8 text: one document per file, or documents separated by blank lines.
    case text
    /// JSON Lines: one object per line with a string field (default `text`).
    case jsonl
    /// Token ids (see ``TokenFile``): llm.c `.bin` with header, or raw `.u16` / `.u32`.
    case tokens

    /// The kind for a path's extension, or nil when it is not a corpus file.
    /// Text and JSON Lines may be zstd-compressed (`.txt.zst`, `.jsonl.zst`).
    public init?(path: String) {
        var p = path as NSString
        if p.pathExtension.lowercased() == "zst" { p = p.deletingPathExtension as NSString }
        switch p.pathExtension.lowercased() {
        case "txt", "text", "md": self = .text
        case "jsonl", "ndjson": self = .jsonl
        case "bin", "u16", "u32" where !path.lowercased().hasSuffix(".zst"): self = .tokens
        default: return nil
        }
    }
}

/// Expands corpus arguments (files, directories, glob patterns) into a stable, sorted list.
///
/// Directories are walked recursively and keep only files with a known extension; globs are
/// expanded by `glob(3)`. The result is sorted by path bytes and de-duplicated, so the same
/// arguments give the same order on every machine.
///
/// - Throws: ``CorpusError/notFound(path:)`` for an argument that matches nothing,
///   ``CorpusError/unsupportedFile(path:)`` for an explicit file of unknown type.
public func expandCorpusPaths(_ arguments: [String]) throws -> [String] {
    var out: [String] = []
    let fm = FileManager.default
    for arg in arguments {
        let matches: [String]
        if arg.contains(where: { "*?[".contains($0) }) {
            matches = globPaths(arg)
            if matches.isEmpty { throw CorpusError.notFound(path: arg) }
        } else {
            matches = [arg]
        }
        for path in matches {
            var isDir: ObjCBool = false
            guard fm.fileExists(atPath: path, isDirectory: &isDir) else { throw CorpusError.notFound(path: path) }
            if isDir.boolValue {
                guard let walker = fm.enumerator(atPath: path) else {
                    throw CorpusError.unreadable(path: path, reason: "cannot list directory")
                }
                while let rel = walker.nextObject() as? String {
                    let full = (path as NSString).appendingPathComponent(rel)
                    var sub: ObjCBool = false
                    if fm.fileExists(atPath: full, isDirectory: &sub), !sub.boolValue,
                       CorpusFileKind(path: full) != nil {
                        out.append(full)
                    }
                }
            } else {
                guard CorpusFileKind(path: path) != nil else { throw CorpusError.unsupportedFile(path: path) }
                out.append(path)
            }
        }
    }
    // Byte order, not locale order: identical on every machine.
    let sorted = out.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
    var seen = Set<String>()
    return sorted.filter { seen.insert($0).inserted }
}

private func globPaths(_ pattern: String) -> [String] {
    var g = glob_t()
    defer { globfree(&g) }
    guard glob(pattern, 0, nil, &g) == 0 else { return [] }
    var paths: [String] = []
    for i in 0..<Int(g.gl_pathc) {
        // Safe because glob(3) returned gl_pathc valid C strings in gl_pathv.
        if let p = g.gl_pathv[i] { paths.append(String(cString: p)) }
    }
    return paths
}
