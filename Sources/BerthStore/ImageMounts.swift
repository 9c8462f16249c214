import BerthSystem
import Glibc
import SystemPackage

/// The merged trees of layered images on the host: each image's overlay of its frozen layers and
/// its own writable layer, mounted at `ROOT/NAME` (read-only for a read-only image), so that
/// systemd-nspawn, machinectl, backup tools and `ls` find every image where a directory image
/// would be, and share exactly what berth runs; and `berth mount`'s binds of those trees
/// wherever the user asks. A `mounted` marker in the image's record says where `berth mount`
/// put one; while it is there the image counts as in use.
///
/// The trees are the store's state, but not its record: a tree missing (after the host
/// restarted, or a run or change killed before it could mount it again) is mounted again by the
/// next berth command (`restoreTrees`), and `berth mount --all` does it at the host's boot. A
/// writable layer is only ever the upper of one overlay: a change to an image's layers, or a run
/// that mounts its own overlay (under a user namespace, over idmapped layers), first takes the
/// tree away (`releaseTree`), which it refuses while anything uses the tree, here or in another
/// mount namespace; the run's supervisor mounts it again when the machine ends.
///
/// This is the one place that mounts layers on the host.
struct ImageMounts {
    let catalog: ImageCatalog
    let store: StoreDirectories

    private var records: ImageRecords { ImageRecords(store: store) }

    /// Mounts an overlay of the store's layers `lowerIDs` (top first), each opened beneath
    /// `.berth/layers`, and `upper`, onto the directory `target` is open on.
    func mountLayers(_ lowerIDs: [String], upper: (layer: Descriptor, work: Descriptor)?,
                     onto target: Descriptor, readOnly: Bool = false, attributes: MountAttributes = []) throws {
        let lowers = try lowerIDs.map { try store.layers.openDirectory(beneath: FilePath($0), pathOnly: true).descriptor }
        try Mount.overlay(lowers: lowers, upper: upper, onto: target, readOnly: readOnly, attributes: attributes)
    }

    /// Runs `body` with `use`'s merged tree at a path: a directory image's own tree, or a layered
    /// image's tree at `ROOT/NAME`, mounted first if it is missing.
    func withMergedTree<T>(_ use: ImageUse, _ body: (FilePath) throws -> T) throws -> T {
        guard use.isLayered else { return try body(use.root) }
        try mountTree(use.name)
        return try body(treePath(use.name))
    }

    /// Mounts layered image `name`'s tree at `ROOT/NAME` unless it is there, under the store
    /// lock; nothing for a directory image.
    func mountTree(_ name: ImageName) throws {
        guard case .layered(let stack) = try catalog.require(name) else { return }
        try store.withStoreLock { try mountTree(name, stack) }
    }

    // MARK: The trees at ROOT/NAME

    func treePath(_ name: ImageName) -> FilePath { catalog.root.appending(name.rawValue) }

    /// The store's root, opened now: the directory the store opened may be the one under the
    /// root's own mount (`shareRoot`), where the trees are not.
    private func treeRoot() throws -> Directory { try Directory(opening: catalog.root) }

    /// Whether `name`'s tree is mounted at `ROOT/NAME`.
    func isTreeMounted(_ name: ImageName) throws -> Bool {
        let root = try treeRoot()
        guard try root.status(FilePath(name.rawValue))?.kind == .directory else { return false }
        return try root.openDirectory(beneath: FilePath(name.rawValue), crossingMounts: true).descriptor.isOverlay()
    }

    /// Mounts layered image `name`'s tree (of `stack`) at `ROOT/NAME`, making the mount point
    /// when it is missing and `makingMountPoint`; nothing when it is mounted already. A
    /// read-only image is an overlay of all its layers with no writable one. The caller holds the
    /// store lock, so no two commands mount it at once.
    func mountTree(_ name: ImageName, _ stack: LayerStack, makingMountPoint: Bool = true) throws {
        let entry = FilePath(name.rawValue)
        if try catalog.rootDirectory.status(entry) == nil {
            guard makingMountPoint else { return }
            try catalog.rootDirectory.makeDirectory(entry, mode: 0o755)
        }
        try shareRoot()
        let mountPoint = try treeRoot().openDirectory(beneath: entry, crossingMounts: true)
        if try mountPoint.descriptor.isOverlay() { return }
        guard try mountPoint.entryNames().isEmpty else {
            throw StoreError(.inUse, "cannot mount image '\(name)' at \(treePath(name)): a directory that is not empty is there; move it out of the store")
        }
        if stack.readOnly {
            try mountLayers(stack.allLayers.reversed(), upper: nil, onto: mountPoint.descriptor)
        } else {
            let upper = (try store.layers.openDirectory(beneath: FilePath(stack.upper), pathOnly: true).descriptor,
                         try store.work.openDirectory(beneath: FilePath(stack.upper), pathOnly: true).descriptor)
            try mountLayers(stack.layers.reversed(), upper: upper, onto: mountPoint.descriptor)
        }
    }

    /// Takes `name`'s tree away from `ROOT/NAME` (the mount point stays) before something else
    /// uses its writable layer: refused, with the tree left as it was, while a process uses it
    /// (an open file, its working or root directory), here or through a copy of the mount in a
    /// mount namespace of its own that the unmount would not reach, where it would succeed and
    /// leave the overlay alive on the layer. The caller holds the image's lock.
    func releaseTree(_ name: ImageName) throws {
        guard try isTreeMounted(name), let path = realPath(treePath(name)) else { return }
        // A container's setup process starting anywhere holds a copy of the host's mounts, these
        // trees among them, for the millisecond until it pivots away: that one is waited out.
        let transient: Set<String> = ["berth-stage", "berth"]
        func holder() throws -> MountHolder? {
            let table = try Mount.entries()
            guard let tree = table.last(where: { $0.point == path }) else { return nil }
            return Mount.otherHolder(of: tree, in: table, lastResort: transient)
        }
        func isTransient(_ holder: MountHolder?) -> Bool {
            if case .process(_, let command) = holder { return transient.contains(command) }
            return false
        }
        var found = try holder()
        for _ in 0..<50 where isTransient(found) {
            usleep(10_000)
            found = try holder()
        }
        switch found {
        case .mount(let point):
            throw StoreError(.inUse, "image '\(name)' is in use: its tree is mounted at \(point) as well; unmount it there first")
        case .process(let pid, let command):
            throw StoreError(.inUse, "image '\(name)' is in use: process \(pid) (\(Printable.escaping(command))) has its tree mounted; stop it first")
        case nil:
            break
        }
        do {
            try Mount.unmount(path)
        } catch let error as SystemError where error.errno == .resourceBusy {
            throw StoreError(.inUse, "image '\(name)' is in use: a process has a file open in \(path), or works there; leave it first ('fuser -vm \(path)' names it)")
        }
    }

    /// Makes the mount the trees go on a shared one, as every mount is on a host whose PID 1 is
    /// systemd: then a tree taken away here is taken away too from each mount namespace that
    /// copied the host's mounts and kept receiving its events (systemd-nspawn's containers, a
    /// service's PrivateTmp=), where the copy would otherwise keep the overlay alive on its
    /// writable layer for as long as that namespace lives, and count as a use of the image.
    /// Where that mount is private, the root becomes a mount of its own (a bind onto itself),
    /// shared; not over trees already mounted beneath it (a store an earlier berth kept, until
    /// the host restarts), which it would hide. The caller holds the store lock.
    private func shareRoot() throws {
        guard let root = realPath(catalog.root) else { return }
        let table = try Mount.entries()
        guard let mount = Mount.containing(root, in: table), mount.peerGroup == nil else { return }
        if mount.point != root {
            guard !table.contains(where: { $0.point.starts(with: root) }) else { return }
            try Mount.bind(root, at: root, recursive: false)
        }
        try Mount.makeShared(root)
    }

    /// Mounts every layered image's tree that is missing at `ROOT/NAME`, except where a writable
    /// run or a change holds the image (its tree is theirs). Returns the names mounted. Nothing
    /// is done, and no lock taken, when none is missing.
    @discardableResult
    func restoreTrees(makingMountPoints: Bool = true) throws -> [ImageName] {
        let missing = try records.stacks().filter { name, _ in
            try !isTreeMounted(name) && !store.holdsDirectoryImage(FilePath(name.rawValue))
        }
        guard !missing.isEmpty else { return [] }
        return try store.withStoreLock {
            var mounted: [ImageName] = []
            for (name, stack) in missing {
                guard let lock = try? catalog.lock(name, .shared, for: .read) else { continue }
                try mountTree(name, stack, makingMountPoint: makingMountPoints)
                if try isTreeMounted(name) { mounted.append(name) }
                withExtendedLifetime(lock) {}
            }
            return mounted
        }
    }

    // MARK: berth mount and umount

    /// Shows layered image `name`'s merged tree at `directory` on the host too, writable unless
    /// the image is read-only, with `attributes`: a bind of its tree at `ROOT/NAME`. The image
    /// counts as in use until `unmount`.
    func mount(_ name: ImageName, at directory: FilePath, attributes: MountAttributes, uses: ImageUses) throws {
        guard let target = realPath(directory), try FileStatus.of(target)?.kind == .directory else {
            throw StoreError(.invalidInput, "cannot mount on \(directory): it is not a directory; make it first")
        }
        try store.withStoreLock {
            guard case .layered(let stack) = try catalog.require(name) else {
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
                // A bind of the image's tree at ROOT/NAME: one overlay on its writable layer, ever.
                try mountTree(name, stack)
                let bind = try DetachedMount.copy(of: treePath(name), recursive: false)
                try bind.set(attributes, recursive: false)
                try bind.attach(onto: Directory(opening: target).descriptor)
                withExtendedLifetime(use) {}
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
