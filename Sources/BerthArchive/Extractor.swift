import BerthSystem
import Glibc
import SystemPackage

/// Writes the members of an archive into one directory, and nowhere else.
///
/// Safety does not rest on checking path strings: every member is created by an `*at` call
/// relative to a directory opened beneath the root with openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS),
/// so no symlink (in the archive or planted meanwhile) and no `..` can lead outside. Members
/// whose path contains `..` are refused outright, as GNU tar refuses them; absolute paths land
/// inside the root, as with GNU tar. Hard links resolve inside the root only. Overlayfs's own
/// attributes (`trusted.overlay.*`, `user.overlay.*`) are never applied, nor are inode flags.
public final class Extractor {
    let root: Directory
    private let limits: ExtractionLimits
    /// Called now and then with where the extraction stands.
    public var onProgress: ((ExtractionProgress) -> Void)?

    public private(set) var entryCount = 0
    /// File data written, by the sizes the archive claims.
    public private(set) var bytesWritten: Int64 = 0
    /// What counts against `limits.maxBytes`: file data and each entry's cost.
    private var charged: Int64 = 0
    /// Attributes the archive carried that were not applied, by name.
    public internal(set) var skippedAttributes = Set<String>()

    private var parentCache: (path: FilePath, directory: Directory)?
    /// The metadata of each directory the archive holds, by inode (a path would cost memory in
    /// proportion to the depth), applied by `finishDirectories` at the end.
    var pendingDirectories: [ino_t: DirectoryMetadata] = [:]
    var rootInode: ino_t = 0
    private var lastProgress = 0.0
    private let started = monotonicSeconds()

    public init(into root: Directory, limits: ExtractionLimits = .standard) {
        self.root = root
        self.limits = limits
    }

    /// Extracts every member `reader` yields, then sets the directories' own metadata.
    public func extract(from reader: MemberSource, input: DecompressedStream? = nil) throws {
        do {
            rootInode = try root.descriptor.status().inode
        } catch let error as SystemError {
            throw ArchiveError("cannot extract into \(root.displayPath): \(error)")
        }
        while let entry = try reader.nextEntry() {
            guard entryCount < limits.maxEntries else {
                throw ArchiveError.member(entry.path, "it is past the import's limit of \(limits.maxEntries) entries; --max-entries raises it")
            }
            try extract(entry, from: reader)
            entryCount += 1
            if entryCount & 63 == 0 { report(input) }
        }
        try finishDirectories()
        report(input, force: true, finished: true)
    }

    private func report(_ input: DecompressedStream?, force: Bool = false, finished: Bool = false) {
        guard let onProgress else { return }
        let now = monotonicSeconds()
        guard force || now - lastProgress >= 0.1 else { return }
        lastProgress = now
        onProgress(ExtractionProgress(
            entries: entryCount, bytesWritten: bytesWritten,
            inputBytesRead: input?.inputBytesRead ?? bytesWritten, inputSize: input?.inputSize,
            seconds: now - started, finished: finished))
    }

    // MARK: Members

    private func extract(_ entry: ArchiveEntry, from reader: MemberSource) throws {
        let display = entry.path
        let path = try memberPath(entry.filePath, display: display)
        let kind = entry.kind
        try charge(kind == .directory ? ExtractionLimits.directoryCost : ExtractionLimits.entryCost, display: display)
        if path.isEmpty {
            // The root itself ("." or "/"): only its metadata applies.
            guard kind == .directory else { throw ArchiveError.member(display, "only a directory can stand at the root") }
            pendingDirectories[rootInode] = DirectoryMetadata(entry)
            return
        }
        let parent = try parentDirectory(of: path, display: display)
        guard let last = path.lastComponent else { throw ArchiveError.member(display, "it has no name to write") }
        let name = FilePath(root: nil, [last])
        do {
            switch kind {
            case .directory:
                if let existing = try parent.status(name) {
                    if existing.kind != .directory {
                        try parent.remove(name, isDirectory: false)
                        try parent.makeDirectory(name, mode: 0o700)
                    }
                } else {
                    try parent.makeDirectory(name, mode: 0o700)
                }
                guard let made = try parent.status(name), made.kind == .directory else {
                    throw ArchiveError.member(display, "the directory vanished as it was made; is something else writing to the store?")
                }
                pendingDirectories[made.inode] = DirectoryMetadata(entry)
            case .regular:
                try writeFile(entry, name: name, in: parent, path: path, display: display, from: reader)
            case .symlink:
                try entry.withSymlinkTarget { target in
                    guard let target else { throw ArchiveError.member(display, "symlink without a target") }
                    try replacing(name, in: parent, path: path, display: display) {
                        try parent.makeSymlink(name, target: target)
                    }
                }
                try parent.setOwner(name, uid: entry.uid, gid: entry.gid)
                try applyAttributes(entry, to: .entry(parent, name), display: display)
                try parent.setTimes(name, access: entry.access, modification: entry.modification)
            case .hardLink:
                try makeHardLink(entry, name: name, in: parent, path: path, display: display)
            case .characterDevice, .blockDevice, .fifo:
                let type: mode_t = kind == .fifo ? Glibc.S_IFIFO : kind == .blockDevice ? Glibc.S_IFBLK : Glibc.S_IFCHR
                try replacing(name, in: parent, path: path, display: display) {
                    try parent.makeNode(name, mode: type | 0o600, device: kind == .fifo ? 0 : entry.device)
                }
                try parent.setOwner(name, uid: entry.uid, gid: entry.gid)
                try parent.setMode(name, entry.permissions)
                try applyAttributes(entry, to: .entry(parent, name), display: display)
                try parent.setTimes(name, access: entry.access, modification: entry.modification)
            case .socket, .unknown:
                // Sockets are made by the programs that listen on them; tar skips them too.
                return
            }
        } catch let error as SystemError {
            throw ArchiveError.member(display, error)
        }
    }

    private func writeFile(_ entry: ArchiveEntry, name: FilePath, in parent: Directory, path: FilePath,
                           display: String, from reader: MemberSource) throws {
        let size = entry.size
        guard size >= 0, size <= limits.maxBytes - charged else {
            throw ArchiveError.member(display, "its size (\(size) bytes) takes the import past its limit of \(limits.maxBytes) bytes; nothing this large belongs in a root file system")
        }
        var file: Descriptor?
        try replacing(name, in: parent, path: path, display: display) {
            file = try parent.createFile(name, mode: 0o600)
        }
        guard let file else { return }
        var end: Int64 = 0
        while let (bytes, offset) = try reader.readBlock() {
            guard offset >= 0, offset + Int64(bytes.count) <= size else {
                throw ArchiveError.member(display, "data runs past the size the archive claims for it")
            }
            try file.writeAll(bytes, at: offset)
            end = offset + Int64(bytes.count)
        }
        if end < size { try file.truncate(to: size) }  // a sparse file that ends in a hole
        bytesWritten += size
        charged += size
        // Owner before mode (chown clears setuid/setgid) and before attributes (it clears
        // security.capability); times last, since setting attributes changes ctime only.
        try file.setOwner(uid: entry.uid, gid: entry.gid)
        try file.setMode(entry.permissions)
        try applyAttributes(entry, to: .descriptor(file), display: display)
        try file.setTimes(access: entry.access, modification: entry.modification)
    }

    private func makeHardLink(_ entry: ArchiveEntry, name: FilePath, in parent: Directory, path: FilePath, display: String) throws {
        guard let rawTarget = entry.hardLinkPath else { return }
        let target = try memberPath(rawTarget, display: display)
        guard let targetName = target.lastComponent else {
            throw ArchiveError.member(display, "a hard link to the root directory")
        }
        let parentPath = target.removingLastComponent()
        let targetParent: Directory
        do {
            targetParent = try parentPath.isEmpty ? root : walk(to: parentPath, creating: false)
        } catch let blocked as PathBlocked {
            throw ArchiveError.member(display, "its hard link target '\(rawTarget.printable)' cannot be reached: \(blocked.reason)")
        }
        let targetLeaf = FilePath(root: nil, [targetName])
        guard let targetStatus = try targetParent.status(targetLeaf) else {
            throw ArchiveError.member(display, "its hard link target '\(rawTarget.printable)' is not in the archive before it")
        }
        guard targetStatus.kind != .directory else {
            throw ArchiveError.member(display, "its hard link target '\(rawTarget.printable)' is a directory")
        }
        if target == path { return }
        try replacing(name, in: parent, path: path, display: display) {
            try parent.makeHardLink(name, to: targetLeaf, in: targetParent)
        }
    }

    /// Counts `cost` against the limit, and stops the extraction when it goes past.
    private func charge(_ cost: Int64, display: String) throws {
        guard cost <= limits.maxBytes - charged else {
            throw ArchiveError.member(display, "it takes the import past its limit of \(limits.maxBytes) bytes (file data, and \(ExtractionLimits.directoryCost) bytes a directory, \(ExtractionLimits.entryCost) any other entry); --max-size raises it")
        }
        charged += cost
    }

    // MARK: Paths

    /// The member's path relative to the root: leading slashes and `.` dropped, `..` refused.
    /// Done on the bytes, once: an archive of a deep tree has paths of tens of kilobytes.
    private func memberPath(_ raw: FilePath, display: String) throws -> FilePath {
        let slash = UInt8(ascii: "/"), dot = UInt8(ascii: ".")
        return try raw.withPlatformString { p in
            let bytes = UnsafeRawBufferPointer(start: p, count: strlen(p))
            var out: [UInt8] = []
            out.reserveCapacity(bytes.count + 1)
            var start = 0
            while start < bytes.count {
                var end = start
                while end < bytes.count && bytes[end] != slash { end += 1 }
                let length = end - start
                if length == 2 && bytes[start] == dot && bytes[start + 1] == dot {
                    throw ArchiveError.member(display, "its path contains '..'; refusing to write outside the image")
                }
                if length > 0 && !(length == 1 && bytes[start] == dot) {
                    if !out.isEmpty { out.append(slash) }
                    out.append(contentsOf: bytes[start..<end])
                }
                start = end + 1
            }
            out.append(0)
            return try out.withUnsafeBufferPointer { buffer in
                guard let base = buffer.baseAddress else { throw ArchiveError.member(display, "its path is empty") }
                return FilePath(platformString: UnsafeRawPointer(base).assumingMemoryBound(to: CChar.self))
            }
        }
    }

    /// The rest of `path` below `prefix` when `path` lies below it (both as `memberPath` makes them).
    private static func path(_ path: FilePath, below prefix: FilePath) -> FilePath? {
        path.withPlatformString { p in
            prefix.withPlatformString { q in
                let (n, m) = (strlen(p), strlen(q))
                guard m > 0, n > m + 1, p[m] == CChar(UInt8(ascii: "/")), memcmp(p, q, m) == 0 else { return nil }
                return FilePath(platformString: p + m + 1)
            }
        }
    }

    /// The directory that holds `path`, created (with mode 0755, as tar does) where the archive
    /// did not list it before its contents.
    private func parentDirectory(of path: FilePath, display: String) throws -> Directory {
        let parentPath = path.removingLastComponent()
        if parentPath.isEmpty { return root }
        if let cached = parentCache, cached.path == parentPath { return cached.directory }
        // One openat2 for the whole path in the common case; a walk to make what is missing or
        // to say what stands in the way. Below the last parent (an archive of a deep tree, whose
        // paths are longer than openat2 takes), the walk starts there, one step down.
        let directory: Directory
        do {
            if let cached = parentCache, let rest = Self.path(parentPath, below: cached.path) {
                directory = try walk(to: rest, creating: true, from: cached.directory, at: cached.path)
            } else {
                directory = try (try? root.openDirectory(beneath: parentPath, pathOnly: true))
                    ?? walk(to: parentPath, creating: true)
            }
        } catch let blocked as PathBlocked {
            throw ArchiveError.member(display, blocked.reason)
        } catch let error as SystemError {
            throw ArchiveError.member(display, error)
        }
        parentCache = (parentPath, directory)
        return directory
    }

    private struct PathBlocked: Error {
        var reason: String
    }

    /// Opens `path` beneath the root one component at a time, making missing directories when
    /// `creating`, and names the component that is a symlink or not a directory.
    private func walk(to path: FilePath, creating: Bool, from start: Directory? = nil, at startPath: FilePath = FilePath()) throws -> Directory {
        var current = start ?? root
        var walked = startPath
        for component in path.components {
            let name = FilePath(root: nil, [component])
            walked.append(component)
            guard let existing = try current.status(name) else {
                guard creating else { throw PathBlocked(reason: "'\(walked.printable)' does not exist in the image") }
                try current.makeDirectory(name, mode: 0o755)
                current = try current.openDirectory(beneath: name, pathOnly: true)
                continue
            }
            switch existing.kind {
            case .directory:
                current = try current.openDirectory(beneath: name, pathOnly: true)
            case .symlink:
                throw PathBlocked(reason: "'\(walked.printable)' in its path is a symlink; refusing to write through it")
            default:
                throw PathBlocked(reason: "'\(walked.printable)' in its path is not a directory")
            }
        }
        return current
    }

    /// Runs `create`; if something already stands at `name`, removes it (as tar does, an empty
    /// directory included) and runs `create` again. A non-empty directory is never replaced.
    private func replacing(_ name: FilePath, in parent: Directory, path: FilePath, display: String, _ create: () throws -> Void) throws {
        do {
            try create()
            return
        } catch let error as SystemError where error.errno == .fileExists {
            guard let existing = try parent.status(name) else { throw error }
            if existing.kind == .directory {
                do {
                    try parent.remove(name, isDirectory: true)
                } catch let error as SystemError where error.errno == .directoryNotEmpty || error.errno == .fileExists {
                    throw ArchiveError.member(display, "it would replace the non-empty directory '\(path.printable)'")
                }
                pendingDirectories[existing.inode] = nil
                parentCache = nil
            } else {
                try parent.remove(name, isDirectory: false)
            }
        }
        try create()
    }
}
