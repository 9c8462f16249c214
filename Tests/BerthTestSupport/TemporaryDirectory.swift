import BerthSystem
import Glibc
import SystemPackage

/// A fresh directory under /tmp (or `base`), removed with everything in it when the object goes.
/// The trees a store keeps mounted at STORE/NAME below it are unmounted first; other mounts
/// made below it must be undone by the test before then, and removal refuses to cross one.
public final class TemporaryDirectory {
    public let path: FilePath

    public init(_ label: String = "berth-test", base: String = "/tmp") throws {
        var template = Array("\(base)/\(label).XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw SystemError.last("mkdtemp") }
        path = FilePath(platformString: made)
    }

    public func appending(_ name: String) -> FilePath { path.appending(name) }
    public var string: String { path.string }

    deinit { remove() }

    /// Removes the directory and everything in it (never crossing a mount point).
    public func remove() {
        for tree in keptTrees(under: string).reversed() + sharedStoreRoots(under: string) { _ = umount2(tree, 0) }
        guard let parent = try? Directory(opening: path.removingLastComponent()),
              let name = path.lastComponent else { return }
        try? parent.removeTree(FilePath(root: nil, [name]))
    }
}

/// Directories that live as long as the test process (shared fixtures held in statics, which
/// Swift never deinitializes) and are removed when it exits.
nonisolated(unsafe) private var atExit: [TemporaryDirectory] = []

extension TemporaryDirectory {
    /// A temporary directory removed when the process exits, for fixtures shared by a suite.
    public static func forProcess(_ label: String) throws -> TemporaryDirectory {
        let dir = try TemporaryDirectory(label)
        // Statics keep their own reference, so the directories are removed explicitly.
        if atExit.isEmpty { atexit { atExit.forEach { $0.remove() } } }
        atExit.append(dir)
        return dir
    }
}

/// Writes `contents` to `path`, replacing it.
public func writeFile(_ path: FilePath, _ contents: [UInt8], mode: mode_t = 0o644) throws {
    let fd = try Descriptor.open(path, O_WRONLY | O_CREAT | O_TRUNC, mode: mode)
    try contents.withUnsafeBytes { try fd.writeAll($0) }
}

public func writeFile(_ path: FilePath, _ text: String, mode: mode_t = 0o644) throws {
    try writeFile(path, Array(text.utf8), mode: mode)
}

/// The whole contents of `path`.
public func readFile(_ path: FilePath) throws -> [UInt8] {
    try Descriptor.open(path, O_RDONLY).readAll()
}
