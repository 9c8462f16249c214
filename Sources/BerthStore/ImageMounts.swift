import BerthSystem
import Glibc
import SystemPackage

/// The merged trees of layered images on the host: overlays of the store's layers, mounted for
/// a build step or an export in staging, and by `berth mount` wherever the user asks. A
/// `mounted` marker in the image's record says where `berth mount` put one; while it is there
/// the image counts as in use.
///
/// This is the one place that mounts layers, so that keeping every image's tree mounted at
/// `STORE/NAME` can grow here.
struct ImageMounts {
    let catalog: ImageCatalog
    let store: StoreDirectories

    private var records: ImageRecords { ImageRecords(store: store) }

    /// Mounts `use`'s overlay onto the directory `target` is open on, on the host, with
    /// `attributes` (nosuid and nodev unless the caller asks otherwise: a tree on the host must
    /// not give its setuid programs or device nodes to whoever can reach it).
    func mountOverlay(_ use: ImageUse, onto target: Descriptor, attributes: MountAttributes = [.noSetUID, .noDevices]) throws {
        let upper = try use.upperID.map {
            (try store.layers.openDirectory(beneath: FilePath($0), pathOnly: true).descriptor,
             try store.work.openDirectory(beneath: FilePath($0), pathOnly: true).descriptor)
        }
        try mountLayers(use.layerIDs, upper: upper, onto: target, readOnly: use.readOnly, attributes: attributes)
    }

    /// Mounts an overlay of the store's layers `lowerIDs` (top first), each opened beneath
    /// `.berth/layers`, and `upper`, onto the directory `target` is open on.
    func mountLayers(_ lowerIDs: [String], upper: (layer: Descriptor, work: Descriptor)?,
                     onto target: Descriptor, readOnly: Bool = false, attributes: MountAttributes = []) throws {
        let lowers = try lowerIDs.map { try store.layers.openDirectory(beneath: FilePath($0), pathOnly: true).descriptor }
        try Mount.overlay(lowers: lowers, upper: upper, onto: target, readOnly: readOnly, attributes: attributes)
    }

    /// Runs `body` with `use`'s merged tree at a path: a directory image's own tree, or a layered
    /// image's overlay mounted read-only in staging for the time of the call.
    func withMergedTree<T>(_ use: ImageUse, _ body: (FilePath) throws -> T) throws -> T {
        guard use.isLayered else { return try body(use.root) }
        let staging = try StagingArea(store: store).make("merged-\(use.name)")
        defer { staging.discard() }
        try staging.directory.makeDirectory("tree", mode: 0o700)
        try mountOverlay(use, onto: staging.directory.openDirectory(beneath: "tree").descriptor)
        let tree = staging.path.appending("tree")
        defer { try? Mount.unmount(tree, detach: true) }
        return try body(tree)
    }

    // MARK: berth mount and umount

    /// Mounts layered image `name`'s merged tree at `directory` on the host, writable unless the
    /// image is read-only, with `attributes`. The image counts as in use until `unmount`.
    func mount(_ name: ImageName, at directory: FilePath, attributes: MountAttributes, uses: ImageUses) throws {
        guard let target = realPath(directory), try FileStatus.of(target)?.kind == .directory else {
            throw StoreError(.invalidInput, "cannot mount on \(directory): it is not a directory; make it first")
        }
        try store.withStoreLock {
            guard case .layered = try catalog.require(name) else {
                throw StoreError(.invalidInput, "'\(name)' is a directory image: its tree is \(catalog.root.appending(name.rawValue)) already; clone it for a layered image to mount")
            }
            let use = try uses.use(name, .writable, for: .change)
            let record = try records.recordDirectory(name)
            // The marker first: a crash before the mount leaves a marker that names no mount,
            // which counts as stale.
            let marker = try record.openFile("mounted", O_WRONLY | O_CREAT | O_TRUNC, mode: 0o600)
            try marker.writeAll(target.string)
            try marker.sync()
            do {
                try mountOverlay(use, onto: Directory(opening: target).descriptor, attributes: attributes)
            } catch {
                try? record.remove("mounted", isDirectory: false)
                throw StoreError.wrapping(error, "cannot mount '\(name)' on \(directory)")
            }
        }
    }

    /// Unmounts what `mount` put at `directory`.
    func unmount(_ directory: FilePath) throws {
        guard let target = realPath(directory) else { throw StoreError(.notFound, "\(directory) does not exist") }
        try store.withStoreLock {
            for (name, _) in try records.stacks() where try marker(name) == target {
                do {
                    try Mount.unmount(target)
                } catch let error as SystemError where error.errno == .resourceBusy {
                    throw StoreError(.inUse, "\(directory) is busy: a process is using it; leave it and try again")
                } catch let error as SystemError where error.errno == .invalidArgument {
                    // Not mounted any more (unmounted by hand): only the marker is left.
                }
                try records.recordDirectory(name).remove("mounted", isDirectory: false)
                return
            }
            throw StoreError(.notFound, "no image of \(catalog.root) is mounted at \(directory); 'berth mount NAME DIR' mounts one")
        }
    }

    private func marker(_ name: ImageName) throws -> FilePath? {
        let record = try records.recordDirectory(name)
        guard try record.status("mounted") != nil else { return nil }
        return FilePath(String(decoding: try record.openFile("mounted", O_RDONLY).readAll(limit: 8192), as: UTF8.self))
    }

    /// Where `name` is mounted by `berth mount`; nil when it is not. A marker whose mount is gone
    /// (unmounted by hand, or the host restarted) is removed when `tidying`.
    func mountedAt(_ name: ImageName, tidying: Bool = true) throws -> FilePath? {
        guard let at = try marker(name) else { return nil }
        if try Mount.table().contains(where: { $0.path == at && $0.type == "overlay" }) { return at }
        if tidying { try? records.recordDirectory(name).remove("mounted", isDirectory: false) }
        return nil
    }

    func refuseMounted(_ name: ImageName) throws {
        if let at = try mountedAt(name) {
            throw StoreError(.inUse, "image '\(name)' is mounted at \(at); 'berth umount \(at)' first")
        }
    }
}
