import BerthArchive
import BerthSystem
import Glibc
import SystemPackage

extension ImageStore {
    // MARK: Finding images

    public func imageExists(_ name: ImageName) throws -> Bool {
        try rootDirectory.status(FilePath(name.rawValue))?.kind == .directory
    }

    func requireImage(_ name: ImageName) throws {
        guard try imageExists(name) else {
            throw StoreError("no image '\(name)' in \(root); 'berth list' shows the images there")
        }
    }

    /// Takes the image's lock without waiting: the BSD lock on its root directory, held by
    /// whatever uses the image (shared by readers, exclusive by writers). nil when it is busy.
    func lockImage(_ name: ImageName, _ kind: Descriptor.LockKind) throws -> Descriptor? {
        let fd = try rootDirectory.openFile(FilePath(name.rawValue), O_RDONLY | O_DIRECTORY)
        return try fd.lock(kind, wait: false) ? fd : nil
    }

    func inUse(_ name: ImageName) -> StoreError {
        StoreError("image '\(name)' is in use by a running container; stop it first")
    }

    // MARK: Listing

    /// Every image in the store, by name. Directories other tools put there count too.
    public func images() throws -> [ImageInfo] {
        var result: [ImageInfo] = []
        for entry in try rootDirectory.entryNames() where !entry.string.hasPrefix(".") {
            guard try rootDirectory.status(entry)?.kind == .directory else { continue }
            result.append(try info(entry))
        }
        return result.sorted { $0.name < $1.name }
    }

    public func image(_ name: ImageName) throws -> ImageInfo {
        try requireImage(name)
        return try info(FilePath(name.rawValue))
    }

    private func info(_ entry: FilePath) throws -> ImageInfo {
        let tree = try rootDirectory.openDirectory(beneath: entry)
        let st = try tree.descriptor.status()
        let readOnly = (tree.descriptor.inodeFlags() ?? 0) & immutableFlag != 0
        return ImageInfo(
            name: entry.string, kind: .directory, readOnly: readOnly,
            usage: try rootDirectory.diskUsage(entry),
            created: rootDirectory.birthTime(entry) ?? Int64(st.modification.tv_sec),
            parent: nil, path: root.appending(entry.components).string,
            operatingSystem: Self.prettyName(of: tree), layers: [], dependants: [])
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

    /// Renames an image, as `machinectl rename` does (read-only images too).
    public func rename(_ old: ImageName, to new: ImageName) throws {
        try withStoreLock {
            try requireImage(old)
            guard try !imageExists(new) else {
                throw StoreError("image '\(new)' already exists; remove it first or choose another name")
            }
            guard let lock = try lockImage(old, .exclusive) else { throw inUse(old) }
            let wasReadOnly = try clearReadOnlyFlag(FilePath(old.rawValue))
            do {
                try rootDirectory.rename(FilePath(old.rawValue), to: FilePath(new.rawValue), .noReplace)
            } catch {
                if wasReadOnly { try? lock.setInodeFlags((lock.inodeFlags() ?? 0) | immutableFlag) }
                throw error
            }
            if wasReadOnly { try lock.setInodeFlags((lock.inodeFlags() ?? 0) | immutableFlag) }
            try rootDirectory.sync()
        }
    }

    /// Removes images, as `machinectl remove` does (read-only ones too). Each is first moved into
    /// staging in one rename, so a crash leaves it either whole in place or gone.
    public func remove(_ names: [ImageName]) throws {
        for name in names { try requireImage(name) }
        for name in names {
            let staging = try makeStaging("remove-\(name)")
            defer { staging.discard() }
            try withStoreLock {
                try requireImage(name)
                guard try lockImage(name, .exclusive) != nil else { throw inUse(name) }
                try clearReadOnlyFlag(FilePath(name.rawValue))
                try rootDirectory.rename(FilePath(name.rawValue), to: staging.name.appending("tree"), in: stagingDirectory, .noReplace)
                try rootDirectory.sync()
            }
        }
    }

    /// Marks an image read-only or writable. Like machinectl on a file system without
    /// snapshots, this sets the immutable flag on the image's root directory, which also
    /// stops other tools from adding or removing entries there.
    public func setReadOnly(_ name: ImageName, _ readOnly: Bool) throws {
        try requireImage(name)
        let fd = try rootDirectory.openFile(FilePath(name.rawValue), O_RDONLY | O_DIRECTORY)
        guard let flags = fd.inodeFlags() else {
            throw StoreError("the file system of \(root) cannot mark images read-only (no inode flags)")
        }
        let wanted = readOnly ? flags | immutableFlag : flags & ~immutableFlag
        if wanted != flags { try fd.setInodeFlags(wanted) }
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
    /// its name says. The file appears only when complete.
    public func export(_ name: ImageName, to file: String) throws {
        try requireImage(name)
        let compression: ArchiveCompression
        if file == "-" {
            compression = .none
        } else if let chosen = ArchiveCompression.forFileName(file) {
            compression = chosen
        } else {
            throw StoreError("cannot tell the compression from '\(file)'; name it .tar, .tar.gz, .tar.xz, .tar.zst or .tar.bz2")
        }
        guard let lock = try lockImage(name, .shared) else { throw inUse(name) }
        defer { withExtendedLifetime(lock) {} }
        let tree = path(of: name).string
        do {
            if file == "-" {
                try TreeExport.export(tree, to: Descriptor(owning: dup(1)), compression: compression)
                return
            }
            let target = FilePath(file)
            let partial = target.removingLastComponent().appending(".\(target.lastComponent?.string ?? "export").partial-\(randomSuffix())")
            let out = try Descriptor.open(partial, O_WRONLY | O_CREAT | O_EXCL, mode: 0o644)
            do {
                try TreeExport.export(tree, to: out, compression: compression)
                try out.sync()
                try retryingInterrupts("rename", path: file) {
                    partial.withPlatformString { from in target.withPlatformString { Glibc.rename(from, $0) } }
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
