import BerthArchive
import BerthSystem
import Glibc
import SystemPackage

/// Files of a build context into an image's tree, for copy, write and hostname steps. Paths in the image are
/// resolved as inside it (symlinks there stay there); what is made belongs to root.
enum TreeCopy {
    /// Opens the directory that will hold `path` in the image, making missing ones.
    private static func parent(of path: FilePath, in root: Directory) throws -> (Directory, FilePath) {
        guard let last = path.lastComponent else { throw RecipeError("'\(path)' names no file in the image") }
        let parent = try root.openDirectory(inRoot: FilePath(root: nil, path.removingLastComponent().components), creating: true)
        return (parent, FilePath(root: nil, [last]))
    }

    /// Replaces what is at `name` in `directory` (not a directory) so a new file can go there.
    private static func clear(_ name: FilePath, in directory: Directory) throws {
        if let status = try directory.status(name), status.kind != .directory {
            try directory.remove(name, isDirectory: false)
        }
    }

    /// Sets `path` in the image to `bytes`, with `mode`.
    static func write(_ bytes: [UInt8], to path: FilePath, in root: Directory, mode: mode_t) throws {
        let (directory, name) = try parent(of: path, in: root)
        try clear(name, in: directory)
        let file = try directory.createFile(name, mode: mode)
        try bytes.withUnsafeBytes { try file.writeAll($0) }
        try file.setMode(mode)
    }

    /// Copies `source`, a file or directory of a build context, to `path` in the image; `mode`
    /// overrides the source's for a file. In a directory, symlinks are copied as symlinks, never
    /// followed, so one pointing out of the context brings nothing of the host along.
    static func copy(_ source: ContextFile, to path: FilePath, in root: Directory, mode: mode_t?) throws {
        let (directory, name) = try parent(of: path, in: root)
        if source.status.kind == .directory {
            if try directory.status(name) == nil { try directory.makeDirectory(name, mode: source.status.permissions) }
            try copyContents(of: source.openDirectory(), into: directory.openDirectory(beneath: name))
        } else {
            try clear(name, in: directory)
            let output = try directory.createFile(name, mode: 0o600)
            try source.openFile().readChunks { try output.writeAll($0) }
            try output.setMode(mode ?? source.status.permissions)
        }
    }

    private static func copyContents(of source: Directory, into target: Directory) throws {
        for name in try source.entryNames().sorted(by: { $0.string < $1.string }) {
            try copyEntry(name, from: source, as: name, into: target, mode: nil)
        }
    }

    private static func copyEntry(_ name: FilePath, from source: Directory, as target: FilePath, into directory: Directory, mode: mode_t?) throws {
        guard let status = try source.status(name) else { return }
        switch status.kind {
        case .directory:
            if try directory.status(target)?.kind != .directory {
                try clear(target, in: directory)
                try directory.makeDirectory(target, mode: status.permissions)
            }
            try copyContents(of: source.openDirectory(beneath: name), into: directory.openDirectory(beneath: target))
        case .regular:
            try clear(target, in: directory)
            let output = try directory.createFile(target, mode: 0o600)
            // O_NONBLOCK: should the entry become a FIFO meanwhile, the open does not hang.
            try source.openFile(name, O_RDONLY | O_NONBLOCK).readChunks { try output.writeAll($0) }
            try output.setMode(mode ?? status.permissions)
        case .symlink:
            try clear(target, in: directory)
            try source.readLink(name).withPlatformString { try directory.makeSymlink(target, target: $0) }
        default:
            throw RecipeError("\(source.child(name)) is a \(status.kind.rawValue); copy takes files, directories and symlinks")
        }
    }

    // MARK: Digests of what is copied

    static func digestFile(_ file: Descriptor, into hasher: SHA256) throws {
        try file.readChunks { hasher.update($0) }
    }

    static func digest(_ directory: Directory, prefix: String, into hasher: SHA256) throws {
        for name in try directory.entryNames().sorted(by: { $0.string < $1.string }) {
            guard let status = try directory.status(name) else { continue }
            let path = prefix + "/" + name.string
            hasher.update("\n\(status.kind.rawValue) \(String(status.permissions, radix: 8)) \(path)\n")
            switch status.kind {
            case .directory: try digest(directory.openDirectory(beneath: name), prefix: path, into: hasher)
            case .regular: try digestFile(directory.openFile(name, O_RDONLY | O_NONBLOCK), into: hasher)
            case .symlink: hasher.update(try directory.readLink(name).string)
            default: break
            }
        }
    }
}
