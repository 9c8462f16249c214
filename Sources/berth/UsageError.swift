/// A command line berth cannot read: an unknown command or option, a missing or extra argument,
/// or a value whose form is wrong (a hostname, a `-E` assignment, a relative `--chdir`). It exits
/// 64 (EX_USAGE, from sysexits.h), as swift-argument-parser's own usage errors do, so every
/// subcommand, run's hand-written parser included, reports usage errors with one status.
struct UsageError: Error {
    static let exitStatus: Int32 = 64
    var message: String

    init(_ message: String) { self.message = message }
}

/// nspawn's checks of run's values, made while the command line is read, before any work.
enum RunValueChecks {
    /// systemd's hostname_is_valid() (what nspawn's --hostname asks): labels of letters, digits
    /// and `-`, separated by single dots, none starting or ending with `-`, no leading or
    /// trailing dot, at most 64 characters (HOST_NAME_MAX); and, as DNS has it, labels of 1 to
    /// 63 characters.
    static func hostnameProblem(_ name: String) -> String? {
        let bytes = Array(name.utf8)
        guard !bytes.isEmpty else { return "it is empty" }
        guard bytes.count <= 64 else { return "it is longer than 64 characters" }
        for label in bytes.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false) {
            guard !label.isEmpty else { return "it has an empty label (a leading, trailing or doubled '.')" }
            guard label.count <= 63 else { return "a label is longer than 63 characters" }
            guard label.allSatisfy({ isLetterOrDigit($0) || $0 == UInt8(ascii: "-") }) else {
                return "it may hold only letters, digits, '-' and '.'"
            }
            guard label.first != UInt8(ascii: "-"), label.last != UInt8(ascii: "-") else {
                return "a label starts or ends with '-'"
            }
        }
        return nil
    }

    /// systemd's env_name_is_valid(): letters, digits and `_`, not starting with a digit.
    static func isEnvironmentName(_ name: Substring) -> Bool {
        guard let first = name.utf8.first, !(UInt8(ascii: "0")...UInt8(ascii: "9")).contains(first) else { return false }
        return name.utf8.allSatisfy { isLetterOrDigit($0) || $0 == UInt8(ascii: "_") }
    }

    /// nspawn's --chdir: an absolute path with no `..` in it (path_is_normalized()).
    static func chdirProblem(_ path: String) -> String? {
        guard path.hasPrefix("/") else { return "it is not an absolute path" }
        guard !path.split(separator: "/").contains("..") else { return "it holds '..'" }
        return nil
    }

    /// A boolean as systemd reads one (yes/no, true/false, on/off, 1/0, y/n, t/f), nil for
    /// anything else.
    static func boolean(_ text: String) -> Bool? {
        switch text.lowercased() {
        case "yes", "true", "1", "on", "y", "t": true
        case "no", "false", "0", "off", "n", "f": false
        default: nil
        }
    }

    /// sd_id128_from_string(): 32 hexadecimal digits, or a UUID's 8-4-4-4-12; the id as
    /// `container_uuid` gives it (the UUID form, lower case), nil for none or all zeros
    /// (nspawn refuses those).
    static func uuid(_ text: String) -> String? {
        let bytes = Array(text.utf8)
        let dashed = bytes.count == 36 && [8, 13, 18, 23].allSatisfy { bytes[$0] == UInt8(ascii: "-") }
        let digits = dashed ? bytes.enumerated().filter { ![8, 13, 18, 23].contains($0.offset) }.map(\.element) : bytes
        guard digits.count == 32, digits.allSatisfy(isHexDigit), digits.contains(where: { $0 != UInt8(ascii: "0") }) else {
            return nil
        }
        var lower = digits.map { (UInt8(ascii: "A")...UInt8(ascii: "F")).contains($0) ? $0 + 32 : $0 }
        for dash in [20, 16, 12, 8] { lower.insert(UInt8(ascii: "-"), at: dash) }
        return String(decoding: lower, as: UTF8.self)
    }

    private static func isHexDigit(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(byte)
            || (UInt8(ascii: "A")...UInt8(ascii: "F")).contains(byte)
    }

    private static func isLetterOrDigit(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
            || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
    }
}

/// The subcommand a mistyped or borrowed word most likely meant, for "unknown command" errors.
enum CommandSuggestion {
    /// machinectl's, docker's and the shell's words for berth's commands.
    private static let borrowed = [
        "ls": "list", "images": "list", "list-images": "list", "machines": "ps", "list-machines": "ps",
        "image-status": "show", "inspect": "show", "rm": "remove", "rmi": "remove", "mv": "rename",
        "cp": "clone", "exec": "shell", "attach": "shell", "stop": "poweroff", "prune": "gc", "clean": "gc",
        "pull-tar": "import", "import-tar": "import", "export-tar": "export",
    ]

    static func forWord(_ word: String, among names: [String]) -> String? {
        if let known = borrowed[word] { return known }
        guard word.count >= 3 else { return nil }
        let scored = names.map { ($0, distance(Array(word), Array($0))) }.filter { $0.1 <= 2 }
        return scored.min { $0.1 < $1.1 }?.0
    }

    /// Levenshtein distance, with a swap of neighbours counting as one edit (lsit: list).
    private static func distance(_ a: [Character], _ b: [Character]) -> Int {
        guard !a.isEmpty, !b.isEmpty else { return max(a.count, b.count) }
        var d = [[Int]](repeating: [Int](repeating: 0, count: b.count + 1), count: a.count + 1)
        for i in 0...a.count { d[i][0] = i }
        for j in 0...b.count { d[0][j] = j }
        for i in 1...a.count {
            for j in 1...b.count {
                let cost = a[i - 1] == b[j - 1] ? 0 : 1
                d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
                if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] { d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1) }
            }
        }
        return d[a.count][b.count]
    }
}
