import BerthSystem
import Glibc
import SystemPackage

/// Disk usage measured once and kept in `.berth/usage`, so that `list` walks no tree that has
/// not changed since it was measured (five Debian trees took 185 ms warm and 1.2 s cold).
///
/// - `layers/ID`: a frozen layer's bytes. It never changes again, so the figure never goes
///   stale; it is measured when the layer freezes (a clone's freeze, a build step, a directory
///   image's conversion takes the tree's figure).
/// - `trees/NAME`: a directory image's bytes, with the device and inode of its root, measured at
///   import. A writable run changes the tree without berth seeing the end, so a writable use
///   drops the figure; so does any tool that replaces the tree (the inode no longer matches).
///   An image without a figure shows no usage in `list` (as machinectl prints n/a off btrfs)
///   until `list --usage` or `show` measures it.
///
/// Writable layers are not kept here: they hold an image's own changes, are usually small, and
/// change with every run, so they are measured each time. Nothing here is needed for
/// correctness: a figure that is missing or unreadable is measured again or shown as unknown.
struct UsageFigures {
    private let trees: Directory?
    private let layers: Directory?

    /// The figures of `store`; with `make`, their directories are made where missing. Without a
    /// store, or in a store older than figures, there are none.
    init(_ store: StoreDirectories?, make: Bool) throws {
        guard let store, let usage = try store.optionalDirectory("usage", make: make) else {
            (trees, layers) = (nil, nil)
            return
        }
        if make {
            try StoreDirectories.makeDirectory("trees", in: usage)
            try StoreDirectories.makeDirectory("layers", in: usage)
        }
        trees = try? usage.openDirectory(beneath: "trees")
        layers = try? usage.openDirectory(beneath: "layers")
    }

    // MARK: Directory images

    /// The figure for directory image `name` whose root is `root`; nil when there is none or it
    /// was measured for another tree.
    func tree(_ name: ImageName, root: FileStatus) -> Int64? {
        guard let fields = read(FilePath(name.rawValue), in: trees), fields.count == 3,
              fields[0] == UInt64(root.device), fields[1] == UInt64(root.inode) else { return nil }
        return Int64(exactly: fields[2])
    }

    func recordTree(_ name: ImageName, root: FileStatus, bytes: Int64) {
        write("\(root.device) \(root.inode) \(bytes)", as: FilePath(name.rawValue), in: trees)
    }

    func forgetTree(_ name: ImageName) {
        try? trees?.remove(FilePath(name.rawValue), isDirectory: false)
    }

    /// A renamed directory image keeps its figure (the inode is the same).
    func moveTree(_ old: ImageName, to new: ImageName) {
        try? trees?.rename(FilePath(old.rawValue), to: FilePath(new.rawValue), .replace)
    }

    /// The tree's figure becomes the frozen layer's when a directory image turns into a layer.
    func treeBecomesLayer(_ name: ImageName, root: FileStatus, layer id: String) {
        if let bytes = tree(name, root: root) { recordLayer(id, bytes: bytes) }
        forgetTree(name)
    }

    // MARK: Frozen layers

    func layer(_ id: String) -> Int64? {
        guard let fields = read(FilePath(id), in: layers), fields.count == 1 else { return nil }
        return Int64(exactly: fields[0])
    }

    func recordLayer(_ id: String, bytes: Int64) {
        write("\(bytes)", as: FilePath(id), in: layers)
    }

    func forgetLayer(_ id: String) {
        try? layers?.remove(FilePath(id), isDirectory: false)
    }

    /// Drops the figures of layers and trees that are gone, for gc.
    func forgetAllBut(layers kept: Set<String>, trees present: Set<String>) {
        for entry in (try? layers?.entryNames()) ?? [] where !kept.contains(entry.string) {
            try? layers?.remove(entry, isDirectory: false)
        }
        for entry in (try? trees?.entryNames()) ?? [] where !present.contains(entry.string) {
            try? trees?.remove(entry, isDirectory: false)
        }
    }

    // MARK: The files

    /// Numbers separated by spaces; nil for anything else.
    private func read(_ name: FilePath, in directory: Directory?) -> [UInt64]? {
        guard let directory, let file = try? directory.openFile(name, O_RDONLY | O_NOFOLLOW),
              let bytes = try? file.readAll(limit: 128) else { return nil }
        let fields = String(decoding: bytes, as: UTF8.self).split(whereSeparator: { $0 == " " || $0 == "\n" })
        let numbers = fields.compactMap { UInt64($0) }
        return numbers.count == fields.count && !numbers.isEmpty ? numbers : nil
    }

    /// Replaced by a rename, so a reader never sees half a figure. Not synced: a figure lost in
    /// a crash is only measured again.
    private func write(_ text: String, as name: FilePath, in directory: Directory?) {
        guard let directory else { return }
        let partial = FilePath(".\(name.string).\(randomSuffix())")
        do {
            let file = try directory.createFile(partial, mode: 0o600)
            try file.writeAll(text + "\n")
            try directory.rename(partial, to: name, .replace)
        } catch {
            try? directory.remove(partial, isDirectory: false)
        }
    }
}
