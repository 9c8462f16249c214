import CBerth
import Glibc
import SystemPackage

/// An open directory, and the `*at` calls relative to it.
///
/// Every operation names its target relative to this directory and never follows a symlink
/// in the last component; `openDirectory(beneath:)` never follows one anywhere, and never
/// leaves this directory. Code that must not escape a tree (extraction, removal) holds the
/// tree's root as a `Directory` and works only through these calls. Names are `FilePath`s,
/// so bytes that are not UTF-8 pass through unchanged.
public final class Directory {
    public let descriptor: Descriptor
    /// The path this directory was opened by, for messages only; never used to reach it.
    public let displayPath: String

    public var rawValue: Int32 { descriptor.rawValue }

    public init(_ descriptor: Descriptor, displayPath: String) {
        self.descriptor = descriptor
        self.displayPath = displayPath
    }

    /// Opens the directory at `path`, following symlinks as the caller's path lookup does.
    public convenience init(opening path: FilePath) throws {
        let d = try Descriptor.open(path, O_RDONLY | O_DIRECTORY)
        self.init(d, displayPath: path.string)
    }

    /// `name` under this directory, for messages.
    public func child(_ name: FilePath) -> String {
        displayPath.hasSuffix("/") ? displayPath + name.printable : displayPath + "/" + name.printable
    }

    /// `/proc/self/fd/N/NAME`: the kernel resolves the magic link to this very directory and looks
    /// `name` up in it, without a path from the real root.
    public func procPath(_ name: FilePath) -> FilePath { descriptor.procPath.appending(name.components) }

    /// Runs a call that returns -1 on failure with `name` as a C string, retrying EINTR.
    @inline(__always)
    @discardableResult
    private func call<T: FixedWidthInteger>(
        _ what: String, _ name: FilePath, _ body: (UnsafePointer<CChar>) -> T
    ) throws -> T {
        try name.withPlatformString { p in try retryingInterrupts(what, path: child(name)) { body(p) } }
    }

    // MARK: Lookup

    /// Opens the directory at relative `path` beneath this one: no symlink, no `..` out of it
    /// and no mount point is crossed on the way (openat2 with RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS
    /// |RESOLVE_NO_XDEV). The kernel enforces it, so a tree that changes meanwhile cannot redirect it.
    /// A `pathOnly` directory (O_PATH) serves as the base of `*at` calls but cannot be read.
    /// `crossingMounts` lets the walk enter file systems mounted below (the container's own
    /// /proc and /dev, while it is set up).
    public func openDirectory(beneath path: FilePath, pathOnly: Bool = false, crossingMounts: Bool = false) throws -> Directory {
        let flags = UInt64(O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW | (pathOnly ? CBERTH_O_PATH : O_RDONLY))
        let resolve = UInt64(CBERTH_RESOLVE_BENEATH | CBERTH_RESOLVE_NO_SYMLINKS | CBERTH_RESOLVE_NO_MAGICLINKS
            | (crossingMounts ? 0 : CBERTH_RESOLVE_NO_XDEV))
        let fd = try call("openat2", path) { cberth_openat2(rawValue, $0, flags, 0, resolve) }
        return Directory(Descriptor(owning: fd), displayPath: child(path))
    }

    /// Opens the directory at `path` as if this directory were the root: symlinks on the way are
    /// followed but cannot lead out of it (openat2 with RESOLVE_IN_ROOT), as a path inside an
    /// image resolves for a process running in it. With `creating`, missing directories on the
    /// way are made (mode 0755).
    public func openDirectory(inRoot path: FilePath, creating: Bool) throws -> Directory {
        let flags = UInt64(O_DIRECTORY | O_CLOEXEC | O_RDONLY)
        let resolve = UInt64(CBERTH_RESOLVE_IN_ROOT | CBERTH_RESOLVE_NO_MAGICLINKS)
        let components = Array(path.components)
        var current = self
        for index in components.indices {
            let name = FilePath(root: nil, [components[index]])
            if creating, try current.status(name) == nil {
                try current.makeDirectory(name, mode: 0o755)
            }
            // Each step resolves from this root, so a symlink met on the way stays inside it.
            let sofar = FilePath(root: nil, components[...index])
            let fd = try call("openat2", sofar) { cberth_openat2(rawValue, $0, flags, 0, resolve) }
            current = Directory(Descriptor(owning: fd), displayPath: child(sofar))
        }
        return current
    }

    /// Opens the file `name` in this directory without following a final symlink.
    public func openFile(_ name: FilePath, _ flags: Int32, mode: mode_t = 0) throws -> Descriptor {
        let fd = try call("openat", name) { Glibc.openat(rawValue, $0, flags | O_CLOEXEC | O_NOFOLLOW, mode) }
        return Descriptor(owning: fd)
    }

    /// The status of `name` without following a final symlink; nil when it does not exist.
    public func status(_ name: FilePath) throws -> FileStatus? {
        var st = stat()
        let rc = name.withPlatformString { Glibc.fstatat(rawValue, $0, &st, AT_SYMLINK_NOFOLLOW) }
        if rc == 0 { return FileStatus(st) }
        if Glibc.errno == ENOENT { return nil }
        throw SystemError.last("fstatat", path: child(name))
    }

    /// The names in this directory, without `.` and `..`.
    public func entryNames() throws -> [FilePath] { try names { _, _ in true } }

    /// The names of the directories in this one, by the type readdir gives (asked of fstatat
    /// where the file system gives none).
    public func subdirectoryNames() throws -> [FilePath] {
        try names { type, name in
            type == UInt8(DT_DIR) || (type == UInt8(DT_UNKNOWN) && (try? status(name))??.kind == .directory)
        }
    }

    private func names(where wanted: (_ type: UInt8, _ name: FilePath) -> Bool) throws -> [FilePath] {
        let fd = try retryingInterrupts("openat", path: displayPath) {
            Glibc.openat(rawValue, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        }
        guard let dir = Glibc.fdopendir(fd) else {
            let error = SystemError.last("fdopendir", path: displayPath)
            Glibc.close(fd)
            throw error
        }
        defer { Glibc.closedir(dir) }
        var names: [FilePath] = []
        while let entry = Glibc.readdir(dir) {
            // d_name is a fixed array, never empty; a nil base would be an entry without a name.
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                raw.baseAddress.map { FilePath(platformString: $0.assumingMemoryBound(to: CChar.self)) }
            }
            if let name, name != "." && name != "..", wanted(entry.pointee.d_type, name) { names.append(name) }
        }
        return names
    }

    public func readLink(_ name: FilePath) throws -> FilePath {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = try call("readlinkat", name) { Glibc.readlinkat(rawValue, $0, &buffer, buffer.count - 1) }
        buffer[n] = 0
        return FilePath(platformString: buffer)
    }

    // MARK: Creation

    public func makeDirectory(_ name: FilePath, mode: mode_t) throws {
        try call("mkdirat", name) { Glibc.mkdirat(rawValue, $0, mode) }
    }

    /// Creates `name`, which must not exist, and opens it for writing.
    public func createFile(_ name: FilePath, mode: mode_t) throws -> Descriptor {
        try openFile(name, O_WRONLY | O_CREAT | O_EXCL, mode: mode)
    }

    /// Creates the symlink `name` with `target` stored as it is; nothing resolves it here.
    public func makeSymlink(_ name: FilePath, target: UnsafePointer<CChar>) throws {
        try call("symlinkat", name) { Glibc.symlinkat(target, rawValue, $0) }
    }

    /// Creates a device node, FIFO or socket placeholder (mknodat(2)).
    public func makeNode(_ name: FilePath, mode: mode_t, device: dev_t) throws {
        try call("mknodat", name) { Glibc.mknodat(rawValue, $0, mode, device) }
    }

    /// Makes `name` here a hard link to `existing` in `directory`, not following a symlink there.
    public func makeHardLink(_ name: FilePath, to existing: FilePath, in directory: Directory) throws {
        try call("linkat", name) { newName in
            existing.withPlatformString { Glibc.linkat(directory.rawValue, $0, rawValue, newName, 0) }
        }
    }

    // MARK: Metadata of entries that are not opened

    public func setOwner(_ name: FilePath, uid: uid_t, gid: gid_t) throws {
        try call("fchownat", name) { Glibc.fchownat(rawValue, $0, uid, gid, AT_SYMLINK_NOFOLLOW) }
    }

    /// chmod of an entry that is not a symlink (Linux has no fchmodat that refuses one): callers
    /// use it only on entries they just made in a tree nobody else writes to.
    public func setMode(_ name: FilePath, _ mode: mode_t) throws {
        try call("fchmodat", name) { Glibc.fchmodat(rawValue, $0, mode, 0) }
    }

    /// Sets the times of `name` itself, a symlink included; `nil` access time means now.
    public func setTimes(_ name: FilePath, access: timespec?, modification: timespec) throws {
        var times = [access ?? timespec(tv_sec: 0, tv_nsec: Int(CBERTH_UTIME_NOW)), modification]
        try call("utimensat", name) { Glibc.utimensat(rawValue, $0, &times, AT_SYMLINK_NOFOLLOW) }
    }

    // MARK: Removal and renaming

    /// Removes the file or empty directory `name`.
    public func remove(_ name: FilePath, isDirectory: Bool) throws {
        try call(isDirectory ? "rmdir" : "unlink", name) { Glibc.unlinkat(rawValue, $0, isDirectory ? AT_REMOVEDIR : 0) }
    }

    public enum RenameMode { case replace, noReplace, exchange }

    /// Renames `name` here to `newName` in `directory` (renameat2(2)), atomically.
    public func rename(_ name: FilePath, to newName: FilePath, in directory: Directory? = nil, _ mode: RenameMode = .noReplace) throws {
        let flags: UInt32
        switch mode {
        case .replace: flags = 0
        case .noReplace: flags = UInt32(CBERTH_RENAME_NOREPLACE)
        case .exchange: flags = UInt32(CBERTH_RENAME_EXCHANGE)
        }
        let target = directory ?? self
        try call("rename", name) { old in
            newName.withPlatformString { cberth_renameat2(rawValue, old, target.rawValue, $0, flags) }
        }
    }

    /// Birth time of `name` in seconds since the epoch, where the file system records it.
    public func birthTime(_ name: FilePath) -> Int64? {
        let t = name.withPlatformString { cberth_birth_time(rawValue, $0, AT_SYMLINK_NOFOLLOW) }
        return t < 0 ? nil : t
    }

    /// Makes sure the directory entries here are durable (fsync of the directory).
    public func sync() throws {
        let fd = try retryingInterrupts("openat", path: displayPath) {
            Glibc.openat(rawValue, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        }
        try Descriptor(owning: fd).sync()
    }
}
