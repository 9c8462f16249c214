import ArgumentParser
import BerthArchive
import BerthStore
import BerthSystem
import FoundationEssentials
import Glibc

struct ImportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import",
        abstract: "Import a tarball (plain, gzip, xz, zstd, bzip2), standard input or a directory as an image.")

    @OptionGroup var store: StoreOptions
    @Flag(name: .customLong("read-only"), help: "Mark the new image read-only.") var readOnly = false
    @Flag(help: "Replace an existing image of the same name once the new one is complete.") var force = false
    @Option(help: ArgumentHelp("Refuse the tarball unless its SHA-256 is HEX.", valueName: "sha256:HEX"))
    var verify: String?
    @Option(name: .customLong("max-size"),
            help: ArgumentHelp("Stop once the files' sizes, with 4K a directory and 512 bytes any other entry, add up past SIZE (K, M, G, T suffixes; default 64G).", valueName: "SIZE"))
    var maxSize: String?
    @Option(name: .customLong("max-entries"),
            help: ArgumentHelp("Stop past N entries (files, directories, links...; default 2000000).", valueName: "N"))
    var maxEntries: Int?
    @Flag(name: .shortAndLong, help: "Print no progress.") var quiet = false
    @Argument(help: "A tarball, - for standard input, or a directory.") var source: String
    @Argument(help: "The image's name (default: SOURCE's base name less archive suffixes).") var name: String?

    func run() throws {
        let imageName: ImageName
        if let name {
            imageName = try ImageName(name)
        } else if source == "-" {
            throw UsageError("give a NAME for an image read from standard input")
        } else {
            imageName = try ImageName.derived(fromSource: source)
        }
        var options = ImportOptions()
        options.readOnly = readOnly
        options.force = force
        if let verify { options.expectedSHA256 = try parseDigest(verify) }
        if let maxSize { options.limits.maxBytes = try parseSize(maxSize) }
        if let maxEntries {
            guard maxEntries > 0 else { throw UsageError("--max-entries takes a positive number, not \(maxEntries)") }
            options.limits.maxEntries = maxEntries
        }
        if source == "-" && Terminal.isTerminal(0) {
            throw StoreError("import - reads a tarball from standard input, which is a terminal; pipe or redirect one in (berth import - NAME < FILE)")
        }
        let importSource = try ImportSource(argument: source)

        let bar = ProgressBar.onTerminal(label: imageName.rawValue, quiet: quiet)
        options.onProgress = bar.map { bar in
            { progress in
                bar.update(progress)
                // What follows the last member: the store's file system is synced (all of the
                // image's data reaches the disk) before the image is published.
                if progress.finished { bar.finish(next: "Syncing '\(imageName)' to disk before publishing it...") }
            }
        }
        let result = try store.open(create: true).importImage(from: importSource, as: imageName, options: options)
        bar?.finish()
        if !quiet {
            var note = "Imported '\(result.name)': \(result.entries) entries, \(formatSize(result.bytes))"
            if result.unwrapped { note += ", unwrapped from its top-level directory" }
            if !result.skippedAttributes.isEmpty {
                note += "; not applied: \(result.skippedAttributes.joined(separator: ", "))"
            }
            print(note + ".")
        }
    }

    private func parseDigest(_ text: String) throws -> String {
        let hex = text.lowercased().hasPrefix("sha256:") ? String(text.dropFirst(7)).lowercased() : ""
        guard SHA256.isDigest(hex) else {
            throw UsageError("--verify takes sha256: and 64 hexadecimal digits, not '\(text)'")
        }
        return hex
    }

    private func parseSize(_ text: String) throws -> Int64 {
        let units: [Character: Int64] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40]
        var digits = Substring(text.uppercased())
        var unit: Int64 = 1
        if let last = digits.last, let u = units[last] {
            unit = u
            digits = digits.dropLast()
        }
        guard let n = Int64(digits), n > 0, n <= Int64.max / unit else {
            throw UsageError("--max-size takes a size such as 512M or 64G, not '\(text)'")
        }
        return n * unit
    }
}
