import BerthSystem
import Glibc
import SystemPackage

/// A systemd-nspawn settings file, `NAME.nspawn` (systemd.nspawn(5)), read as nspawn 252 reads
/// it: `[Exec]`, `[Files]` and `[Network]` sections of `Key=Value` lines, `#` and `;` comments,
/// a trailing `\` joining a line to the next. An unknown section or key, a line without `=`, or
/// a value that does not parse is a warning and is passed over; a malformed section header or
/// bytes that are not UTF-8 make the file unreadable, which is an error.
struct NspawnSettings {
    struct Setting {
        let section: String
        let key: String
        let value: String
        let line: Int
    }

    let path: String
    /// Found in /etc/systemd/nspawn or /run/systemd/nspawn (or `--settings=trusted`): the
    /// privileged keys (binds, capabilities, the network, limits ...) are honoured only then.
    let trusted: Bool
    private(set) var settings: [Setting] = []

    /// `--settings=`: whether a file is read, whether it is trusted wherever it is, and whether
    /// its settings win over the command line's.
    enum Mode: String {
        case yes, no, trusted, override

        init(parsing text: String) throws {
            if let mode = Mode(rawValue: text) { self = mode; return }
            guard let flag = RunValueChecks.boolean(text) else {
                throw UsageError("--settings takes yes, no, trusted or override, not '\(text)'")
            }
            self = flag ? .yes : .no
        }
    }

    /// The file for machine `name`, as nspawn looks for it: /etc/systemd/nspawn/NAME.nspawn, else
    /// /run/systemd/nspawn/NAME.nspawn (both trusted), else NAME.nspawn in `beside` (the
    /// directory holding the tree, or the store for an image), which is trusted only when asked.
    /// Nil when there is none.
    static func find(name: String, beside: String?, mode: Mode, warn: (String) -> Void) throws -> NspawnSettings? {
        guard mode != .no else { return nil }
        var candidates = [("/etc/systemd/nspawn/\(name).nspawn", true), ("/run/systemd/nspawn/\(name).nspawn", true)]
        if let beside { candidates.append(("\(beside)/\(name).nspawn", mode == .trusted)) }
        for (path, trusted) in candidates {
            let bytes: [UInt8]
            do {
                bytes = try Descriptor.open(FilePath(path), O_RDONLY).readAll(limit: 1 << 20)
            } catch let error as SystemError where error.errno == .noSuchFileOrDirectory {
                continue
            } catch {
                throw UsageError("cannot read the settings file \(path): \(error); fix it, or run with --settings=no")
            }
            var file = NspawnSettings(path: path, trusted: trusted)
            try file.read(bytes, warn: warn)
            return file
        }
        return nil
    }

    private mutating func read(_ bytes: [UInt8], warn: (String) -> Void) throws {
        guard let text = String(validatingUTF8: bytes.map { CChar(bitPattern: $0) } + [0]) else {
            throw UsageError("the settings file \(path) is not UTF-8 text; fix it, or run with --settings=no")
        }
        var section: String?
        var pending = "", pendingLine = 0
        // "\r\n" is one Character to Swift: lines end at either.
        var lines = text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" })
        lines.append("")  // a continuation on the last line ends with the file
        for (index, raw) in lines.enumerated() {
            var line = raw.drop { $0 == " " || $0 == "\t" }
            while line.last == " " || line.last == "\t" || line.last == "\r" { line = line.dropLast() }
            // Comments are passed over, inside a continued line too (as systemd reads them).
            if line.first == "#" || line.first == ";" || (pending.isEmpty && line.isEmpty) { continue }
            if pending.isEmpty { pendingLine = index + 1 }
            // An odd number of backslashes at the end continues the line; "\\" is one backslash.
            if line.reversed().prefix(while: { $0 == "\\" }).count % 2 == 1 {
                pending += line.dropLast() + " "
                continue
            }
            let whole = pending + line
            pending = ""
            if whole.isEmpty { continue }
            if whole.first == "[" {
                guard whole.last == "]", !whole.dropFirst().dropLast().contains(where: { $0 == "[" || $0 == "]" }) else {
                    throw UsageError("\(path):\(pendingLine): '\(whole)' is not a section header; fix it, or run with --settings=no")
                }
                let name = String(whole.dropFirst().dropLast())
                section = name
                if !["Exec", "Files", "Network"].contains(name) && !name.hasPrefix("X-") {
                    warn("\(path):\(pendingLine): unknown section [\(name)], ignored")
                }
                continue
            }
            guard let equals = whole.firstIndex(of: "=") else {
                warn("\(path):\(pendingLine): a line without '=', ignored")
                continue
            }
            guard let section else {
                warn("\(path):\(pendingLine): a setting before any section, ignored")
                continue
            }
            var key = whole[..<equals], value = whole[whole.index(after: equals)...]
            while key.last == " " || key.last == "\t" { key = key.dropLast() }
            value = value.drop { $0 == " " || $0 == "\t" }
            settings.append(Setting(section: section, key: String(key), value: String(value), line: pendingLine))
        }
    }

    /// The words of a value, split at white space, with systemd's quoting ("a b", 'a b', \ escapes).
    static func words(_ value: String) -> [String] {
        var words: [String] = [], current = "", quote: Character?, escaped = false, inWord = false
        for character in value {
            if escaped {
                current.append(character)
                escaped = false
            } else if character == "\\" {
                escaped = true
                inWord = true
            } else if let open = quote {
                if character == open { quote = nil } else { current.append(character) }
            } else if character == "\"" || character == "'" {
                quote = character
                inWord = true
            } else if character == " " || character == "\t" {
                if inWord { words.append(current) }
                current = ""
                inWord = false
            } else {
                current.append(character)
                inWord = true
            }
        }
        if inWord { words.append(current) }
        return words
    }

    /// nspawn's machine name for a directory: its last component as systemd's hostname_cleanup
    /// makes it, letters, digits, `-` and `.` kept, none of them first, no `.` after `-` or `.`,
    /// no `-` after `.`, at most 64 characters, no `-` or `.` last.
    static func machineName(ofDirectory path: String) -> String {
        let last = path.split(separator: "/").last.map(String.init) ?? ""
        var kept = "", dot = true, hyphen = true
        for character in last where kept.count < 64 {
            if character == "." {
                if dot || hyphen { continue }
                (dot, hyphen) = (true, false)
            } else if character == "-" {
                if dot { continue }
                (dot, hyphen) = (false, true)
            } else if character.isASCII && (character.isLetter || character.isNumber) {
                (dot, hyphen) = (false, false)
            } else {
                continue
            }
            kept.append(character)
        }
        while let final = kept.last, final == "-" || final == "." { kept.removeLast() }
        return kept
    }
}
