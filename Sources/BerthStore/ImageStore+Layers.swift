import BerthSystem
import Glibc
import SystemPackage

/// Layered images: records, layers, and the changes that make and drop them.
///
/// The rules that keep the store consistent through a crash at any point:
/// - A layer becomes part of an image only when a record naming it is published (a rename).
///   Layers moved into `.berth/layers` before that are unnamed, and `gc` frees them.
/// - A layer is frozen by a record update that moves it from `upper` to `layers` while giving
///   the image a fresh upper; nothing ever writes a layer that a record lists in `layers`.
/// - A directory image becomes layered by placing its record first, with a bottom layer that
///   does not exist yet, then renaming its tree to be that layer. Until that rename the tree at
///   `ROOT/NAME` is the image and the record is incomplete. A directory at `ROOT/NAME` always
///   wins over a record of the same name (an interrupted conversion or forced import), and `gc`
///   removes such records.
extension ImageStore {
    enum StoredImage {
        case directory
        case layered(LayerStack)
    }

    // MARK: Finding and reading

    /// What `name` is in the store; nil when it is not there. A directory at `ROOT/NAME` wins over
    /// a record of the same name: that record belongs to a conversion that never completed.
    func lookup(_ name: ImageName) throws -> StoredImage? {
        if try rootDirectory.status(FilePath(name.rawValue))?.kind == .directory { return .directory }
        return try readStack(name).map { .layered($0) }
    }

    /// The record of `name`; nil when there is none. A record that is there but cannot be read
    /// or understood (not a directory, no `image` in it, an error reading it, a line berth does
    /// not write, a layer name berth does not make) is an error, never taken for no record:
    /// what berth cannot read, it must not take as unused.
    func readStack(_ name: ImageName) throws -> LayerStack? {
        let entry = FilePath(name.rawValue)
        guard let found = try imagesDirectory.status(entry) else { return nil }
        let text: String
        do {
            guard found.kind == .directory else { throw damaged(name, "it is not a directory") }
            let record = try imagesDirectory.openDirectory(beneath: entry)
            guard let file = try record.status("image") else { throw damaged(name, "its file 'image' is missing") }
            guard file.kind == .regular else { throw damaged(name, "its 'image' is not a regular file") }
            try FaultPoint.check("record-read", "openat", path: record.child("image"))
            text = String(decoding: try record.openFile("image", O_RDONLY).readAll(limit: 1 << 20), as: UTF8.self)
        } catch let error as SystemError {
            throw damaged(name, "it cannot be read (\(error))")
        }
        guard let stack = LayerStack(decoding: text) else {
            throw damaged(name, text.isEmpty ? "it is empty" : "it holds a line or a layer name berth does not write")
        }
        return stack
    }

    private func damaged(_ name: ImageName, _ reason: String) -> StoreError {
        StoreError("the record of image '\(name)' (\(statePath)/images/\(name)) is damaged: \(reason); 'berth remove \(name)' removes it")
    }

    /// What `.berth/images` holds: the records that read well, and what is wrong with each
    /// entry that does not. Records a directory image of the same name shadows are neither.
    struct RecordScan {
        var stacks: [(name: ImageName, stack: LayerStack)] = []
        /// What is wrong, by the entry's name in `.berth/images`.
        var damaged: [(entry: String, problem: String)] = []
    }

    func scanRecords() throws -> RecordScan {
        var scan = RecordScan()
        for entry in try imagesDirectory.entryNames() {
            guard let name = try? ImageName(entry.string), name.rawValue == entry.string else {
                scan.damaged.append((entry.printable, "'\(entry.printable)' in \(statePath)/images is not a record berth made; move it out of the store"))
                continue
            }
            if try rootDirectory.status(entry)?.kind == .directory { continue }
            do {
                if let stack = try readStack(name) { scan.stacks.append((name, stack)) }
            } catch let error as StoreError {
                scan.damaged.append((name.rawValue, error.message))
            }
        }
        return scan
    }

    /// Every layered image's name and record that can be read.
    func stacks() throws -> [(name: ImageName, stack: LayerStack)] {
        try scanRecords().stacks
    }

    /// Replaces the record in `record` (an image's directory under `.berth/images`) in one rename.
    /// For a published record (`committing` says what the change is), the rename is the commit,
    /// and a failure to sync after it is a warning.
    func writeStack(_ stack: LayerStack, in record: Directory, committing change: String? = nil) throws {
        if try record.status("image.new") != nil { try record.remove("image.new", isDirectory: false) }
        let file = try record.createFile("image.new", mode: 0o600)
        try file.writeAll(stack.encoded())
        try file.sync()
        try record.rename("image.new", to: "image", .replace)
        if let change {
            afterCommit("record-sync", done: change) { try record.sync() }
        } else {
            try record.sync()
        }
    }

    func recordDirectory(_ name: ImageName) throws -> Directory {
        try imagesDirectory.openDirectory(beneath: FilePath(name.rawValue))
    }

    /// The host path of layer `id`, for the kernel's overlay.
    func layerPath(_ id: String) -> FilePath { Self.layerPath(id, in: statePath) }

    /// Where layer `id`, and overlayfs's work directory for it, are in the store whose state
    /// directory (`ROOT/.berth`) is `statePath`.
    static func layerPath(_ id: String, in statePath: FilePath) -> FilePath { statePath.appending("layers").appending(id) }
    static func workPath(_ id: String, in statePath: FilePath) -> FilePath { statePath.appending("work").appending(id) }
    /// Where a layered image is mounted when it runs: its record's directory, covered by the
    /// overlay in the container's own mount namespace only.
    func mountPoint(of name: ImageName) -> FilePath { statePath.appending("images").appending(name.rawValue) }

    // MARK: Layers

    /// Makes an empty writable layer and its work directory in `staging`; the layer's root gets
    /// `template`'s mode, owner and times, because overlayfs shows the upper root's as the
    /// merged root's. `installLayer` moves both into place.
    func stageLayer(in staging: Staging, like template: Descriptor) throws -> String {
        let id = randomSuffix()
        let layerName = FilePath("layer-\(id)")
        try staging.directory.makeDirectory(layerName, mode: 0o700)
        let layer = try staging.directory.openDirectory(beneath: layerName)
        let st = try template.status()
        try layer.descriptor.setOwner(uid: st.uid, gid: st.gid)
        try layer.descriptor.setMode(st.permissions)
        try layer.descriptor.setTimes(access: nil, modification: st.modification)
        try staging.directory.makeDirectory(FilePath("work-\(id)"), mode: 0o700)
        return id
    }

    func installLayer(_ id: String, from staging: Staging) throws {
        try staging.directory.rename(FilePath("layer-\(id)"), to: FilePath(id), in: layersDirectory, .noReplace)
        try staging.directory.rename(FilePath("work-\(id)"), to: FilePath(id), in: workDirectory, .noReplace)
        // Durable before any record can name it.
        try layersDirectory.sync()
        try workDirectory.sync()
    }

    func openLayer(_ id: String) throws -> Directory {
        do {
            return try layersDirectory.openDirectory(beneath: FilePath(id))
        } catch let error as SystemError where error.errno == .noSuchFileOrDirectory {
            throw StoreError("layer \(id) is missing from \(statePath)/layers; the store was changed by hand")
        }
    }

    /// An upper layer that holds nothing and whose root looks like the one below adds nothing:
    /// freezing it would only lengthen the stack.
    private func isPristine(_ stack: LayerStack) throws -> Bool {
        let upper = try openLayer(stack.upper)
        guard try upper.entryNames().isEmpty else { return false }
        let (a, b) = (try upper.descriptor.status(), try openLayer(stack.layers.last!).descriptor.status())
        return a.permissions == b.permissions && a.uid == b.uid && a.gid == b.gid
    }

    /// The layers that hold `name`'s content as of now, bottom first, all frozen. When its upper
    /// layer holds changes, the record is updated to list it among the frozen layers, with a
    /// fresh upper on top. The caller holds the store lock and keeps writers out of the image.
    func freeze(_ name: ImageName, _ stack: LayerStack, staging: Staging) throws -> LayerStack {
        if try isPristine(stack) { return stack }
        let upper = try stageLayer(in: staging, like: openLayer(stack.upper).descriptor)
        try installLayer(upper, from: staging)
        var frozen = stack
        frozen.layers.append(stack.upper)
        frozen.upper = upper
        CrashPoint.reach("freeze")
        try writeStack(frozen, in: recordDirectory(name), committing: "froze the changes of '\(name)' into a layer")
        try? workDirectory.removeTree(FilePath(stack.upper))
        return frozen
    }

    /// Turns directory image `name` into a layered image whose one frozen layer is its tree:
    /// a rename, whatever the size. The caller holds the store lock and the image's exclusive lock.
    func convert(_ name: ImageName, staging: Staging) throws -> LayerStack {
        let entry = FilePath(name.rawValue)
        let tree = try rootDirectory.openDirectory(beneath: entry)
        let st = try tree.descriptor.status()
        let upper = try stageLayer(in: staging, like: tree.descriptor)
        let stack = LayerStack(
            id: randomSuffix(), created: rootDirectory.birthTime(entry) ?? Int64(st.modification.tv_sec),
            parent: nil, readOnly: (tree.descriptor.inodeFlags() ?? 0) & immutableFlag != 0,
            layers: [randomSuffix()], upper: upper)
        try staging.directory.makeDirectory("record", mode: 0o700)
        try writeStack(stack, in: staging.directory.openDirectory(beneath: "record"))
        try installLayer(upper, from: staging)
        // A record this directory shadows (from an interrupted conversion) gives way.
        if try imagesDirectory.status(entry) != nil {
            try imagesDirectory.rename(entry, to: "stale-record", in: staging.directory, .noReplace)
        }
        try staging.directory.rename("record", to: entry, in: imagesDirectory, .noReplace)
        CrashPoint.reach("convert")
        // The commit: the tree becomes the bottom layer (an immutable directory cannot move).
        let wasReadOnly = try clearReadOnlyFlag(entry)
        do {
            try rootDirectory.rename(entry, to: FilePath(stack.layers[0]), in: layersDirectory, .noReplace)
        } catch {
            try? imagesDirectory.rename(entry, to: "failed-record", in: staging.directory, .noReplace)
            if wasReadOnly { try? tree.descriptor.setInodeFlags((tree.descriptor.inodeFlags() ?? 0) | immutableFlag) }
            throw error
        }
        afterCommit("convert-sync", done: "turned directory image '\(name)' into a layered one") {
            try rootDirectory.sync()
            try layersDirectory.sync()
        }
        return stack
    }

    // MARK: Clone, snapshot, restore

    /// Makes `target` a new layered image with `source`'s content: a clone, or with `readOnly`
    /// a snapshot. A directory image is turned into a layered one first (rule 1: a layer is never
    /// written while anything stacks on it); a layered one has its changes frozen. Refused while
    /// `source` runs writable, since its content is changing under it.
    public func clone(_ source: ImageName, to target: ImageName, readOnly: Bool) throws {
        guard source != target else { throw StoreError("an image cannot be cloned onto itself; choose another name") }
        try requireImage(source)
        try refuseExisting(target)
        let staging = try makeStaging("clone-\(target)")
        defer { staging.discard() }
        try withStoreLock {
            try refuseExisting(target)
            let (stack, lock) = try frozenContent(of: source, staging: staging)
            defer { withExtendedLifetime(lock) {} }
            let upper = try stageLayer(in: staging, like: openLayer(stack.layers.last!).descriptor)
            let made = LayerStack(id: randomSuffix(), created: Int64(time(nil)), parent: stack.id,
                                  readOnly: readOnly, layers: stack.layers, upper: upper)
            try staging.directory.makeDirectory("new-record", mode: 0o700)
            try writeStack(made, in: staging.directory.openDirectory(beneath: "new-record"))
            try installLayer(upper, from: staging)
            CrashPoint.reach("clone")
            try staging.directory.rename("new-record", to: FilePath(target.rawValue), in: imagesDirectory, .noReplace)
            afterCommit("clone-sync", done: "made '\(target)' from '\(source)'") { try imagesDirectory.sync() }
        }
    }

    /// Makes `name`'s content `snapshot`'s again: its record takes the snapshot's frozen layers
    /// and a fresh upper, and its old upper, with every change since, goes.
    public func restore(_ name: ImageName, from snapshot: ImageName) throws {
        guard name != snapshot else { throw StoreError("an image cannot be restored from itself; name a snapshot of it") }
        try requireImage(name)
        try requireImage(snapshot)
        let staging = try makeStaging("restore-\(name)")
        defer { staging.discard() }
        try withStoreLock {
            guard let lock = try lockImage(name, .exclusive) else { throw inUse(name) }
            defer { withExtendedLifetime(lock) {} }
            var stack: LayerStack
            switch try lookup(name) {
            case .directory?: stack = try convert(name, staging: staging)
            case .layered(let found)?: stack = found
            case nil: throw noImage(name)
            }
            let (content, snapshotLock) = try frozenContent(of: snapshot, staging: staging)
            defer { withExtendedLifetime(snapshotLock) {} }
            let old = stack.upper
            stack.layers = content.layers
            stack.upper = try stageLayer(in: staging, like: openLayer(content.layers.last!).descriptor)
            try installLayer(stack.upper, from: staging)
            let change = "restored '\(name)' from '\(snapshot)'"
            try writeStack(stack, in: recordDirectory(name), committing: change)
            CrashPoint.reach("restore")
            afterCommit("restore-cleanup", done: change) { try discardLayer(old, into: staging) }
        }
    }

    /// `name`'s content as frozen layers, with the lock that keeps it so while the caller uses it.
    func frozenContent(of name: ImageName, staging: Staging) throws -> (LayerStack, Descriptor) {
        switch try lookup(name) {
        case .directory?:
            guard let lock = try lockImage(name, .exclusive) else { throw inUse(name) }
            return (try convert(name, staging: staging), lock)
        case .layered(let stack)?:
            guard let lock = try lockImage(name, .shared) else {
                throw StoreError("image '\(name)' is running writable and changing; stop it first, or snapshot it once it stops")
            }
            try refuseMounted(name)
            return (try freeze(name, stack, staging: staging), lock)
        case nil:
            throw noImage(name)
        }
    }

    /// Moves writable layer `id` and its work directory into `staging`, which deletes them.
    func discardLayer(_ id: String, into staging: Staging) throws {
        if try layersDirectory.status(FilePath(id)) != nil {
            try layersDirectory.rename(FilePath(id), to: FilePath("old-layer-\(id)"), in: staging.directory, .noReplace)
        }
        if try workDirectory.status(FilePath(id)) != nil {
            try workDirectory.rename(FilePath(id), to: FilePath("old-work-\(id)"), in: staging.directory, .noReplace)
        }
    }

    func refuseExisting(_ name: ImageName) throws {
        if try lookup(name) != nil {
            throw StoreError("image '\(name)' already exists; remove it first or choose another name")
        }
    }

    func noImage(_ name: ImageName) -> StoreError {
        StoreError("no image '\(name)' in \(root); 'berth list' shows the images there")
    }

    // MARK: Garbage collection

    public struct CollectedGarbage {
        public var layers = 0
        public var records = 0
        public var bytes: Int64 = 0
    }

    /// Frees every layer no image and no build cache entry names, the work directories of layers that are no longer
    /// written, and records a directory image of the same name shadows.
    public func collectGarbage() throws -> CollectedGarbage {
        let staging = try makeStaging("gc")
        defer { staging.discard() }
        var result = CollectedGarbage()
        try withStoreLock {
            // What gc cannot read, it cannot prove unused: one damaged record, and nothing goes.
            let scan = try scanRecords()
            if let first = scan.damaged.first {
                let names = scan.damaged.map { "'\($0.entry)'" }.joined(separator: ", ")
                throw StoreError("gc freed nothing: it cannot tell which layers the damaged record\(scan.damaged.count > 1 ? "s" : "") of \(names) need: \(first.problem)")
            }
            var named = Set<String>(), uppers = Set<String>()
            for (_, stack) in scan.stacks {
                named.formUnion(stack.allLayers)
                uppers.insert(stack.upper)
            }
            for entry in try imagesDirectory.entryNames() where try rootDirectory.status(entry)?.kind == .directory {
                try imagesDirectory.rename(entry, to: FilePath("record-\(result.records)"), in: staging.directory, .noReplace)
                result.records += 1
            }
            for stack in try cachedStacks() { named.formUnion(stack) }
            for entry in try layersDirectory.entryNames() where !named.contains(entry.string) {
                result.bytes += try layersDirectory.diskUsage(entry)
                try layersDirectory.rename(entry, to: FilePath("layer-\(entry.string)"), in: staging.directory, .noReplace)
                result.layers += 1
                CrashPoint.reach("gc")
            }
            for entry in try workDirectory.entryNames() where !uppers.contains(entry.string) {
                try workDirectory.rename(entry, to: FilePath("work-\(entry.string)"), in: staging.directory, .noReplace)
            }
            let freed = result
            afterCommit("gc-sync", done: "gc moved \(freed.layers) layer\(freed.layers == 1 ? "" : "s") out of the store") {
                try stagingDirectory.sync()
            }
        }
        return result
    }
}
