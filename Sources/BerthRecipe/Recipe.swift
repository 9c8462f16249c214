import BerthArchive
import BerthStore
import BerthSystem
import Glibc
import SystemPackage
import TOMLKit

/// Why a recipe could not be read or built, naming the file and the line or step.
public struct RecipeError: Error, CustomStringConvertible {
    public var message: String
    /// The last lines a failing step printed, to show before the one-line error.
    public var output: [String]
    public init(_ message: String, output: [String] = []) {
        self.message = message
        self.output = output
    }
    public var description: String { message }
}

/// A recipe: a base tree and ordered steps, read from TOML (see recipes/README.md).
public struct Recipe {
    public enum Base: Equatable {
        /// An empty tree.
        case scratch
        /// A tarball in a build context, with its SHA-256.
        case tarball(Source, sha256: String)
        /// An image in the store.
        case image(String)
        /// A Debian tree made by mmdebstrap.
        case mmdebstrap(Bootstrap)
    }

    /// A file or directory a recipe takes from the host: a relative path, with no `..`, beneath
    /// a build context. The recipe names no host path of its own: the command line says which
    /// directories it may read (the recipe's folder, `--context DIR`, `--build-context NAME=DIR`).
    public struct Source: Equatable, CustomStringConvertible {
        /// The context granted as `--build-context NAME=DIR` and named by `from = "NAME"`; nil for
        /// the default one.
        public var context: String?
        public var path: FilePath
        public var description: String { context.map { "\(path) from \($0)" } ?? path.string }
    }

    /// What mmdebstrap is given. Every value is checked when the recipe is read (see
    /// RecipeChecks.swift), because each reaches mmdebstrap's command line, run on the host as root.
    public struct Bootstrap: Equatable {
        public var suite: String
        public var variant = "minbase"
        public var packages: [String] = []
        public var mirror = "http://deb.debian.org/debian"
        /// Timestamps in the tree, for a reproducible result.
        public var sourceDateEpoch = 1_700_000_000
    }

    public enum Step: Equatable {
        /// A command in a container over the tree: a string goes to `/bin/sh -c`, an array is the argv.
        case run([String], shell: Bool)
        /// A file or directory of a build context copied to a path in the tree.
        case copy(Source, to: String, mode: mode_t?)
        /// A file of the tree given this content.
        case write(String, content: String, mode: mode_t)
        /// /etc/hostname.
        case hostname(String)
        /// systemd units enabled as `systemctl enable` does.
        case enable([String])
    }

    /// The recipe file, as given.
    public var file: String
    public var name: String?
    public var description: String?
    public var base: Base
    public var steps: [Step]

    /// Reads and checks the recipe at `path`. Every key is checked: a typo is an error, not a
    /// step that silently does nothing.
    public init(contentsOf path: String) throws {
        file = path
        let bytes: [UInt8]
        do {
            bytes = try Descriptor.open(FilePath(path), O_RDONLY).readAll(limit: 1 << 20)
        } catch let error as SystemError {
            throw RecipeError("cannot read the recipe \(path): \(error.errno)")
        }
        let table: TOMLTable
        do {
            table = try TOMLTable(string: String(decoding: bytes, as: UTF8.self))
        } catch let error as TOMLParseError {
            throw RecipeError("\(path):\(error.source.begin.line):\(error.source.begin.column): \(error.description)")
        }
        let top = Keys(table, place: path)
        try top.allow(["name", "description", "base", "step"])
        name = try top.string("name")
        description = try top.string("description")
        if let description, description.contains("\n") {
            throw RecipeError("\(path): description must be one line")
        }
        guard let baseTable = table["base"]?.table else {
            throw RecipeError("\(path): no [base] table; give one of scratch, tarball, image or mmdebstrap")
        }
        base = try Self.base(Keys(baseTable, place: "\(path): [base]"))
        var steps: [Step] = []
        if let list = table["step"] {
            guard let array = list.array else { throw RecipeError("\(path): 'step' must be an array of tables: [[step]]") }
            for (index, value) in array.enumerated() {
                let place = "\(path): step \(index + 1)"
                guard let stepTable = value.table else { throw RecipeError("\(place): a step must be a table") }
                steps.append(try Self.step(Keys(stepTable, place: place)))
            }
        }
        self.steps = steps
    }

    private static func base(_ keys: Keys) throws -> Base {
        let kind = try keys.exactlyOne(of: ["scratch", "tarball", "image", "mmdebstrap"])
        switch kind {
        case "scratch":
            try keys.allow(["scratch"])
            guard try keys.bool("scratch") == true else { throw RecipeError("\(keys.place): scratch must be true") }
            return .scratch
        case "tarball":
            try keys.allow(["tarball", "sha256", "from"])
            guard let digest = try keys.string("sha256")?.lowercased() else {
                throw RecipeError("\(keys.place): a tarball base needs its sha256")
            }
            guard SHA256.isDigest(digest) else {
                throw RecipeError("\(keys.place): sha256 must be 64 hexadecimal digits")
            }
            return .tarball(try source(keys, "tarball"), sha256: digest)
        case "image":
            try keys.allow(["image"])
            return .image(try keys.required("image"))
        default:
            try keys.allow(["mmdebstrap", "variant", "packages", "mirror", "source_date_epoch"])
            var bootstrap = Bootstrap(suite: try RecipeChecks.suite(keys.required("mmdebstrap"), place: keys.place))
            if let variant = try keys.string("variant") { bootstrap.variant = try RecipeChecks.variant(variant, place: keys.place) }
            if let packages = try keys.strings("packages") {
                bootstrap.packages = try packages.map { try RecipeChecks.package($0, place: keys.place) }
            }
            if let mirror = try keys.string("mirror") { bootstrap.mirror = try RecipeChecks.mirror(mirror, place: keys.place) }
            if let epoch = try keys.int("source_date_epoch") {
                guard epoch >= 0 else { throw RecipeError("\(keys.place): source_date_epoch must not be negative") }
                bootstrap.sourceDateEpoch = epoch
            }
            return .mmdebstrap(bootstrap)
        }
    }

    private static func step(_ keys: Keys) throws -> Step {
        let kind = try keys.exactlyOne(of: ["run", "copy", "write", "hostname", "enable"])
        switch kind {
        case "run":
            try keys.allow(["run"])
            if let command = (try? keys.string("run")) ?? nil {
                return .run([command], shell: true)
            }
            guard let argv = try keys.strings("run"), !argv.isEmpty else {
                throw RecipeError("\(keys.place): run takes a command line or a non-empty array of arguments")
            }
            return .run(argv, shell: false)
        case "copy":
            try keys.allow(["copy", "from", "to", "mode"])
            guard let to = try keys.string("to"), to.hasPrefix("/") else {
                throw RecipeError("\(keys.place): copy needs 'to', an absolute path in the image")
            }
            return .copy(try source(keys, "copy"), to: to, mode: try keys.mode("mode"))
        case "write":
            try keys.allow(["write", "content", "mode"])
            guard let path = try keys.string("write"), path.hasPrefix("/") else {
                throw RecipeError("\(keys.place): write takes an absolute path in the image")
            }
            guard let content = try keys.string("content") else { throw RecipeError("\(keys.place): write needs 'content'") }
            return .write(path, content: content, mode: try keys.mode("mode") ?? 0o644)
        case "hostname":
            try keys.allow(["hostname"])
            return .hostname(try keys.required("hostname"))
        default:
            try keys.allow(["enable"])
            if let unit = (try? keys.string("enable")) ?? nil { return .enable([unit]) }
            guard let units = try keys.strings("enable"), !units.isEmpty else {
                throw RecipeError("\(keys.place): enable takes a unit or an array of units")
            }
            return .enable(units)
        }
    }

    /// The source named by `key` and the optional `from`.
    private static func source(_ keys: Keys, _ key: String) throws -> Source {
        let path = try RecipeChecks.sourcePath(keys.required(key), key: key, place: keys.place)
        let context = try keys.string("from").map { try RecipeChecks.contextName($0, place: keys.place) }
        return Source(context: context, path: path)
    }
}

/// A TOML table whose keys are checked one by one, with errors that say where.
private struct Keys {
    let table: TOMLTable
    let place: String

    init(_ table: TOMLTable, place: String) {
        self.table = table
        self.place = place
    }

    func allow(_ known: [String]) throws {
        for key in table.keys where !known.contains(key) {
            throw RecipeError("\(place): unknown key '\(key)' (known here: \(known.joined(separator: ", ")))")
        }
    }

    func exactlyOne(of kinds: [String]) throws -> String {
        let present = kinds.filter { table.contains(key: $0) }
        guard present.count == 1 else {
            throw RecipeError("\(place): give exactly one of \(kinds.joined(separator: ", "))" +
                              (present.isEmpty ? "" : ", not \(present.joined(separator: " and "))"))
        }
        return present[0]
    }

    func string(_ key: String) throws -> String? {
        guard let value = table[key] else { return nil }
        guard let string = value.string else { throw RecipeError("\(place): '\(key)' must be a string") }
        return string
    }

    /// The string at `key`, which the caller has already found present (`exactlyOne(of:)`).
    func required(_ key: String) throws -> String {
        guard let string = try string(key) else { throw RecipeError("\(place): '\(key)' is missing") }
        return string
    }

    func strings(_ key: String) throws -> [String]? {
        guard let value = table[key] else { return nil }
        guard let array = value.array else { throw RecipeError("\(place): '\(key)' must be an array of strings") }
        return try array.map { element in
            guard let string = element.string else { throw RecipeError("\(place): '\(key)' must be an array of strings") }
            return string
        }
    }

    func int(_ key: String) throws -> Int? {
        guard let value = table[key] else { return nil }
        guard let int = value.int else { throw RecipeError("\(place): '\(key)' must be an integer") }
        return int
    }

    func bool(_ key: String) throws -> Bool? {
        guard let value = table[key] else { return nil }
        guard let bool = value.bool else { throw RecipeError("\(place): '\(key)' must be true or false") }
        return bool
    }

    /// A file mode: an octal string ("0644") or a TOML integer (0o644).
    func mode(_ key: String) throws -> mode_t? {
        guard let value = table[key] else { return nil }
        if let int = value.int, (0...0o7777).contains(int) { return mode_t(int) }
        if let text = value.string, let mode = mode_t(text, radix: 8), mode <= 0o7777 { return mode }
        throw RecipeError("\(place): '\(key)' must be an octal mode such as \"0644\"")
    }
}
