import BerthSystem
import Glibc
import SystemPackage

/// What `remove` did: the images it removed, and the bytes that went with them.
public struct Removal: Sendable {
    public var names: [ImageName] = []
    /// What was freed: directory images' trees, layered images' writable layers, and the frozen
    /// layers no other image, build cache entry or damaged record may need.
    public var bytes: Int64 = 0
    /// Frozen layers only the removed images used that the build cache keeps (for `gc
    /// --drop-cache`), or that a damaged record might need (for `gc`).
    public var keptLayers = 0
}

/// Rename, remove and read-only: the changes to an image as a whole, as machinectl makes them.
struct ImageChanges {
    let catalog: ImageCatalog
    let store: StoreDirectories
    let layers: LayerStore
    let cache: BuildCache

    private var records: ImageRecords { ImageRecords(store: store) }
    private var mounts: ImageMounts { ImageMounts(catalog: catalog, store: store) }

    /// Renames an image, as `machinectl rename` does (read-only images too). Clones of a layered
    /// image name it by its id, so they keep working.
    func rename(_ old: ImageName, to new: ImageName) throws {
        try store.withStoreLock {
            let found = try catalog.require(old)
            try catalog.refuseExisting(new)
            try catalog.withLock(old, .exclusive, for: .change) { lock in
                let change = "renamed '\(old)' to '\(new)'"
                guard case .directory = found else {
                    try mounts.refuseMounted(old)
                    // The tree moves with the name: taken away, its mount point gone before the
                    // record's rename (so a crash leaves no stray directory), mounted at the new.
                    try mounts.releaseTree(old)
                    try? store.rootDirectory.remove(FilePath(old.rawValue), isDirectory: true)
                    do {
                        try store.images.rename(FilePath(old.rawValue), to: FilePath(new.rawValue), .noReplace)
                    } catch {
                        if let stack = try? records.read(old) { try? mounts.mountTree(old, stack) }
                        throw error
                    }
                    store.afterCommit("rename-sync", done: change) { try store.images.sync() }
                    if case .layered(let stack) = found {
                        store.afterCommit("rename-mount", done: change) { try mounts.mountTree(new, stack) }
                    }
                    return
                }
                let wasReadOnly = try catalog.clearReadOnlyFlag(FilePath(old.rawValue))
                do {
                    try store.rootDirectory.rename(FilePath(old.rawValue), to: FilePath(new.rawValue), .noReplace)
                } catch {
                    if wasReadOnly { try? lock.setInodeFlags((lock.inodeFlags() ?? []).union(.immutable)) }
                    throw error
                }
                layers.figures.moveTree(old, to: new)
                if wasReadOnly {
                    do {
                        try lock.setInodeFlags((lock.inodeFlags() ?? []).union(.immutable))
                    } catch {
                        store.warn("\(change), but could not mark it read-only again (\(error)); 'berth read-only \(new)' does")
                    }
                }
                store.afterCommit("rename-sync", done: change) { try store.rootDirectory.sync() }
            }
        }
    }

    /// Removes images, as `machinectl remove` does (read-only ones too). A name given twice
    /// counts once. Every image is found, locked and checked before any is removed, so a
    /// missing or busy one leaves all in place. Each is then moved into staging in one rename,
    /// so a crash leaves it either whole in place or gone. A layered image takes its writable
    /// layer with it, and the frozen layers no other image or build cache entry names; `gc`
    /// frees what is left.
    /// A damaged record goes too (its layers stay for `gc`, which frees them once no damaged
    /// record is left that might name them).
    func remove(_ given: [ImageName]) throws -> Removal {
        var names: [ImageName] = []
        for name in given where !names.contains(name) { names.append(name) }
        for name in names where try !records.isDamaged(name) { _ = try catalog.require(name) }
        let staging = try StagingArea(store: store).make("remove")
        defer { staging.discard() }
        var removal = Removal()
        try store.withStoreLock {
            var found: [(ImageName, ImageCatalog.StoredImage?)] = []
            for name in names {
                if try records.isDamaged(name) { found.append((name, nil)) } else { found.append((name, try catalog.require(name))) }
            }
            // A damaged record that is a directory is locked as a record is: it may be in use.
            var lockable: [ImageName] = []
            for (name, image) in found {
                if try image != nil || store.images.status(FilePath(name.rawValue))?.kind == .directory { lockable.append(name) }
            }
            try catalog.withLocks(lockable[...], for: .change) {
                for (name, image) in found {
                    if case .layered? = image { try mounts.refuseMounted(name) }
                }
                // Every tree is taken away before any image goes; one in use leaves them all.
                var released: [(ImageName, LayerStack)] = []
                do {
                    for (name, image) in found {
                        guard case .layered(let stack)? = image else { continue }
                        try mounts.releaseTree(name)
                        released.append((name, stack))
                    }
                    // A damaged record's tree, mounted while the record was whole, goes last:
                    // without a stack it could not be mounted again if another were refused.
                    for (name, image) in found where image == nil { try mounts.releaseTree(name) }
                } catch {
                    for (name, stack) in released { try? mounts.mountTree(name, stack) }
                    throw error
                }
                for (index, (name, image)) in found.enumerated() {
                    removal.bytes += try remove(name, image, into: staging, as: FilePath("removed-\(index)"))
                    removal.names.append(name)
                }
            }
            let stacks = found.compactMap { _, image -> LayerStack? in
                guard case .layered(let stack)? = image else { return nil }
                return stack
            }
            let freed = try freeFrozenLayers(of: stacks, into: staging)
            removal.bytes += freed.bytes
            removal.keptLayers = freed.kept
        }
        return removal
    }

    /// Moves one image into `staging` under `entry`: the commit of its removal. Returns the bytes
    /// that frees.
    private func remove(_ name: ImageName, _ image: ImageCatalog.StoredImage?, into staging: Staging, as entry: FilePath) throws -> Int64 {
        let change = "removed '\(name)'"
        switch image {
        case nil:
            // Its mount point, if it is one (empty now): left, it would read as a directory image.
            try? store.rootDirectory.remove(FilePath(name.rawValue), isDirectory: true)
            try store.images.rename(FilePath(name.rawValue), to: entry, in: staging.directory, .noReplace)
            store.afterCommit("remove-sync", done: change) { try store.images.sync() }
            return 0
        case .directory?:
            let tree = FilePath(name.rawValue)
            let root = try store.rootDirectory.openFile(tree, O_RDONLY | O_DIRECTORY).status()
            let bytes = try layers.figures.tree(name, root: root) ?? store.rootDirectory.diskUsage(tree)
            try catalog.clearReadOnlyFlag(tree)
            PausePoint.reach("remove")
            try store.rootDirectory.rename(tree, to: staging.name.appending(entry.components), in: store.staging, .noReplace)
            store.afterCommit("remove-sync", done: change) { try store.rootDirectory.sync() }
            layers.figures.forgetTree(name)
            return bytes
        case .layered(let stack)?:
            PausePoint.reach("remove")
            // The mount point goes first: a crash after it leaves the record, whose tree the next
            // command mounts again; one after the commit leaves nothing.
            try? store.rootDirectory.remove(FilePath(name.rawValue), isDirectory: true)
            try store.images.rename(FilePath(name.rawValue), to: entry, in: staging.directory, .noReplace)
            store.afterCommit("remove-sync", done: change) { try store.images.sync() }
            CrashPoint.reach("remove")
            var bytes: Int64 = 0
            store.afterCommit("remove-cleanup", done: change) { bytes = try layers.discard(stack.upper, into: staging) }
            return bytes
        }
    }

    /// Frees the frozen layers of `removed` that nothing left names: no record, no cache entry.
    /// While a damaged record is left, none goes (it might name any). Returns the bytes freed
    /// and how many layers stay.
    private func freeFrozenLayers(of removed: [LayerStack], into staging: Staging) throws -> (bytes: Int64, kept: Int) {
        let candidates = Set(removed.flatMap(\.layers))
        guard !candidates.isEmpty else { return (0, 0) }
        let scan = try records.scan()
        let named = Set(scan.stacks.flatMap(\.stack.allLayers))
        let unused = candidates.subtracting(named)
        let cached = Set(try cache.stacks().joined())
        guard scan.damaged.isEmpty else { return (0, unused.count) }
        let freeing = unused.subtracting(cached)
        guard !freeing.isEmpty else { return (0, unused.count) }
        var bytes: Int64 = 0
        store.afterCommit("remove-cleanup", done: "removed \(removed.count == 1 ? "the image" : "the images")") {
            for id in freeing.sorted() { bytes += try layers.discard(id, into: staging) }
        }
        return (bytes, unused.intersection(cached).count)
    }

    /// Marks an image read-only or writable. For a directory image, like machinectl on a file
    /// system without snapshots, this sets the immutable flag on its root directory, which also
    /// stops other tools from adding or removing entries there; a layered image's record says it.
    func setReadOnly(_ name: ImageName, _ readOnly: Bool) throws {
        try store.withStoreLock {
            switch try catalog.require(name) {
            case .directory:
                let fd = try store.rootDirectory.openFile(FilePath(name.rawValue), O_RDONLY | O_DIRECTORY)
                guard let flags = fd.inodeFlags() else {
                    throw StoreError(.systemFailure, "the file system of \(catalog.root) cannot mark images read-only (no inode flags)")
                }
                let wanted = readOnly ? flags.union(.immutable) : flags.subtracting(.immutable)
                if wanted != flags { try fd.setInodeFlags(wanted) }
            case .layered(var stack):
                guard stack.readOnly != readOnly else { return }
                try catalog.withLock(name, .exclusive, for: .change) { _ in
                    // Its tree is mounted again as the record now says: read-only, or writable.
                    try mounts.releaseTree(name)
                    defer { if let now = try? records.read(name) { try? mounts.mountTree(name, now) } }
                    stack.readOnly = readOnly
                    try records.write(stack, in: records.recordDirectory(name), committing: "marked '\(name)' \(readOnly ? "read-only" : "writable")")
                }
            }
        }
    }
}
