import BerthSystem
import Glibc
import SystemPackage

/// `.berth/layers` and `.berth/work`: the layers overlayfs stacks, and the work directories of
/// the writable ones.
///
/// A layer becomes part of an image only when a record naming it is published (a rename);
/// layers moved here before that are unnamed, and `gc` frees them. A layer a record lists among
/// its frozen `layers` is never written again, so its usage is measured once (UsageFigures).
struct LayerStore {
    let store: StoreDirectories
    let figures: UsageFigures
    var directory: Directory { store.layers }

    /// Makes an empty writable layer and its work directory in `staging`; the layer's root gets
    /// `template`'s mode, owner and times, because overlayfs shows the upper root's as the
    /// merged root's. `install` moves both into place.
    func stage(in staging: Staging, like template: Descriptor) throws -> String {
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

    /// Stages a writable layer shaped like the top of `stack` (bottom first).
    func stage(in staging: Staging, over stack: [String]) throws -> String {
        guard let top = stack.last else { throw StoreError(.invalidInput, "a stack of layers cannot be empty") }
        return try stage(in: staging, like: open(top).descriptor)
    }

    /// Moves writable layer `id` and its work directory from `staging` into place, durable
    /// before any record can name it.
    func install(_ id: String, from staging: Staging) throws {
        try staging.directory.rename(FilePath("layer-\(id)"), to: FilePath(id), in: store.layers, .noReplace)
        try staging.directory.rename(FilePath("work-\(id)"), to: FilePath(id), in: store.work, .noReplace)
        try store.layers.sync()
        try store.work.sync()
    }

    /// Moves the finished frozen layer `layer-ID` from `staging` into place, durable first, and
    /// measures it once. No record names it as writable: it is frozen from here on.
    func keep(_ id: String, from staging: Staging) throws {
        let bytes = try staging.directory.diskUsage(FilePath("layer-\(id)"))
        try store.staging.descriptor.syncFileSystem()
        try store.withStoreLock {
            try staging.directory.rename(FilePath("layer-\(id)"), to: FilePath(id), in: store.layers, .noReplace)
            try store.layers.sync()
        }
        figures.recordLayer(id, bytes: bytes)
    }

    func open(_ id: String) throws -> Directory {
        do {
            return try store.layers.openDirectory(beneath: FilePath(id))
        } catch let error as SystemError where error.errno == .noSuchFileOrDirectory {
            throw StoreError(.systemFailure, "layer \(id) is missing from \(store.statePath)/layers; the store was changed by hand")
        }
    }

    func exists(_ id: String) throws -> Bool { try store.layers.status(FilePath(id)) != nil }

    /// An upper layer that holds nothing and whose root looks like the one below adds nothing:
    /// freezing it would only lengthen the stack.
    func isPristine(_ stack: LayerStack) throws -> Bool {
        let upper = try open(stack.upper)
        guard try upper.entryNames().isEmpty, let below = stack.layers.last else { return false }
        let (a, b) = (try upper.descriptor.status(), try open(below).descriptor.status())
        return a.permissions == b.permissions && a.uid == b.uid && a.gid == b.gid
    }

    /// The bytes layer `id` takes: a frozen layer's figure when there is one, else a walk.
    func usage(_ id: String, frozen: Bool) throws -> Int64 {
        if frozen, let bytes = figures.layer(id) { return bytes }
        return try store.layers.diskUsage(FilePath(id))
    }

    /// Moves layer `id` (and a writable one's work directory) into `staging`, which deletes
    /// them; returns the bytes that frees.
    @discardableResult
    func discard(_ id: String, into staging: Staging) throws -> Int64 {
        var bytes: Int64 = 0
        if try exists(id) {
            bytes = (try? usage(id, frozen: true)) ?? 0
            try store.layers.rename(FilePath(id), to: FilePath("old-layer-\(id)"), in: staging.directory, .noReplace)
        }
        if try store.work.status(FilePath(id)) != nil {
            try store.work.rename(FilePath(id), to: FilePath("old-work-\(id)"), in: staging.directory, .noReplace)
        }
        figures.forgetLayer(id)
        return bytes
    }
}
