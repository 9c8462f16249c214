import ArgumentParser
import BerthStore

struct RenameCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rename", abstract: "Rename an image.")

    @OptionGroup var store: StoreOptions
    @Argument(help: "The image.") var old: String
    @Argument(help: "Its new name.") var new: String

    func run() throws {
        let (from, to) = (try ImageName(old), try ImageName(new))
        try store.open(create: false).rename(from, to: to)
    }
}

struct RemoveCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "remove", abstract: "Remove images.")

    @OptionGroup var store: StoreOptions
    @Argument(help: "The images.") var names: [String]
    @Flag(name: [.customShort("q"), .long], help: "Print nothing.") var quiet = false

    func validate() throws {
        guard !names.isEmpty else { throw ValidationError("name at least one image to remove") }
    }

    func run() throws {
        let images = try names.map(ImageName.init)
        let removal = try store.open(create: false).remove(images)
        guard !quiet else { return }
        let names = removal.names.map { "'\($0)'" }.joined(separator: ", ")
        var line = "Removed \(names), freeing \(formatSize(removal.bytes))."
        if removal.keptLayers > 0 {
            line += " \(removal.keptLayers) layer\(removal.keptLayers == 1 ? "" : "s") only \(removal.names.count == 1 ? "it" : "they") used stay\(removal.keptLayers == 1 ? "s" : "") for the build cache; 'berth gc --drop-cache' frees \(removal.keptLayers == 1 ? "it" : "them")."
        }
        print(line)
    }
}

struct ReadOnlyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "read-only", abstract: "Mark an image read-only (or, with false, writable).")

    @OptionGroup var store: StoreOptions
    @Argument(help: "The image.") var name: String
    @Argument(help: "true or false.") var value: String = "true"

    func run() throws {
        let readOnly: Bool
        switch value.lowercased() {
        case "true", "yes", "1", "on": readOnly = true
        case "false", "no", "0", "off": readOnly = false
        default: throw StoreError("read-only takes true or false, not '\(value)'")
        }
        try store.open(create: false).setReadOnly(try ImageName(name), readOnly)
    }
}

struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export", abstract: "Write an image's tree as a tarball; compression from FILE's suffix.")

    @OptionGroup var store: StoreOptions
    @Argument(help: "The image.") var name: String
    @Argument(help: "The tarball to write (.tar, .tar.gz, .tar.xz, .tar.zst, .tar.bz2), or - for standard output.")
    var file: String

    func run() throws {
        try store.open(create: false).export(try ImageName(name), to: file)
    }
}
