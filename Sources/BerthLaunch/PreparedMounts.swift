import BerthSystem
import CBerth
import Glibc
import SystemPackage

/// What the supervisor makes on the host for the container's setup process to attach beneath the
/// root before PID 1's namespaces are made (which locks them): detached mounts nobody else sees,
/// passed beside the launch description. The host paths of the image, the binds and the store
/// are looked up here, by the host's root, so the setup process, which works in the image's
/// tree, needs no host path; and an overlay is mounted here, by the host's root, because one
/// mounted in a user namespace would not see the whiteouts and opaque directories the store's
/// layers keep in trusted.* attributes.
///
/// Under a user namespace every tree from the host is shown through the container's id mapping
/// (`mapIDs`): owners stay 0-based on disk, and root inside sees its files as its own.
struct PreparedMounts {
    /// What each descriptor holds, in order: `LaunchSpec.descriptorRoles`.
    private(set) var roles: [String] = []
    private(set) var descriptors: [Descriptor] = []
    /// Host paths made for the container, removed when it ends (an overlay's work directory
    /// in the tree).
    private(set) var temporaryDirectories: [FilePath] = []

    private mutating func add(_ role: String, _ descriptor: Descriptor) {
        roles.append(role)
        descriptors.append(descriptor)
    }

    /// For the container whose setup process is `setup`: `userNamespace` (nil without one) maps
    /// ids as the container's will, onto `range`.
    init(for spec: LaunchSpec, setup: pid_t, userNamespace: Descriptor?, range: IDRange?, console: ConsoleRelay?) throws {
        // The identity mapping shows every owner as it is: nothing to map.
        let mapping = range.flatMap { $0.base == 0 ? nil : $0 }.flatMap { range in userNamespace.map { (range, $0) } }
        // Where the root is attached must be a directory of the setup process's mount namespace
        // (a copy of the host's): looked up through its own root.
        add("root-target", try Descriptor.open(FilePath("/proc/\(setup)/root").appending(spec.tree.root.components),
                                               CBERTH_O_PATH | O_DIRECTORY))
        let root = try Self.root(for: spec, mapping: mapping)
        add("root", root.descriptor)
        add("dev", try Self.devices(owner: range?.base ?? 0, console: console != nil).descriptor)
        if !spec.privateNetwork {
            // A fresh sysfs shows the network namespace of its mounter: with the host's network,
            // the host makes it (in a user namespace the first process could not); with a private
            // one, the first process mounts its own.
            add("sys", try DetachedMount.fileSystem("sysfs", attributes: [.readOnly, .noSetUID, .noDevices, .noExec]).descriptor)
        }
        if let console {
            let slave = try console.openSlave(owner: range?.base ?? 0)
            add("console-mount", try DetachedMount.copy(of: slave, recursive: false).descriptor)
            add("console", slave)
        }
        // The host's files bound over the image's (a symlinked time zone falls back to a bind
        // where the image lacks the zone).
        for (role, action, path) in [("resolv", spec.resolvConfAction, spec.resolvConf),
                                     ("localtime", spec.timezoneAction == .symlink ? .bind : spec.timezoneAction, "/etc/localtime")]
            where (action == .bind || action == .bindOver) && access(path.string, R_OK) == 0 {
            let file = try DetachedMount.copy(of: path, recursive: false)
            try Self.map(file, mapping, what: path.string)
            try file.set(.readOnly, recursive: false)
            add(role, file.descriptor)
        }
        for bind in spec.bindMounts where !bind.sourceInImage {
            guard try FileStatus.of(bind.source) != nil else {
                throw LaunchError("--bind source \(bind.source) does not exist")
            }
            let mount = try DetachedMount.copy(of: bind.source, recursive: bind.recursive)
            if bind.idmap { try Self.map(mount, mapping, what: "--bind source \(bind.source)", hint: ", or add :noidmap to the bind") }
            if bind.readOnly { try mount.set(.readOnly, recursive: bind.recursive) }
            add("bind", mount.descriptor)
        }
        // What is made in the tree goes again when a later mount fails: the start throws, and
        // nobody else knows of it.
        do {
            for overlay in spec.overlayMounts {
                let (made, work) = try Self.overlay(overlay, in: root, mapping: mapping, spec: spec)
                add("overlay", made.descriptor)
                temporaryDirectories += work.map { [$0] } ?? []
            }
            if spec.journalTreePart == .hostDirectory {
                let journal = try DetachedMount.copy(of: JournalLink.hostDirectory(spec.uuid), recursive: false)
                try Self.map(journal, mapping, what: JournalLink.hostDirectory(spec.uuid).string)
                add("journal", journal.descriptor)
            }
            if spec.asPID2 { add("init", try Self.sealedCopy(of: Supervisor.stageExecutable)) }
            if let socket = spec.notifySocket { add("notify", try DetachedMount.copy(of: socket, recursive: false).descriptor) }
        } catch {
            temporaryDirectories.forEach(Supervisor.removeTemporaryDirectory)
            throw error
        }
    }

    // MARK: The root

    /// The container's root: an overlay of the image's layers (or an ephemeral layer over the
    /// tree), or the directory itself.
    private static func root(for spec: LaunchSpec, mapping: (IDRange, Descriptor)?) throws -> DetachedMount {
        let tree = spec.tree
        guard spec.ephemeral || tree.isLayered else {
            let copy = try DetachedMount.copy(of: tree.root)
            try map(copy, mapping, what: tree.root.string)
            return copy
        }
        let lowers = tree.isLayered ? tree.lowerLayers : [tree.root]
        // One copy of the directory that holds every layer, mapped once: overlayfs wants the
        // writable layer and its work directory on one mount, and one mapping costs less than many.
        let holder = commonDirectory(of: lowers + (tree.upper.map { [$0.layer, $0.work] } ?? []))
        let layers = try DetachedMount.copy(of: holder)
        try map(layers, mapping, what: holder.string)
        func beneath(_ path: FilePath) -> FilePath {
            var relative = path
            _ = relative.removePrefix(holder)
            return layers.descriptor.procPath.appending(relative.components)
        }
        var upper: (layer: FilePath, work: FilePath)?
        var scratch: DetachedMount?
        // A read-only run of a layered image has no writable layer of its own, but the setup
        // may still have to make a bind's mount point: in a throwaway layer, before the setup
        // makes the root read-only. (Only then: the layer's root shows as the tree's root.)
        if spec.ephemeral || (tree.upper == nil && spec.readOnly && !spec.bindMounts.isEmpty) {
            // Changes go to a tmpfs that lives only as long as the overlay, which lives only as
            // long as the container's mount namespace.
            let tmpfs = try DetachedMount.fileSystem("tmpfs", options: [("mode", "0700")])
            let top = try FileStatus.of(lowers[0])
            let base = mapping?.0.base ?? 0
            let directory = Directory(tmpfs.descriptor, displayPath: "the ephemeral layer")
            // The upper root's mode and owner show as the merged root's: take the image's.
            try directory.makeDirectory("upper", mode: top?.permissions ?? 0o755)
            try directory.setOwner("upper", uid: (top?.uid ?? 0) + base, gid: (top?.gid ?? 0) + base)
            try directory.setMode("upper", top?.permissions ?? 0o755)
            try directory.makeDirectory("work", mode: 0o700)
            try directory.setOwner("work", uid: base, gid: base)
            upper = (tmpfs.descriptor.procPath.appending("upper"), tmpfs.descriptor.procPath.appending("work"))
            scratch = tmpfs
        } else if let writable = tree.upper {
            upper = (beneath(writable.layer), beneath(writable.work))
        }
        // Read-only (`spec.readOnly`) once the setup has attached everything beneath it.
        let mount = { try DetachedMount.overlay(lowers: lowers.map(beneath), upper: upper) }
        // Overlayfs does its own work on the layers (its work directory, copy-ups, whiteouts)
        // as whoever mounted it; through mapped layers that must be an id the mapping holds.
        let overlay = try mapping.map { try $0.0.asRoot(mount) } ?? mount()
        withExtendedLifetime(scratch) {}
        return overlay
    }

    /// nspawn's `--overlay=`: its layers, each the host's directory shown through the container's
    /// mapping or a path of the tree as the container finds it (mapped with the tree already),
    /// and the writable one with its work directory on one mount (overlayfs wants them so).
    /// Mounted as the mapped root, as the root's overlay is.
    /// A writable layer in the tree (`+PATH`) gets its work directory beside it there, made as
    /// the container's root; its host path (under `treePath`) is returned for removal.
    private static func overlay(_ overlay: LaunchSpec.OverlayMount, in root: DetachedMount, mapping: (IDRange, Descriptor)?,
                                spec: LaunchSpec) throws -> (DetachedMount, FilePath?) {
        let treePath = FilePath(spec.displayRoot ?? spec.tree.root.string)
        let tree = Directory(root.descriptor, displayPath: "the container's tree")
        var held: [DetachedMount] = []
        func shown(_ path: FilePath, inImage: Bool) throws -> DetachedMount {
            let copy: DetachedMount
            if inImage {
                do {
                    copy = try DetachedMount.copy(of: tree.openPath(inRoot: path), recursive: false)
                } catch let error as SystemError where error.errno == .noSuchFileOrDirectory {
                    throw LaunchError("--overlay layer +\(path) is not in the image: give a path of its tree after the +")
                }
            } else {
                guard try FileStatus.of(path)?.kind == .directory else { throw LaunchError("--overlay layer \(path) is not a directory of the host's") }
                copy = try DetachedMount.copy(of: path, recursive: false)
                try map(copy, mapping, what: "--overlay layer \(path)")
            }
            held.append(copy)
            return copy
        }
        let upperInTree = !overlay.readOnly && overlay.layersInImage.last == true
        let writable = !overlay.readOnly && (overlay.work != nil || upperInTree)
        let lowerCount = overlay.layers.count - (writable ? 1 : 0)
        // overlayfs takes its lower layers top first; nspawn lists them lowest first.
        let lowers = try (0..<lowerCount).reversed().map { try shown(overlay.layers[$0], inImage: overlay.layersInImage[$0]).descriptor.procPath }
        var upper: (layer: FilePath, work: FilePath)?
        var madeWork: FilePath?
        // A work directory made in the tree goes again unless the overlay is made.
        var removeWork: () -> Void = {}
        var made = false
        defer { if !made { removeWork() } }
        if upperInTree {
            // Its writes go to the image: not for a run that keeps the image as it is, and not
            // onto a root that is itself an overlay, which overlayfs refuses as a writable layer.
            guard !spec.readOnly, spec.volatile == .no, !spec.ephemeral, !spec.tree.isLayered else {
                throw LaunchError("--overlay's writable layer +\(overlay.layers.last ?? "/") is in the image, which this run does not write (read-only, volatile, ephemeral, or a layered image's tree): give a host directory, or an empty one for a fresh directory")
            }
        }
        if upperInTree, let top = overlay.layers.last {
            guard let name = top.lastComponent else { throw LaunchError("--overlay's writable layer cannot be the tree's root: give a directory in it") }
            // The layer's parent, as the container finds it, holds both (one mount, as overlayfs wants).
            let parentPath = FilePath(root: nil, top.removingLastComponent().components)
            let parent: Directory
            do {
                parent = try tree.openDirectory(inRoot: parentPath, creating: false)
                guard try parent.status(FilePath(root: nil, [name]))?.kind == .directory else { throw SystemError("stat", .noSuchFileOrDirectory) }
            } catch {
                throw LaunchError("--overlay's writable layer +\(top) is not a directory of the image: give one it has")
            }
            let work = FilePath(".#\(name.string)-berth-work-\(Hex.random(8))")
            let make = { try parent.makeDirectory(work, mode: 0o700) }
            try mapping.map { try $0.0.asRoot(make) } ?? make()
            removeWork = { try? parent.removeTree(work) }
            // Its host path: the parent found the same way from the tree's host path (symlinks
            // of the image followed inside it), read back from that descriptor; none where the
            // host path shows no tree (an overlay's, which cannot hold a writable layer anyway).
            // Paths by their bytes (a tree's name need not be UTF-8), the tree's by its real one.
            if let onHost = try? Directory(opening: treePath).openDirectory(inRoot: parentPath, creating: false),
               let realTree = realPath(treePath) {
                var resolved = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
                let length = onHost.descriptor.procPath.withPlatformString { readlink($0, &resolved, resolved.count - 1) }
                let real = FilePath(platformString: resolved)
                if length > 0, real.starts(with: realTree), ((try? onHost.status(work)) ?? nil) != nil { madeWork = real.appending(work.components) }
            }
            let copy = try DetachedMount.copy(of: parentPath.isEmpty ? root.descriptor : tree.openPath(inRoot: parentPath), recursive: false)
            held.append(copy)
            upper = (copy.descriptor.procPath.appending(name.string), copy.descriptor.procPath.appending(work.components))
        } else if writable, let top = overlay.layers.last, let work = overlay.work {
            let holder = commonDirectory(of: [top, work])
            let copy = try shown(holder, inImage: false)
            func beneath(_ path: FilePath) -> FilePath {
                var relative = path
                _ = relative.removePrefix(holder)
                return copy.descriptor.procPath.appending(relative.components)
            }
            upper = (beneath(top), beneath(work))
        }
        let mount = { try DetachedMount.overlay(lowers: lowers, upper: upper) }
        let overlayMount = try mapping.map { try $0.0.asRoot(mount) } ?? mount()
        withExtendedLifetime(held) {}
        made = true
        return (overlayMount, madeWork)
    }

    /// The deepest directory that holds every one of `paths`.
    static func commonDirectory(of paths: [FilePath]) -> FilePath {
        guard var common = paths.first else { return "/" }
        for path in paths.dropFirst() {
            while !path.starts(with: common) { common.removeLastComponent() }
        }
        return common
    }

    /// Maps `mount`'s ids through the container's namespace, when it has a mapping; a file
    /// system that cannot do it is an error, never a tree silently shown as nobody's.
    private static func map(_ mount: DetachedMount, _ mapping: (IDRange, Descriptor)?, what: String, hint: String = "") throws {
        guard let (_, userNamespace) = mapping else { return }
        do {
            try mount.mapIDs(through: userNamespace)
        } catch let error as SystemError where error.errno == .invalidArgument || error.errno == .notSupported {
            throw LaunchError("cannot map the container's user ids onto \(what): its file system does not support idmapped mounts; run with --private-users=no (not a security boundary)\(hint)")
        }
    }

    // MARK: /dev

    /// The container's /dev, as nspawn makes it: a tmpfs with the pseudo devices, the links into
    /// /proc, and mount points for pts, shm and mqueue, all owned by the container's root. The
    /// nodes are the container's own, never the host's: systemd chmods and chowns them.
    private static func devices(owner base: UInt32, console: Bool) throws -> DetachedMount {
        let tmpfs = try DetachedMount.fileSystem("tmpfs", options: [("mode", "0755"), ("uid", "\(base)"), ("gid", "\(base)")],
                                                 attributes: .noSetUID)
        let dev = Directory(tmpfs.descriptor, displayPath: "the container's /dev")
        var nodes: [(String, UInt32, UInt32, mode_t)] = [
            ("null", 1, 3, 0o666), ("zero", 1, 5, 0o666), ("full", 1, 7, 0o666), ("random", 1, 8, 0o666),
            ("urandom", 1, 9, 0o666), ("tty", 5, 0, 0o666), ("net/tun", 10, 200, 0o666),
        ]
        // Without a pty, the console is a null device of the container's own.
        if !console { nodes.append(("console", 1, 3, 0o600)) }
        for directory in ["net", "char"] {
            try dev.makeDirectory(FilePath(directory), mode: 0o755)
            try dev.setOwner(FilePath(directory), uid: base, gid: base)
        }
        for (name, major, minor, mode) in nodes {
            try dev.makeNode(FilePath(name), mode: S_IFCHR | mode, device: makeDevice(major: major, minor: minor))
            try dev.setMode(FilePath(name), mode)
            try dev.setOwner(FilePath(name), uid: base, gid: base)
            // udev's /dev/char/MAJOR:MINOR links, which nspawn makes too.
            guard name != "console" else { continue }
            let link = FilePath("char/\(major):\(minor)")
            try "../\(name)".withCString { try dev.makeSymlink(link, target: $0) }
            try dev.setOwner(link, uid: base, gid: base)
        }
        for (name, target) in [("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                               ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx")] {
            try target.withCString { try dev.makeSymlink(FilePath(name), target: $0) }
            try dev.setOwner(FilePath(name), uid: base, gid: base)
        }
        for name in ["pts", "shm", "mqueue"] {
            try dev.makeDirectory(FilePath(name), mode: 0o755)
            try dev.setOwner(FilePath(name), uid: base, gid: base)
        }
        if console {
            _ = try dev.createFile("console", mode: 0o600)
            try dev.setOwner("console", uid: base, gid: base)
        }
        return tmpfs
    }

    // MARK: --as-pid2's init

    /// A sealed in-memory copy of `executable`: --as-pid2's init runs from it, so no host binary
    /// ever runs as a process of the container, where root could open, read or trace it through
    /// /proc (CVE-2019-5736's class; runc answers the same way).
    private static func sealedCopy(of executable: String) throws -> Descriptor {
        let source = try Descriptor.open(FilePath(executable), O_RDONLY)
        let copy = Descriptor(owning: try retryingInterrupts("memfd_create") { cberth_memfd_create("berth-init") })
        var remaining = try source.status().size
        while remaining > 0 {
            let n = try retryingInterrupts("sendfile") { sendfile(copy.rawValue, source.rawValue, nil, Int(min(remaining, 1 << 30))) }
            guard n > 0 else { throw LaunchError("cannot copy \(executable) for --as-pid2: it ended early") }
            remaining -= Int64(n)
        }
        _ = try retryingInterrupts("seal the init's copy") { cberth_seal_completely(copy.rawValue) }
        return copy
    }
}
