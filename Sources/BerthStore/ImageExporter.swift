import BerthArchive
import BerthSystem
import Glibc
import SystemPackage

/// `berth export`: an image's merged tree as a tarball. It reads the tree, so it holds the
/// image as a reader does: beside read-only and ephemeral runs, never beside a writer, whose
/// changes would land in the tarball half made (and under an overlay, a layer that changes
/// is undefined).
struct ImageExporter {
    let uses: ImageUses
    let mounts: ImageMounts?

    /// Writes the image's tree as a tarball to `file` (`-` for standard output), compressed as
    /// its name says. The file appears only when complete, and replaces one already there only
    /// with `force`.
    func export(_ name: ImageName, to file: String, force: Bool = false, onProgress: ((ExportProgress) -> Void)? = nil) throws {
        _ = try uses.catalog.require(name)
        let compression: ArchiveCompression
        if file == "-" {
            compression = .none
        } else if let chosen = ArchiveCompression.forFileName(file) {
            compression = chosen
        } else {
            throw StoreError(.invalidInput, "cannot tell the compression from '\(file)'; name it .tar, .tar.gz, .tar.xz, .tar.zst or .tar.bz2")
        }
        let use = try uses.use(name, .readOnly)
        func write(_ tree: String) throws {
            try self.write(tree: tree, of: name, to: file, compression: compression, force: force, onProgress: onProgress)
        }
        guard use.isLayered else { return try write(use.root.string) }
        guard let mounts else { throw uses.catalog.noImage(name) }
        try mounts.withMergedTree(use) { try write($0.string) }
    }

    private func write(tree: String, of name: ImageName, to file: String, compression: ArchiveCompression,
                       force: Bool, onProgress: ((ExportProgress) -> Void)?) throws {
        do {
            if file == "-" {
                try TreeExport.export(tree, to: Descriptor(owning: dup(1)), compression: compression, onProgress: onProgress)
                return
            }
            let target = FilePath(file)
            let partial = target.removingLastComponent().appending(".\(target.lastComponent?.string ?? "export").partial-\(randomSuffix())")
            let out = try Descriptor.open(partial, O_WRONLY | O_CREAT | O_EXCL, mode: 0o644)
            do {
                try TreeExport.export(tree, to: out, compression: compression, onProgress: onProgress)
                try out.sync()
                do {
                    try Directory(opening: target.removingLastComponent().isEmpty ? "." : target.removingLastComponent())
                        .rename(FilePath(partial.lastComponent?.string ?? ""), to: FilePath(target.lastComponent?.string ?? ""),
                                force ? .replace : .noReplace)
                } catch let error as SystemError where error.errno == .fileExists {
                    throw StoreError(.exists, "cannot export '\(name)': \(file) was created meanwhile; pass --force to replace it")
                }
            } catch {
                _ = partial.withPlatformString { Glibc.unlink($0) }
                throw error
            }
        } catch let error as ArchiveError {
            throw StoreError(.systemFailure, "cannot export '\(name)' to \(file): \(error.message)")
        } catch let error as SystemError {
            throw StoreError.wrapping(error, "cannot export '\(name)' to \(file)")
        }
    }
}
