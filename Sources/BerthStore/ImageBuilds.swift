import BerthSystem
import Glibc
import SystemPackage

/// A layer being made by a build step: what to stack under it, and where its writes go.
public struct LayerInProgress {
    /// The layers below, top first (host paths, for a container's overlay).
    public let lowerLayers: [FilePath]
    /// The new layer and overlayfs's work directory, both in staging until the step succeeds.
    public let upper: FilePath
    public let work: FilePath
    /// An empty directory to mount the merged tree on.
    public let mountPoint: FilePath

    let lowerIDs: [String]
    let mounts: ImageMounts

    /// Runs `body` with the merged tree mounted writable at `mountPoint` on the host, then unmounts.
    /// The tree a step's container runs on: the layers so far, and this layer taking its changes.
    public var tree: RootTree {
        RootTree(root: mountPoint, lowerLayers: lowerLayers, upper: RootTree.WritableLayer(layer: upper, work: work))
    }

    public func withMergedTree<T>(_ body: (Directory) throws -> T) throws -> T {
        let directory = O_RDONLY | O_DIRECTORY
        let upper = (try Descriptor.open(self.upper, directory), try Descriptor.open(work, directory))
        try mounts.mountLayers(lowerIDs, upper: upper, onto: Descriptor.open(mountPoint, directory))
        defer { try? Mount.unmount(mountPoint, detach: true) }
        return try body(Directory(opening: mountPoint))
    }
}

/// The layers of `berth build` and the image it publishes: each step's result is one frozen
/// layer, made in staging and kept only when the step succeeds.
struct ImageBuilds {
    let catalog: ImageCatalog
    let store: StoreDirectories
    let layers: LayerStore

    private var staging: StagingArea { StagingArea(store: store) }
    private var records: ImageRecords { ImageRecords(store: store) }

    /// Makes a bottom layer: `fill` gets an empty directory (mode 0755) and puts a tree in it.
    func makeBaseLayer(_ fill: (FilePath) throws -> Void) throws -> String {
        let staging = try staging.make("base")
        defer { staging.discard() }
        let id = randomSuffix()
        try staging.directory.makeDirectory(FilePath("layer-\(id)"), mode: 0o755)
        try fill(staging.path.appending("layer-\(id)"))
        try layers.keep(id, from: staging)
        return id
    }

    /// Makes a layer over `stack` (bottom first): `fill` changes the merged tree through the
    /// `LayerInProgress` (a container's overlay, or a mount), and the layer holds what changed.
    func makeLayer(on stack: [String], _ fill: (LayerInProgress) throws -> Void) throws -> String {
        let staging = try staging.make("step")
        defer { staging.discard() }
        let id = try layers.stage(in: staging, over: stack)
        try staging.directory.makeDirectory("root", mode: 0o700)
        let lowerIDs = Array(stack.reversed())
        try fill(LayerInProgress(lowerLayers: lowerIDs.map(store.layerPath), upper: staging.path.appending("layer-\(id)"),
                                 work: staging.path.appending("work-\(id)"), mountPoint: staging.path.appending("root"),
                                 lowerIDs: lowerIDs, mounts: ImageMounts(catalog: catalog, store: store)))
        try layers.keep(id, from: staging)
        return id
    }

    /// The frozen layers holding image `name`'s content, for a build to start from. A directory
    /// image becomes layered, as for a clone.
    func contentLayers(of name: ImageName) throws -> [String] {
        let staging = try staging.make("base-\(name)")
        defer { staging.discard() }
        return try store.withStoreLock {
            _ = try catalog.require(name)
            return try LayeredChanges(catalog: catalog, store: store, layers: layers)
                .withFrozenContent(of: name, staging: staging) { $0.layers }
        }
    }

    /// Publishes a built image: layers `stack`, a fresh writable layer, `description`, and as
    /// its parent the image `base` it was built on, when there is one. An image of that name is
    /// replaced only when it was built from a recipe too.
    func publish(_ name: ImageName, stack: [String], base: ImageName?, description: String?, recipe: String) throws {
        let staging = try staging.make("build-\(name)")
        defer { staging.discard() }
        try store.withStoreLock {
            // contentLayers made the base layered, if it was not.
            var parent: String?
            if let base, case .layered(let found)? = try catalog.lookup(base) { parent = found.id }
            switch try catalog.lookup(name) {
            case nil:
                try stage(name, stack: stack, id: randomSuffix(), parent: parent, description: description, recipe: recipe, in: staging)
                try staging.directory.rename("record", to: FilePath(name.rawValue), in: store.images, .noReplace)
                store.afterCommit("build-sync", done: "built '\(name)'") { try store.images.sync() }
            case .layered(let old)? where old.recipe != nil:
                try catalog.withLock(name, .exclusive, for: .change) { _ in
                    try ImageMounts(catalog: catalog, store: store).refuseMounted(name)
                    // The rebuilt image's tree replaces the old one at ROOT/NAME.
                    try ImageMounts(catalog: catalog, store: store).releaseTree(name)
                    try stage(name, stack: stack, id: old.id, parent: parent, description: description, recipe: recipe, in: staging)
                    try staging.directory.rename("record", to: FilePath(name.rawValue), in: store.images, .exchange)
                    store.afterCommit("build-sync", done: "built '\(name)'") { try store.images.sync() }
                    store.afterCommit("build-cleanup", done: "built '\(name)'") { try layers.discard(old.upper, into: staging) }
                }
            default:
                throw StoreError(.exists, "image '\(name)' exists and was not built from a recipe; remove it, or build under another name with --name")
            }
            if let built = try records.read(name) {
                store.afterCommit("build-mount", done: "built '\(name)'") { try ImageMounts(catalog: catalog, store: store).mountTree(name, built) }
            }
        }
    }

    /// Stages the record of a built image, with its fresh writable layer installed.
    private func stage(_ name: ImageName, stack: [String], id: String, parent: String?, description: String?,
                       recipe: String, in staging: Staging) throws {
        let upper = try layers.stage(in: staging, over: stack)
        let made = LayerStack(id: id, created: Int64(time(nil)), parent: parent, readOnly: false,
                              layers: stack, upper: upper, description: description, recipe: recipe)
        try records.stage(made, as: "record", in: staging)
        try layers.install(upper, from: staging)
    }
}
