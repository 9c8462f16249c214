import BerthSystem
import Glibc
import SystemPackage

/// How a run or a mount uses an image.
public enum ImageAccess: Sendable {
    /// Changes are kept: the user holds the image alone.
    case writable
    /// Nothing can be changed; others may read alongside.
    case readOnly
    /// Changes go to a throwaway layer; others may read alongside.
    case ephemeral
}

/// An image held for use, with what it takes to show its tree: a directory image's own tree,
/// or a layered image's layers for an overlay. The lock is held for as long as this lives.
public struct ImageUse {
    public let name: ImageName
    /// The container's root: a directory image's tree, or the directory a layered image's
    /// overlay covers.
    public let root: FilePath
    /// Used read-only: asked for, or the image is marked read-only (as nspawn runs such images).
    public let readOnly: Bool
    let lock: Descriptor
    /// The layers to stack by id, top first (none for a directory image), and the writable
    /// layer's, for a writable use of a layered image.
    let layerIDs: [String]
    let upperID: String?
    /// The store's, to name the layers by path.
    let statePath: FilePath

    /// The layers to stack, top first; empty for a directory image.
    public var lowerLayers: [FilePath] { layerIDs.map { ImageStore.layerPath($0, in: statePath) } }
    /// The writable layer and its overlay work directory, for a writable use of a layered image.
    public var upper: (layer: FilePath, work: FilePath)? {
        upperID.map { (ImageStore.layerPath($0, in: statePath), ImageStore.workPath($0, in: statePath)) }
    }

    public var isLayered: Bool { !layerIDs.isEmpty }
    /// The descriptor holding the image's lock, for a process that takes over its use.
    public var lockDescriptor: Int32 { lock.rawValue }
}

extension ImageStore {
    /// Takes `name` for use: exclusively for a writable use, shared for the others. Refused with
    /// a clear error when a writer has it, or when it is mounted by `berth mount`.
    public func use(_ name: ImageName, _ access: ImageAccess) throws -> ImageUse {
        guard let found = try lookup(name) else { throw noImage(name) }
        let markedReadOnly: Bool
        switch found {
        case .directory:
            let tree = try rootDirectory.openFile(FilePath(name.rawValue), O_RDONLY | O_DIRECTORY)
            markedReadOnly = (tree.inodeFlags() ?? 0) & immutableFlag != 0
        case .layered(let stack):
            markedReadOnly = stack.readOnly
        }
        let writes = access == .writable && !markedReadOnly
        guard let lock = try lockImage(name, writes ? .exclusive : .shared) else {
            throw StoreError("image '\(name)' is in use by another container; stop it, or run this one --read-only or --ephemeral")
        }
        let readOnly = access == .readOnly || (access == .writable && markedReadOnly)
        // Read again under the lock: a clone may have frozen the upper layer meanwhile.
        switch try lookup(name) {
        case .directory?:
            return ImageUse(name: name, root: path(of: name), readOnly: readOnly, lock: lock, layerIDs: [], upperID: nil,
                            statePath: statePath)
        case .layered(let stack)?:
            try refuseMounted(name)
            let layers = (writes ? stack.layers : stack.allLayers).reversed() as [String]
            return ImageUse(name: name, root: mountPoint(of: name), readOnly: readOnly, lock: lock, layerIDs: layers,
                            upperID: writes ? stack.upper : nil, statePath: statePath)
        case nil:
            throw noImage(name)
        }
    }

    /// Mounts `use`'s overlay onto the directory `target` is open on, on the host, with
    /// `attributes` (nosuid and nodev unless the caller asks otherwise: a tree on the host must
    /// not give its setuid programs or device nodes to whoever can reach it).
    private func mountOverlay(_ use: ImageUse, onto target: Descriptor,
                              attributes: MountAttributes = [.noSetUID, .noDevices]) throws {
        let upper = try use.upperID.map {
            (try layersDirectory.openDirectory(beneath: FilePath($0), pathOnly: true).descriptor,
             try workDirectory.openDirectory(beneath: FilePath($0), pathOnly: true).descriptor)
        }
        try mountLayers(use.layerIDs, upper: upper, onto: target, readOnly: use.readOnly, attributes: attributes)
    }

    /// Mounts an overlay of the store's layers `lowerIDs` (top first), each opened beneath
    /// `.berth/layers`, and `upper`, onto the directory `target` is open on.
    func mountLayers(_ lowerIDs: [String], upper: (layer: Descriptor, work: Descriptor)?,
                     onto target: Descriptor, readOnly: Bool = false, attributes: MountAttributes = []) throws {
        let lowers = try lowerIDs.map { try layersDirectory.openDirectory(beneath: FilePath($0), pathOnly: true).descriptor }
        try Mount.overlay(lowers: lowers, upper: upper, onto: target, readOnly: readOnly, attributes: attributes)
    }

    /// Runs `body` with `name`'s merged tree at a path: a directory image's own tree, or a layered
    /// image's overlay mounted read-only in staging for the time of the call.
    func withMergedTree<T>(_ name: ImageName, _ body: (FilePath) throws -> T) throws -> T {
        let use = try self.use(name, .readOnly)
        guard use.isLayered else { return try body(use.root) }
        let staging = try makeStaging("merged-\(name)")
        defer { staging.discard() }
        try staging.directory.makeDirectory("tree", mode: 0o700)
        try mountOverlay(use, onto: staging.directory.openDirectory(beneath: "tree").descriptor)
        let tree = statePath.appending("staging").appending(staging.name.components).appending("tree")
        defer { try? Mount.unmount(tree, detach: true) }
        return try body(tree)
    }

    // MARK: berth mount and umount

    /// Mounts layered image `name`'s merged tree at `directory` on the host, writable unless the
    /// image is read-only, with `attributes` (by default nosuid and nodev). The image counts as
    /// in use until `unmount`.
    public func mount(_ name: ImageName, at directory: FilePath, attributes: MountAttributes = [.noSetUID, .noDevices]) throws {
        guard let target = realPath(directory), try FileStatus.of(target)?.kind == .directory else {
            throw StoreError("cannot mount on \(directory): it is not a directory; make it first")
        }
        try withStoreLock {
            guard let found = try lookup(name) else { throw noImage(name) }
            guard case .layered = found else {
                throw StoreError("'\(name)' is a directory image: its tree is \(path(of: name)) already; clone it for a layered image to mount")
            }
            let use = try self.use(name, .writable)
            let record = try recordDirectory(name)
            // The marker first: a crash before the mount leaves a marker that names no mount,
            // which counts as stale.
            let marker = try record.openFile("mounted", O_WRONLY | O_CREAT | O_TRUNC, mode: 0o600)
            try marker.writeAll(target.string)
            try marker.sync()
            do {
                try mountOverlay(use, onto: Directory(opening: target).descriptor, attributes: attributes)
            } catch {
                try? record.remove("mounted", isDirectory: false)
                throw StoreError("cannot mount '\(name)' on \(directory): \(error)")
            }
        }
    }

    /// Unmounts what `mount` put at `directory`.
    public func unmount(_ directory: FilePath) throws {
        guard let target = realPath(directory) else { throw StoreError("\(directory) does not exist") }
        try withStoreLock {
            for (name, _) in try stacks() where try mountMarker(name) == target {
                do {
                    try Mount.unmount(target)
                } catch let error as SystemError where error.errno == .resourceBusy {
                    throw StoreError("\(directory) is busy: a process is using it; leave it and try again")
                } catch let error as SystemError where error.errno == .invalidArgument {
                    // Not mounted any more (unmounted by hand): only the marker is left.
                }
                try recordDirectory(name).remove("mounted", isDirectory: false)
                return
            }
            throw StoreError("no image of \(root) is mounted at \(directory); 'berth mount NAME DIR' mounts one")
        }
    }

    private func mountMarker(_ name: ImageName) throws -> FilePath? {
        let record = try recordDirectory(name)
        guard try record.status("mounted") != nil else { return nil }
        return FilePath(String(decoding: try record.openFile("mounted", O_RDONLY).readAll(limit: 8192), as: UTF8.self))
    }

    /// Where `name` is mounted by `berth mount`; nil when it is not. A marker whose mount is gone
    /// (unmounted by hand, or the host restarted) is removed.
    func mountedAt(_ name: ImageName) throws -> FilePath? {
        guard let at = try mountMarker(name) else { return nil }
        if try Mount.table().contains(where: { $0.path == at && $0.type == "overlay" }) { return at }
        try? recordDirectory(name).remove("mounted", isDirectory: false)
        return nil
    }

    func refuseMounted(_ name: ImageName) throws {
        if let at = try mountedAt(name) {
            throw StoreError("image '\(name)' is mounted at \(at); 'berth umount \(at)' first")
        }
    }
}
