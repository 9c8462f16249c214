import BerthSystem
import Glibc
import SystemPackage

/// `.berth/images`: the records of layered images, one directory each, named as the image.
///
/// A record that is there but cannot be read or understood is an error, never taken for no
/// record: what berth cannot read, it must not take as unused.
struct ImageRecords {
    let store: StoreDirectories
    var directory: Directory { store.images }

    /// The record of `name`; nil when there is none. A record that is there but cannot be read
    /// (not a directory, no `image` in it, an error reading it, a line berth does not write, a
    /// layer name berth does not make) is an error.
    func read(_ name: ImageName) throws -> LayerStack? {
        let entry = FilePath(name.rawValue)
        guard let found = try directory.status(entry) else { return nil }
        let text: String
        do {
            guard found.kind == .directory else { throw damaged(name, "it is not a directory") }
            let record = try directory.openDirectory(beneath: entry)
            guard let file = try record.status("image") else { throw damaged(name, "its file 'image' is missing") }
            guard file.kind == .regular else { throw damaged(name, "its 'image' is not a regular file") }
            try FaultPoint.check("record-read", "openat", path: record.child("image"))
            text = String(decoding: try record.openFile("image", O_RDONLY).readAll(limit: LayerStack.maxSize + 1), as: UTF8.self)
        } catch let error as SystemError {
            throw damaged(name, "it cannot be read (\(error))")
        }
        do {
            return try LayerStack(decoding: text)
        } catch let error as LayerStack.DecodingError {
            throw damaged(name, error.reason)
        }
    }

    private func damaged(_ name: ImageName, _ reason: String) -> StoreError {
        StoreError(.systemFailure, "the record of image '\(name)' (\(store.statePath)/images/\(name)) is damaged: \(reason); 'berth remove \(name)' removes it")
    }

    /// Whether `name` has a record that cannot be read, with no directory image shadowing it.
    func isDamaged(_ name: ImageName) throws -> Bool {
        guard try !store.holdsDirectoryImage(FilePath(name.rawValue)),
              try directory.status(FilePath(name.rawValue)) != nil else { return false }
        return (try? read(name)) == nil
    }

    /// What `.berth/images` holds: the records that read well, and what is wrong with each
    /// entry that does not. Records a directory image of the same name shadows are neither.
    struct Scan {
        var stacks: [(name: ImageName, stack: LayerStack)] = []
        /// What is wrong, by the entry's name in `.berth/images`.
        var damaged: [(entry: String, problem: String)] = []
    }

    func scan() throws -> Scan {
        var scan = Scan()
        for entry in try directory.entryNames() {
            guard let name = try? ImageName(entry.string), name.rawValue == entry.string else {
                scan.damaged.append((entry.printable, "'\(entry.printable)' in \(store.statePath)/images is not a record berth made; move it out of the store"))
                continue
            }
            if try store.holdsDirectoryImage(entry) { continue }
            do {
                if let stack = try read(name) { scan.stacks.append((name, stack)) }
            } catch let error as StoreError {
                scan.damaged.append((name.rawValue, error.message))
            }
        }
        return scan
    }

    /// Every layered image's name and record that can be read.
    func stacks() throws -> [(name: ImageName, stack: LayerStack)] {
        try scan().stacks
    }

    /// Replaces the record in `record` (an image's directory under `.berth/images`) in one rename.
    /// For a published record (`committing` says what the change is), the rename is the commit,
    /// and a failure to sync after it is a warning.
    func write(_ stack: LayerStack, in record: Directory, committing change: String? = nil) throws {
        if try record.status("image.new") != nil { try record.remove("image.new", isDirectory: false) }
        let file = try record.createFile("image.new", mode: 0o600)
        try file.writeAll(stack.encoded())
        try file.sync()
        try record.rename("image.new", to: "image", .replace)
        if let change {
            store.afterCommit("record-sync", done: change) { try record.sync() }
        } else {
            try record.sync()
        }
    }

    /// Writes `stack` as a new record `name` in `staging`, to be published by a rename.
    func stage(_ stack: LayerStack, as name: FilePath, in staging: Staging) throws {
        try staging.directory.makeDirectory(name, mode: 0o700)
        try write(stack, in: staging.directory.openDirectory(beneath: name))
    }

    func recordDirectory(_ name: ImageName) throws -> Directory {
        try directory.openDirectory(beneath: FilePath(name.rawValue))
    }

    /// Where a layered image is mounted when it runs: its record's directory, covered by the
    /// overlay in the container's own mount namespace only.
    func mountPoint(of name: ImageName) -> FilePath { store.statePath.appending("images").appending(name.rawValue) }
}
