import ArgumentParser
import BerthArchive
import BerthStore
import BerthSystem
import SystemPackage

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
        default: throw UsageError("read-only takes true or false, not '\(value)'")
        }
        try store.open(create: false).setReadOnly(try ImageName(name), readOnly)
    }
}

struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export", abstract: "Write an image's tree as a tarball; compression from FILE's suffix.")

    @OptionGroup var store: StoreOptions
    @Flag(help: "Replace FILE if it exists.") var force = false
    @Flag(name: .shortAndLong, help: "Print no progress and no summary.") var quiet = false
    @Argument(help: "The image.") var name: String
    @Argument(help: "The tarball to write (.tar, .tar.gz, .tar.xz, .tar.zst, .tar.bz2), or - for standard output.")
    var file: String

    /// The tarball goes to standard output only with `-`, and every message to standard error,
    /// so `berth export NAME - | ssh host berth import - NAME` carries nothing but the archive.
    func run() throws {
        let image = try ImageName(name)
        if file == "-" {
            guard !Terminal.isTerminal(1) else {
                throw StoreError("export - writes a tarball to standard output, which is a terminal; redirect it to a file or a pipe")
            }
        } else if !force, let existing = try? FileStatus.of(FilePath(file)) {
            let what = existing.kind == .regular ? "exists" : "exists and is not a regular file"
            throw StoreError("\(file) \(what); pass --force to replace it, or choose another file")
        }
        let bar = ProgressBar.onTerminal(label: image.rawValue, quiet: quiet)
        let destination = file == "-" ? "standard output" : file
        var last: ExportProgress?
        try store.open(create: false).export(image, to: file, force: force) { progress in
            last = progress
            guard let bar else { return }
            bar.update(progress)
            if progress.finished && file != "-" { bar.finish(next: "Syncing \(destination) to disk...") }
        }
        bar?.finish()
        guard !quiet, let last else { return }
        var note = "Exported '\(image)' to \(destination): \(last.entries) entries, \(formatSize(last.bytesRead)) of data"
        if file != "-", let written = try? FileStatus.of(FilePath(file)) { note += ", \(formatSize(written.size)) written" }
        writeOut(2, Printable.escaping(note + " in \(formatSeconds(last.seconds)).") + "\n")
    }
}
