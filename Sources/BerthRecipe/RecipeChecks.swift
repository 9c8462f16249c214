import SystemPackage

/// The checks on values a recipe hands to the host. A recipe is someone else's file, as a
/// Containerfile is: it may change the image and nothing else. Two kinds of value leave it:
/// what mmdebstrap is given (it runs on the host as root, before any container exists, and takes
/// hooks, sources.list files and .deb paths among its arguments), and paths of host files. Each
/// is held to a form that can mean nothing else, and refused otherwise with one line naming
/// the recipe and its place; the values are not quoted in that line when they could hold
/// control characters, which would break it or reach the terminal.
enum RecipeChecks {
    /// mmdebstrap's variants (mmdebstrap(1)), less `-`, which reads as an option.
    static let variants = ["extract", "custom", "essential", "apt", "required", "minbase", "buildd",
                           "important", "debootstrap", "standard"]

    /// A suite or codename: `bookworm`, `stable`, `bookworm-backports`. Never an option, a path,
    /// or a sources.list line.
    static func suite(_ text: String, place: String) throws -> String {
        guard text.utf8.count <= 64, let first = text.utf8.first, isAlphanumeric(first),
              text.utf8.allSatisfy({ isAlphanumeric($0) || "._+-".utf8.contains($0) }) else {
            throw RecipeError("\(place): mmdebstrap takes a suite name such as \"bookworm\" (letters, digits, '.', '_', '+', '-', "
                              + "starting with a letter or digit), not \(quoted(text))")
        }
        return text
    }

    static func variant(_ text: String, place: String) throws -> String {
        guard variants.contains(text) else {
            throw RecipeError("\(place): variant must be one of mmdebstrap's: \(variants.joined(separator: ", ")); not \(quoted(text))")
        }
        return text
    }

    /// A package name by Debian Policy 5.6.7: lower-case letters, digits, `+`, `-` and `.`, at
    /// least two characters, starting with a letter or digit. So no option, no `pkg=version`,
    /// and no path to a .deb file on the host (which mmdebstrap's --include would install).
    static func package(_ text: String, place: String) throws -> String {
        let bytes = text.utf8
        guard bytes.count >= 2, bytes.count <= 128, let first = bytes.first, isLowerAlphanumeric(first),
              bytes.allSatisfy({ isLowerAlphanumeric($0) || "+-.".utf8.contains($0) }) else {
            throw RecipeError("\(place): packages must be Debian package names (lower-case letters, digits, '+', '-', '.', "
                              + "starting with a letter or digit), not \(quoted(text))")
        }
        return text
    }

    /// An http or https URL of a Debian archive, with only URL characters in it: no space (which
    /// would make it a sources.list line with options such as `[trusted=yes]`), no option, no
    /// host path (mmdebstrap reads a path as a sources.list file), no `file://` (a host directory
    /// the command line did not grant; serve it on http://127.0.0.1 instead).
    static func mirror(_ text: String, place: String) throws -> String {
        let lower = text.lowercased()
        let scheme = lower.hasPrefix("http://") ? "http://" : lower.hasPrefix("https://") ? "https://" : nil
        let urlCharacters = "-._~:/?[]@!$&'()*+,;=%".utf8
        guard let scheme, text.utf8.count <= 1024, text.utf8.count > scheme.utf8.count,
              text.utf8.allSatisfy({ isAlphanumeric($0) || urlCharacters.contains($0) }) else {
            throw RecipeError("\(place): mirror must be an http:// or https:// URL of a Debian archive, not \(quoted(text))")
        }
        return text
    }

    /// The path of a host file in a recipe: relative to its build context, and staying beneath
    /// it. Symlinks in the context are checked when it is opened (BuildContext.swift); this
    /// refuses what names the host outright.
    static func sourcePath(_ text: String, key: String, place: String) throws -> FilePath {
        guard !text.isEmpty else { throw RecipeError("\(place): \(key) is empty; give a path in the build context") }
        guard !hasControlCharacters(text) else {
            throw RecipeError("\(place): \(key) holds control characters; give a path in the build context")
        }
        let grant = "a recipe reads only its build context (the recipe's folder, or berth build --context DIR); "
            + "give a path relative to it, or grant a host directory with berth build --build-context NAME=DIR and write from = \"NAME\""
        if text.contains("://") || text.lowercased().hasPrefix("file:") {
            throw RecipeError("\(place): \(key) = \"\(text)\" is a URL: \(grant)")
        }
        if text.hasPrefix("/") {
            throw RecipeError("\(place): \(key) = \"\(text)\" is an absolute path on the host: \(grant)")
        }
        let path = FilePath(text)
        if path.components.contains(where: { $0.kind == .parentDirectory }) {
            throw RecipeError("\(place): \(key) = \"\(text)\" leads out of the build context with '..': \(grant)")
        }
        return path
    }

    /// The name in `from`, as given to `--build-context NAME=DIR`.
    static func contextName(_ text: String, place: String) throws -> String {
        guard isContextName(text) else {
            throw RecipeError("\(place): from names a build context (letters, digits, '.', '_', '-', starting with a letter or digit), not \(quoted(text))")
        }
        return text
    }

    static func isContextName(_ text: String) -> Bool {
        guard text.utf8.count <= 64, let first = text.utf8.first, isAlphanumeric(first) else { return false }
        return text.utf8.allSatisfy { isAlphanumeric($0) || "._-".utf8.contains($0) }
    }

    // MARK: Characters

    private static func isAlphanumeric(_ c: UInt8) -> Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(c) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(c)
            || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(c)
    }

    private static func isLowerAlphanumeric(_ c: UInt8) -> Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(c) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(c)
    }

    private static func hasControlCharacters(_ text: String) -> Bool {
        text.unicodeScalars.contains { $0.value < 0x20 || (0x7f...0x9f).contains($0.value) }
    }

    /// `text` in quotes when it is printable, for the error; otherwise a note that it is not.
    static func quoted(_ text: String) -> String {
        hasControlCharacters(text) ? "a value with control characters" : "\"\(text)\""
    }
}
