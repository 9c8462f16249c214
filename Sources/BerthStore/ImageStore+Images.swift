import BerthArchive
import BerthSystem
import Glibc
import SystemPackage

extension ImageStore {
    // MARK: Finding images

    public func imageExists(_ name: ImageName) throws -> Bool {
        try lookup(name) != nil
    }

    func requireImage(_ name: ImageName) throws {
        guard try imageExists(name) else { throw noImage(name) }
    }

    /// Takes the image's lock without waiting: the BSD lock on its directory (the tree of a
    /// directory image, the record's of a layered one), held by whatever uses the image (shared
    /// by readers, exclusive by writers). nil when it is busy.
    func lockImage(_ name: ImageName, _ kind: Descriptor.LockKind) throws -> Descriptor? {
        let entry = FilePath(name.rawValue)
        let parent = try rootDirectory.status(entry)?.kind == .directory ? rootDirectory : imagesDirectory
        let fd = try parent.openFile(entry, O_RDONLY | O_DIRECTORY)
        guard try fd.lock(kind, wait: false) else { return nil }
        // The name may have moved on between the open and the lock (a rename, a conversion).
        let (held, now) = (try fd.status(), try parent.status(entry))
        guard let now, now.device == held.device, now.inode == held.inode else {
            throw StoreError("image '\(name)' changed while berth opened it; try again")
        }
        return fd
    }

    func inUse(_ name: ImageName) -> StoreError {
        StoreError("image '\(name)' is in use by a running container; stop it first")
    }

    // MARK: Listing

    /// Every image in the store, by name. Directories other tools put there count too. An image
    /// that cannot be read (a damaged record, a tree berth cannot walk) is left out with a
    /// warning that names it, never silently, and never stops the others being listed.
    public func images() throws -> [ImageInfo] {
        var result: [ImageInfo] = []
        for entry in try rootDirectory.entryNames() where !entry.string.hasPrefix(".") {
            guard try rootDirectory.status(entry)?.kind == .directory else { continue }
            do {
                result.append(try directoryInfo(entry))
            } catch {
                warn("cannot read image '\(entry.printable)' in \(root), so it is not listed: \(error)")
            }
        }
        let scan = try scanRecords()
        for (_, problem) in scan.damaged { warn("\(problem); it is not listed") }
        for (name, stack) in scan.stacks where try rootDirectory.status(FilePath(name.rawValue)) == nil {
            do {
                result.append(try layeredInfo(name, stack, among: scan.stacks))
            } catch {
                warn("cannot read image '\(name)', so it is not listed: \(error)")
            }
        }
        return result.sorted { $0.name < $1.name }
    }

    public func image(_ name: ImageName) throws -> ImageInfo {
        switch try lookup(name) {
        case .directory?: return try directoryInfo(FilePath(name.rawValue))
        case .layered(let stack)?: return try layeredInfo(name, stack, among: stacks())
        case nil: throw noImage(name)
        }
    }

    private func directoryInfo(_ entry: FilePath) throws -> ImageInfo {
        let tree = try rootDirectory.openDirectory(beneath: entry)
        let st = try tree.descriptor.status()
        let readOnly = (tree.descriptor.inodeFlags() ?? 0) & immutableFlag != 0
        return ImageInfo(
            name: Printable.text(entry), kind: .directory, readOnly: readOnly,
            usage: try rootDirectory.diskUsage(entry),
            created: rootDirectory.birthTime(entry) ?? Int64(st.modification.tv_sec),
            parent: nil, path: root.string + "/" + Printable.text(entry),
            operatingSystem: Self.prettyName(of: tree), layers: [], dependants: [])
    }

    /// A layered image: its usage is its own writable layer's; its dependants are the images
    /// cloned or snapshotted from it, and from those, and so on.
    private func layeredInfo(_ name: ImageName, _ stack: LayerStack, among all: [(name: ImageName, stack: LayerStack)]) throws -> ImageInfo {
        let byID = Dictionary(all.map { ($0.stack.id, $0.name) }, uniquingKeysWith: { a, _ in a })
        var dependants: [String] = []
        for other in all where other.stack.id != stack.id {
            var parent = other.stack.parent
            var seen = Set<String>()
            while let id = parent, seen.insert(id).inserted {
                if id == stack.id {
                    dependants.append(other.name.rawValue)
                    break
                }
                parent = byID[id].flatMap { name in all.first { $0.name == name }?.stack.parent }
            }
        }
        var os: String?
        for id in stack.allLayers.reversed() {
            if let layer = try? layersDirectory.openDirectory(beneath: FilePath(id)), let name = Self.prettyName(of: layer) {
                os = name
                break
            }
        }
        return ImageInfo(
            name: name.rawValue, kind: .layered, readOnly: stack.readOnly,
            usage: try layersDirectory.diskUsage(FilePath(stack.upper)),
            created: stack.created, parent: stack.parent.map { byID[$0]?.rawValue ?? "\($0) (removed)" },
            path: (try? mountedAt(name))??.string ?? mountPoint(of: name).string,
            operatingSystem: os, layers: stack.layers, dependants: dependants.sorted(),
            description: stack.description)
    }

    /// PRETTY_NAME from etc/os-release or usr/lib/os-release, read without following symlinks.
    static func prettyName(of tree: Directory) -> String? {
        for dir in ["etc", "usr/lib"] {
            guard let parent = try? tree.openDirectory(beneath: FilePath(dir), pathOnly: true),
                  let bytes = try? parent.openFile("os-release", O_RDONLY).readAll(limit: 16384) else { continue }
            for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") where line.hasPrefix("PRETTY_NAME=") {
                var value = line.dropFirst("PRETTY_NAME=".count)
                if value.count >= 2, let q = value.first, q == "\"" || q == "'", value.last == q {
                    value = value.dropFirst().dropLast()
                }
                return String(value)
            }
        }
        return nil
    }

    // MARK: Changing images

    /// Renames an image, as `machinectl rename` does (read-only images too). Clones of a layered
    /// image name it by its id, so they keep working.
    public func rename(_ old: ImageName, to new: ImageName) throws {
        try withStoreLock {
            guard let found = try lookup(old) else { throw noImage(old) }
            try refuseExisting(new)
            guard let lock = try lockImage(old, .exclusive) else { throw inUse(old) }
            let change = "renamed '\(old)' to '\(new)'"
            guard case .directory = found else {
                try refuseMounted(old)
                try imagesDirectory.rename(FilePath(old.rawValue), to: FilePath(new.rawValue), .noReplace)
                afterCommit("rename-sync", done: change) { try imagesDirectory.sync() }
                return
            }
            let wasReadOnly = try clearReadOnlyFlag(FilePath(old.rawValue))
            do {
                try rootDirectory.rename(FilePath(old.rawValue), to: FilePath(new.rawValue), .noReplace)
            } catch {
                if wasReadOnly { try? lock.setInodeFlags((lock.inodeFlags() ?? 0) | immutableFlag) }
                throw error
            }
            if wasReadOnly {
                do {
                    try lock.setInodeFlags((lock.inodeFlags() ?? 0) | immutableFlag)
                } catch {
                    warn("\(change), but could not mark it read-only again (\(error)); 'berth read-only \(new)' does")
                }
            }
            afterCommit("rename-sync", done: change) { try rootDirectory.sync() }
        }
    }

    /// Removes images, as `machinectl remove` does (read-only ones too). Each is first moved into
    /// staging in one rename, so a crash leaves it either whole in place or gone. A layered image
    /// takes its own writable layer with it; frozen layers other images share stay for them,
    /// and `gc` frees those nothing needs any more.
    /// A damaged record goes too (its layers stay for `gc`, which frees them once no damaged
    /// record is left that might name them).
    public func remove(_ names: [ImageName]) throws {
        for name in names where try !hasDamagedRecord(name) { try requireImage(name) }
        for name in names {
            let staging = try makeStaging("remove-\(name)")
            defer { staging.discard() }
            try withStoreLock {
                let change = "removed '\(name)'"
                let found: StoredImage?
                do {
                    found = try lookup(name)
                } catch {
                    guard try hasDamagedRecord(name) else { throw error }
                    try removeDamagedRecord(name, into: staging, change: change)
                    return
                }
                guard let found else { throw noImage(name) }
                guard try lockImage(name, .exclusive) != nil else { throw inUse(name) }
                switch found {
                case .directory:
                    try clearReadOnlyFlag(FilePath(name.rawValue))
                    try rootDirectory.rename(FilePath(name.rawValue), to: staging.name.appending("tree"), in: stagingDirectory, .noReplace)
                    afterCommit("remove-sync", done: change) { try rootDirectory.sync() }
                case .layered(let stack):
                    try refuseMounted(name)
                    try imagesDirectory.rename(FilePath(name.rawValue), to: "record", in: staging.directory, .noReplace)
                    afterCommit("remove-sync", done: change) { try imagesDirectory.sync() }
                    CrashPoint.reach("remove")
                    afterCommit("remove-cleanup", done: change) { try discardLayer(stack.upper, into: staging) }
                }
            }
        }
    }

    /// Whether `name` has a record that cannot be read, with no directory image shadowing it.
    private func hasDamagedRecord(_ name: ImageName) throws -> Bool {
        guard try rootDirectory.status(FilePath(name.rawValue))?.kind != .directory,
              try imagesDirectory.status(FilePath(name.rawValue)) != nil else { return false }
        return (try? readStack(name)) == nil
    }

    private func removeDamagedRecord(_ name: ImageName, into staging: Staging, change: String) throws {
        let entry = FilePath(name.rawValue)
        if try imagesDirectory.status(entry)?.kind == .directory {
            guard try lockImage(name, .exclusive) != nil else { throw inUse(name) }
        }
        try imagesDirectory.rename(entry, to: "record", in: staging.directory, .noReplace)
        afterCommit("remove-sync", done: change) { try imagesDirectory.sync() }
    }

    /// Marks an image read-only or writable. For a directory image, like machinectl on a file
    /// system without snapshots, this sets the immutable flag on its root directory, which also
    /// stops other tools from adding or removing entries there; a layered image's record says it.
    public func setReadOnly(_ name: ImageName, _ readOnly: Bool) throws {
        try withStoreLock {
            switch try lookup(name) {
            case .directory?:
                let fd = try rootDirectory.openFile(FilePath(name.rawValue), O_RDONLY | O_DIRECTORY)
                guard let flags = fd.inodeFlags() else {
                    throw StoreError("the file system of \(root) cannot mark images read-only (no inode flags)")
                }
                let wanted = readOnly ? flags | immutableFlag : flags & ~immutableFlag
                if wanted != flags { try fd.setInodeFlags(wanted) }
            case .layered(var stack)?:
                guard stack.readOnly != readOnly else { return }
                stack.readOnly = readOnly
                try writeStack(stack, in: recordDirectory(name), committing: "marked '\(name)' \(readOnly ? "read-only" : "writable")")
            case nil:
                throw noImage(name)
            }
        }
    }

    /// Clears the immutable flag of `ROOT/entry`; returns whether it was set.
    @discardableResult
    func clearReadOnlyFlag(_ entry: FilePath) throws -> Bool {
        let fd = try rootDirectory.openFile(entry, O_RDONLY | O_DIRECTORY)
        guard let flags = fd.inodeFlags(), flags & immutableFlag != 0 else { return false }
        try fd.setInodeFlags(flags & ~immutableFlag)
        return true
    }

    // MARK: Export

    /// Writes the image's tree as a tarball to `file` (`-` for standard output), compressed as
    /// its name says. The file appears only when complete, and replaces one already there only
    /// with `force`.
    public func export(_ name: ImageName, to file: String, force: Bool = false,
                       onProgress: ((ExportProgress) -> Void)? = nil) throws {
        try requireImage(name)
        let compression: ArchiveCompression
        if file == "-" {
            compression = .none
        } else if let chosen = ArchiveCompression.forFileName(file) {
            compression = chosen
        } else {
            throw StoreError("cannot tell the compression from '\(file)'; name it .tar, .tar.gz, .tar.xz, .tar.zst or .tar.bz2")
        }
        try withMergedTree(name) {
            try write(tree: $0.string, of: name, to: file, compression: compression, force: force, onProgress: onProgress)
        }
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
                        .rename(FilePath(partial.lastComponent!.string), to: FilePath(target.lastComponent!.string),
                                force ? .replace : .noReplace)
                } catch let error as SystemError where error.errno == .fileExists {
                    throw StoreError("cannot export '\(name)': \(file) was created meanwhile; pass --force to replace it")
                }
            } catch {
                _ = partial.withPlatformString { Glibc.unlink($0) }
                throw error
            }
        } catch let error as ArchiveError {
            throw StoreError("cannot export '\(name)' to \(file): \(error.message)")
        } catch let error as SystemError {
            throw StoreError("cannot export '\(name)' to \(file): \(error)")
        }
    }
}

let immutableFlag: UInt32 = 0x10
