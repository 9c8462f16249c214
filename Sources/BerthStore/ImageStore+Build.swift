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
    let store: ImageStore

    /// Runs `body` with the merged tree mounted writable at `mountPoint` on the host, then unmounts.
    public func withMergedTree<T>(_ body: (Directory) throws -> T) throws -> T {
        let directory = O_RDONLY | O_DIRECTORY
        let upper = (try Descriptor.open(self.upper, directory), try Descriptor.open(work, directory))
        try store.mountLayers(lowerIDs, upper: upper, onto: Descriptor.open(mountPoint, directory))
        defer { try? Mount.unmount(mountPoint, detach: true) }
        return try body(Directory(opening: mountPoint))
    }
}

/// The build cache and the steps of `berth build`: each step's result is one frozen layer, and
/// `.berth/cache/KEY` names the stack of layers a step's key stands for.
extension ImageStore {
    private func cacheDirectory() throws -> Directory {
        let state = try rootDirectory.openDirectory(beneath: Self.stateName)
        do {
            try state.makeDirectory("cache", mode: 0o700)
        } catch let error as SystemError where error.errno == .fileExists {}
        return try state.openDirectory(beneath: "cache")
    }

    /// The stack (bottom first) cached under `key`, when it is there and all its layers are.
    public func cachedStack(_ key: String) throws -> [String]? {
        try cachedStack(key, in: cacheDirectory())
    }

    private func cachedStack(_ key: String, in cache: Directory) throws -> [String]? {
        guard LayerStack.isCacheKey(key), try cache.status(FilePath(key)) != nil else { return nil }
        let text = String(decoding: try cache.openFile(FilePath(key), O_RDONLY).readAll(limit: 1 << 20), as: UTF8.self)
        let stack = text.split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init)
        guard !stack.isEmpty, stack.allSatisfy(LayerStack.isLayerName),
              try stack.allSatisfy({ try layersDirectory.status(FilePath($0)) != nil }) else { return nil }
        return stack
    }

    /// Every stack the cache names, for gc.
    func cachedStacks() throws -> [[String]] {
        let cache = try cacheDirectory()
        return try cache.entryNames().compactMap { try cachedStack($0.string, in: cache) }
    }

    /// Forgets every cache entry (their layers go with the next gc, unless an image uses them).
    public func dropCache() throws {
        try withStoreLock {
            let cache = try cacheDirectory()
            for entry in try cache.entryNames() { try cache.remove(entry, isDirectory: false) }
        }
    }

    /// Records `stack` under `key`, replacing what was there, in one rename.
    public func cacheStack(_ key: String, _ stack: [String]) throws {
        precondition(LayerStack.isCacheKey(key))
        let cache = try cacheDirectory()
        let partial = FilePath(".\(key).\(randomSuffix())")
        let file = try cache.createFile(partial, mode: 0o600)
        try file.writeAll(stack.joined(separator: " ") + "\n")
        try file.sync()
        try cache.rename(partial, to: FilePath(key), .replace)
        try cache.sync()
    }

    /// Makes a bottom layer: `fill` gets an empty directory (mode 0755) and puts a tree in it.
    /// The layer is kept only when `fill` returns.
    public func makeBaseLayer(_ fill: (FilePath) throws -> Void) throws -> String {
        let staging = try makeStaging("base")
        defer { staging.discard() }
        let id = randomSuffix()
        try staging.directory.makeDirectory(FilePath("layer-\(id)"), mode: 0o755)
        try fill(statePath.appending("staging").appending(staging.name.components).appending("layer-\(id)"))
        try keepLayer(id, from: staging)
        return id
    }

    /// Moves the finished layer `id` from staging into `.berth/layers`, durable first. No record
    /// names it as writable: it is frozen from here on.
    private func keepLayer(_ id: String, from staging: Staging) throws {
        try stagingDirectory.descriptor.syncFileSystem()
        try withStoreLock {
            try staging.directory.rename(FilePath("layer-\(id)"), to: FilePath(id), in: layersDirectory, .noReplace)
            try layersDirectory.sync()
        }
    }

    /// A bottom layer holding the tarball at `path`, whose SHA-256 must be `sha256`.
    public func makeBaseLayer(fromTarball path: FilePath, sha256: String) throws -> String {
        try makeBaseLayer { tree in
            var options = ImportOptions()
            options.expectedSHA256 = sha256
            let (_, _, digest) = try extract(.tarball(path), into: Directory(opening: tree), options: options)
            if let digest, digest != sha256 {
                throw StoreError("\(path) has SHA-256 \(digest), not the \(sha256) the recipe gives")
            }
        }
    }

    /// Makes a layer over `stack` (bottom first): `fill` changes the merged tree through the
    /// `LayerInProgress` (a container's overlay, or a mount), and the layer holds what changed.
    /// It is frozen at once: no image writes to it, and it is kept only when `fill` returns.
    public func makeLayer(on stack: [String], _ fill: (LayerInProgress) throws -> Void) throws -> String {
        let staging = try makeStaging("step")
        defer { staging.discard() }
        let id = try stageLayer(in: staging, like: openLayer(stack.last!).descriptor)
        try staging.directory.makeDirectory("root", mode: 0o700)
        let base = statePath.appending("staging").appending(staging.name.components)
        let lowerIDs = Array(stack.reversed())
        try fill(LayerInProgress(lowerLayers: lowerIDs.map(layerPath), upper: base.appending("layer-\(id)"),
                                 work: base.appending("work-\(id)"), mountPoint: base.appending("root"),
                                 lowerIDs: lowerIDs, store: self))
        try keepLayer(id, from: staging)
        return id
    }

    /// The frozen layers holding image `name`'s content, for a build to start from. A directory
    /// image becomes layered, as for a clone.
    public func contentLayers(of name: ImageName) throws -> [String] {
        let staging = try makeStaging("base-\(name)")
        defer { staging.discard() }
        return try withStoreLock {
            guard try lookup(name) != nil else { throw noImage(name) }
            let (stack, lock) = try frozenContent(of: name, staging: staging)
            withExtendedLifetime(lock) {}
            return stack.layers
        }
    }

    /// Publishes a built image: layers `stack`, a fresh writable layer, `description`. An image
    /// of that name is replaced only when it was built from a recipe too.
    public func publishBuilt(_ name: ImageName, stack: [String], description: String?, recipe: String) throws {
        let staging = try makeStaging("build-\(name)")
        defer { staging.discard() }
        try withStoreLock {
            let existing = try lookup(name)
            var replaced: LayerStack?
            switch existing {
            case nil: break
            case .layered(let old)? where old.recipe != nil:
                guard try lockImage(name, .exclusive) != nil else { throw inUse(name) }
                try refuseMounted(name)
                replaced = old
            default:
                throw StoreError("image '\(name)' exists and was not built from a recipe; remove it, or build under another name with --name")
            }
            let upper = try stageLayer(in: staging, like: openLayer(stack.last!).descriptor)
            let made = LayerStack(id: replaced?.id ?? randomSuffix(), created: Int64(time(nil)), parent: nil, readOnly: false,
                                  layers: stack, upper: upper, description: description, recipe: recipe)
            try staging.directory.makeDirectory("record", mode: 0o700)
            try writeStack(made, in: staging.directory.openDirectory(beneath: "record"))
            try installLayer(upper, from: staging)
            if let replaced {
                try staging.directory.rename("record", to: FilePath(name.rawValue), in: imagesDirectory, .exchange)
                afterCommit("build-sync", done: "built '\(name)'") { try imagesDirectory.sync() }
                afterCommit("build-cleanup", done: "built '\(name)'") { try discardLayer(replaced.upper, into: staging) }
            } else {
                try staging.directory.rename("record", to: FilePath(name.rawValue), in: imagesDirectory, .noReplace)
                afterCommit("build-sync", done: "built '\(name)'") { try imagesDirectory.sync() }
            }
        }
    }
}
