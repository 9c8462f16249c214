import BerthArchive
import BerthSystem
import Glibc
import SystemPackage

/// Host files into an image's tree, for copy, write and hostname steps. Paths in the image are
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

    /// Copies the host file or directory `source` to `path` in the image; `mode` overrides the
    /// source's for a file.
    static func copy(_ source: FilePath, to path: FilePath, in root: Directory, mode: mode_t?) throws {
        guard let status = try FileStatus.of(source) else { throw RecipeError("\(source) does not exist on the host") }
        let (directory, name) = try parent(of: path, in: root)
        if status.kind == .directory {
            if try directory.status(name) == nil { try directory.makeDirectory(name, mode: status.permissions) }
            try copyContents(of: Directory(opening: source), into: directory.openDirectory(beneath: name))
        } else {
            try copyEntry(FilePath(source.lastComponent!.string), from: Directory(opening: source.removingLastComponent()),
                          as: name, into: directory, mode: mode)
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
            try source.openFile(name, O_RDONLY).readChunks { try output.writeAll($0) }
            try output.setMode(mode ?? status.permissions)
        case .symlink:
            try clear(target, in: directory)
            try source.readLink(name).withPlatformString { try directory.makeSymlink(target, target: $0) }
        default:
            throw RecipeError("\(source.child(name)) is a \(status.kind.rawValue); copy takes files, directories and symlinks")
        }
    }

    // MARK: Digests of what is copied

    static func digestFile(_ path: FilePath, into hasher: SHA256) throws {
        try Descriptor.open(path, O_RDONLY).readChunks { hasher.update($0) }
    }

    static func digest(_ directory: Directory, prefix: String, into hasher: SHA256) throws {
        for name in try directory.entryNames().sorted(by: { $0.string < $1.string }) {
            guard let status = try directory.status(name) else { continue }
            let path = prefix + "/" + name.string
            hasher.update("\n\(status.kind.rawValue) \(String(status.permissions, radix: 8)) \(path)\n")
            switch status.kind {
            case .directory: try digest(directory.openDirectory(beneath: name), prefix: path, into: hasher)
            case .regular: try digestFile(directory.procPath(name), into: hasher)
            case .symlink: hasher.update(try directory.readLink(name).string)
            default: break
            }
        }
    }
}
