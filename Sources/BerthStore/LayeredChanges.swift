import BerthSystem
import Glibc
import SystemPackage

/// Clone, snapshot and restore: the changes that stack images on each other's frozen layers.
///
/// The rules that keep the store consistent through a crash at any point:
/// - A layer is frozen by a record update that moves it from `upper` to `layers` while giving
///   the image a fresh upper; nothing ever writes a layer that a record lists in `layers`.
/// - A directory image becomes layered by placing its record first, with a bottom layer that
///   does not exist yet, then renaming its tree to be that layer. Until that rename the tree at
///   `ROOT/NAME` is the image and the record is incomplete. A directory at `ROOT/NAME` always
///   wins over a record of the same name (an interrupted conversion or forced import), and `gc`
///   removes such records.
struct LayeredChanges {
    let catalog: ImageCatalog
    let store: StoreDirectories
    let layers: LayerStore

    private var records: ImageRecords { ImageRecords(store: store) }
    private var mounts: ImageMounts { ImageMounts(catalog: catalog, store: store) }

    /// Makes `target` a new layered image with `source`'s content: a clone, or with `readOnly`
    /// a snapshot. A directory image is turned into a layered one first (rule 1: a layer is never
    /// written while anything stacks on it); a layered one has its changes frozen. Refused while
    /// `source` runs writable, since its content is changing under it.
    func clone(_ source: ImageName, to target: ImageName, readOnly: Bool) throws {
        guard source != target else { throw StoreError(.invalidInput, "an image cannot be cloned onto itself; choose another name") }
        _ = try catalog.require(source)
        try catalog.refuseExisting(target)
        let staging = try StagingArea(store: store).make("clone-\(target)")
        defer { staging.discard() }
        try store.withStoreLock {
            try catalog.refuseExisting(target)
            try withFrozenContent(of: source, staging: staging) { stack in
                let upper = try layers.stage(in: staging, over: stack.layers)
                let made = LayerStack(id: randomSuffix(), created: Int64(time(nil)), parent: stack.id,
                                      readOnly: readOnly, layers: stack.layers, upper: upper)
                try records.stage(made, as: "new-record", in: staging)
                try layers.install(upper, from: staging)
                CrashPoint.reach("clone")
                try staging.directory.rename("new-record", to: FilePath(target.rawValue), in: store.images, .noReplace)
                store.afterCommit("clone-sync", done: "made '\(target)' from '\(source)'") { try store.images.sync() }
                store.afterCommit("clone-mount", done: "made '\(target)' from '\(source)'") { try mounts.mountTree(target, made) }
            }
        }
    }

    /// Makes `name`'s content `snapshot`'s again: its record takes the snapshot's frozen layers
    /// and a fresh upper, and its old upper, with every change since, goes. `snapshot` must be of
    /// the same line: `name` itself came from it, or it came from `name` or from one of the
    /// images `name` came from. Anything else would give `name` another image's content while
    /// its record still named its own parent.
    func restore(_ name: ImageName, from snapshot: ImageName) throws {
        guard name != snapshot else { throw StoreError(.invalidInput, "an image cannot be restored from itself; name a snapshot of it") }
        _ = try catalog.require(name)
        _ = try catalog.require(snapshot)
        let staging = try StagingArea(store: store).make("restore-\(name)")
        defer { staging.discard() }
        try store.withStoreLock {
            try refuseUnrelated(name, snapshot)
            try catalog.withLock(name, .exclusive, for: .change) { _ in
                // Checked above: a directory image has no snapshot.
                guard case .layered(var stack) = try catalog.require(name) else { throw catalog.noImage(name) }
                try mounts.releaseTree(name)
                // Whatever happens, the image's tree is mounted again, as its record now says.
                defer { if let now = try? records.read(name) { try? mounts.mountTree(name, now) } }
                try withFrozenContent(of: snapshot, staging: staging) { content in
                    let old = stack.upper
                    stack.layers = content.layers
                    stack.upper = try layers.stage(in: staging, over: content.layers)
                    try layers.install(stack.upper, from: staging)
                    let change = "restored '\(name)' from '\(snapshot)'"
                    try records.write(stack, in: records.recordDirectory(name), committing: change)
                    CrashPoint.reach("restore")
                    store.afterCommit("restore-cleanup", done: change) { try layers.discard(old, into: staging) }
                }
            }
        }
    }

    /// Refuses `snapshot` unless its line and `name`'s meet (see `restore`). A directory image
    /// has no line yet: nothing was cloned or snapshotted from it.
    private func refuseUnrelated(_ name: ImageName, _ snapshot: ImageName) throws {
        let all = try records.stacks()
        let unrelated = StoreError(.invalidInput, "'\(snapshot)' is not a snapshot of '\(name)' or of an image it came from, so restoring it would make '\(name)' another image; 'berth show \(name)' names its parent, and 'berth snapshot \(name) SNAP' makes one")
        guard case .layered(let target) = try catalog.require(name),
              case .layered(let source) = try catalog.require(snapshot) else { throw unrelated }
        let line = Set(ImageCatalog.lineage(of: target, among: all))
        guard ImageCatalog.lineage(of: source, among: all).contains(where: line.contains) else { throw unrelated }
    }

    /// Runs `body` with `name`'s content as frozen layers, holding the lock that keeps it so.
    /// The caller holds the store lock.
    func withFrozenContent<T>(of name: ImageName, staging: Staging, _ body: (LayerStack) throws -> T) throws -> T {
        switch try catalog.require(name) {
        case .directory:
            return try catalog.withLock(name, .exclusive, for: .change) { _ in try body(convert(name, staging: staging)) }
        case .layered(let stack):
            return try catalog.withLock(name, .shared, for: .snapshot) { _ in
                try mounts.refuseMounted(name)
                return try body(freeze(name, stack, staging: staging))
            }
        }
    }

    /// The layers that hold `name`'s content as of now, bottom first, all frozen. When its upper
    /// layer holds changes, the record is updated to list it among the frozen layers, with a
    /// fresh upper on top. The caller holds the store lock and keeps writers out of the image.
    private func freeze(_ name: ImageName, _ stack: LayerStack, staging: Staging) throws -> LayerStack {
        if try layers.isPristine(stack) { return stack }
        // Its tree's writable layer is about to become a frozen one: no overlay may write it.
        try mounts.releaseTree(name)
        defer { if let now = try? records.read(name) { try? mounts.mountTree(name, now) } }
        let upper = try layers.stage(in: staging, like: layers.open(stack.upper).descriptor)
        try layers.install(upper, from: staging)
        var frozen = stack
        frozen.layers.append(stack.upper)
        frozen.upper = upper
        // Measured now, once: nothing writes it again.
        let bytes = try store.layers.diskUsage(FilePath(stack.upper))
        CrashPoint.reach("freeze")
        try records.write(frozen, in: records.recordDirectory(name), committing: "froze the changes of '\(name)' into a layer")
        layers.figures.recordLayer(stack.upper, bytes: bytes)
        try? store.work.removeTree(FilePath(stack.upper))
        return frozen
    }

    /// Turns directory image `name` into a layered image whose one frozen layer is its tree:
    /// a rename, whatever the size. The caller holds the store lock and the image's exclusive lock.
    func convert(_ name: ImageName, staging: Staging) throws -> LayerStack {
        let entry = FilePath(name.rawValue)
        let tree = try store.rootDirectory.openDirectory(beneath: entry)
        let st = try tree.descriptor.status()
        let upper = try layers.stage(in: staging, like: tree.descriptor)
        let stack = LayerStack(
            id: randomSuffix(), created: store.rootDirectory.birthTime(entry) ?? Int64(st.modification.tv_sec),
            parent: nil, readOnly: catalog.isMarkedReadOnly(tree.descriptor), layers: [randomSuffix()], upper: upper)
        try records.stage(stack, as: "record", in: staging)
        try layers.install(upper, from: staging)
        // A record this directory shadows (from an interrupted conversion) gives way.
        if try store.images.status(entry) != nil {
            try store.images.rename(entry, to: "stale-record", in: staging.directory, .noReplace)
        }
        try staging.directory.rename("record", to: entry, in: store.images, .noReplace)
        CrashPoint.reach("convert")
        // The commit: the tree becomes the bottom layer (an immutable directory cannot move).
        let wasReadOnly = try catalog.clearReadOnlyFlag(entry)
        do {
            try store.rootDirectory.rename(entry, to: FilePath(stack.layers[0]), in: store.layers, .noReplace)
        } catch {
            try? store.images.rename(entry, to: "failed-record", in: staging.directory, .noReplace)
            if wasReadOnly { try? tree.descriptor.setInodeFlags((tree.descriptor.inodeFlags() ?? []).union(.immutable)) }
            throw error
        }
        layers.figures.treeBecomesLayer(name, root: st, layer: stack.layers[0])
        store.afterCommit("convert-sync", done: "turned directory image '\(name)' into a layered one") {
            try store.rootDirectory.sync()
            try store.layers.sync()
        }
        // Its tree stays where it was, for every tool: now the overlay of its layers.
        store.afterCommit("convert-mount", done: "turned directory image '\(name)' into a layered one") { try mounts.mountTree(name, stack) }
        return stack
    }
}
