import BerthSystem
import Glibc
import SystemPackage

/// Finding images by name, and their locks. A directory at `ROOT/NAME` is a directory image; a
/// record in `.berth/images` a layered one, whose tree is mounted at `ROOT/NAME`
/// (`StoreDirectories.holdsDirectoryImage` tells the two apart). A directory image wins over a
/// record of the same name: that record belongs to a conversion that never completed (see
/// LayeredChanges), and `gc` removes it.
struct ImageCatalog {
    let root: FilePath
    let rootDirectory: Directory
    /// nil for a store opened for reading that has no `.berth`: it holds directory images only.
    let store: StoreDirectories?

    enum StoredImage {
        case directory
        case layered(LayerStack)
    }

    var records: ImageRecords? { store.map { ImageRecords(store: $0) } }

    /// What `name` is in the store; nil when it is not there.
    func lookup(_ name: ImageName) throws -> StoredImage? {
        if try holdsDirectoryImage(FilePath(name.rawValue)) { return .directory }
        return try records?.read(name).map { .layered($0) }
    }

    /// Whether `entry` of the root is a directory image (see StoreDirectories); without `.berth`
    /// every directory is one.
    func holdsDirectoryImage(_ entry: FilePath) throws -> Bool {
        if let store { return try store.holdsDirectoryImage(entry) }
        return try rootDirectory.status(entry)?.kind == .directory
    }

    func exists(_ name: ImageName) throws -> Bool { try lookup(name) != nil }

    func require(_ name: ImageName) throws -> StoredImage {
        guard let found = try lookup(name) else { throw noImage(name) }
        return found
    }

    func refuseExisting(_ name: ImageName) throws {
        if try lookup(name) != nil {
            throw StoreError(.exists, "image '\(name)' already exists; remove it first or choose another name")
        }
    }

    func noImage(_ name: ImageName) -> StoreError {
        StoreError(.notFound, "no image '\(name)' in \(root); 'berth list' shows the images there")
    }

    // MARK: Locks

    /// Takes `name`'s lock without waiting, for `purpose`; refused with an error that says who
    /// holds it.
    func lock(_ name: ImageName, _ kind: Descriptor.LockKind, for purpose: ImageLock.Purpose) throws -> ImageLock {
        let entry = FilePath(name.rawValue)
        let isDirectory = try holdsDirectoryImage(entry)
        guard let parent = isDirectory ? rootDirectory : store?.images else { throw noImage(name) }
        return try ImageLock(name, entry: entry, in: parent, kind, for: purpose)
    }

    /// Runs `body` holding `name`'s lock; it is released when `body` returns or throws.
    func withLock<T>(_ name: ImageName, _ kind: Descriptor.LockKind, for purpose: ImageLock.Purpose,
                     _ body: (borrowing ImageLock) throws -> T) throws -> T {
        let lock = try lock(name, kind, for: purpose)
        return try body(lock)
    }

    /// Runs `body` holding the exclusive locks of all `names` at once (for `remove`).
    func withLocks<T>(_ names: ArraySlice<ImageName>, for purpose: ImageLock.Purpose, _ body: () throws -> T) throws -> T {
        guard let first = names.first else { return try body() }
        return try withLock(first, .exclusive, for: purpose) { _ in
            try withLocks(names.dropFirst(), for: purpose, body)
        }
    }

    // MARK: Directory images

    /// Whether directory image `entry` carries machinectl's read-only mark.
    func isMarkedReadOnly(_ tree: Descriptor) -> Bool { (tree.inodeFlags() ?? []).contains(.immutable) }

    /// Clears the immutable flag of `ROOT/entry`; returns whether it was set.
    @discardableResult
    func clearReadOnlyFlag(_ entry: FilePath) throws -> Bool {
        let fd = try rootDirectory.openFile(entry, O_RDONLY | O_DIRECTORY)
        guard let flags = fd.inodeFlags(), flags.contains(.immutable) else { return false }
        try fd.setInodeFlags(flags.subtracting(.immutable))
        return true
    }

    /// An OS tree has an os-release file, as systemd's path_is_os_tree() asks, or at least a
    /// /usr, which is all nspawn asks of a tree to run a command in. The one rule for import's
    /// unwrapping and for what `run` accepts.
    static func isOSTree(_ tree: Directory) -> Bool {
        for (dir, file) in [("etc", "os-release"), ("usr/lib", "os-release")] {
            if let parent = try? tree.openDirectory(beneath: FilePath(dir), pathOnly: true),
               (try? parent.status(FilePath(file))) != nil {
                return true
            }
        }
        return (try? tree.status("usr"))??.kind == .directory
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

    // MARK: Lineage

    /// The ids of `stack` and of every image it came from, nearest first, as far as records
    /// still name them.
    static func lineage(of stack: LayerStack, among all: [(name: ImageName, stack: LayerStack)]) -> [String] {
        let byID = Dictionary(all.map { ($0.stack.id, $0.stack) }, uniquingKeysWith: { a, _ in a })
        var ids = [stack.id]
        var next = stack.parent
        while let id = next, !ids.contains(id) {
            ids.append(id)
            next = byID[id]?.parent
        }
        return ids
    }
}
