import BerthSystem
import CBerth
import Glibc
import SystemPackage

/// The cgroup of the container's own, made for every run, command or boot, below one cgroup
/// `berth` that holds nspawn's device policy; the container's PID 1 is made in a cgroup
/// namespace rooted at it, so nothing above it is visible, let alone writable, and moving to
/// another cgroup cannot lift the policy. A booted systemd manages it as its root.
///
/// Where the kernel takes BPF device programs on the unified (v2) hierarchy, as on pure v2 hosts
/// and hybrid ones alike, the policy is a program attached to `berth` (inherited by every cgroup
/// below), and the child is made directly in its cgroup (clone3 with CLONE_INTO_CGROUP).
/// Elsewhere the v1 devices controller does it: `devices/berth` denies all but nspawn's set, a
/// child cgroup there can never allow more than it, and the process is moved in by pid.
struct ContainerCgroup {
    /// `<unified>/berth/<uuid>`, or nil where the host has no unified hierarchy.
    let unified: FilePath?
    /// The unified cgroup, open for CLONE_INTO_CGROUP, when the BPF policy holds there.
    let intoCgroup: Descriptor?
    /// `devices/berth/<uuid>`, when the v1 controller holds the policy.
    let devices: FilePath?
    /// `<controller>/berth/<uuid>` in each v1 hierarchy that holds one of the limits
    /// (`--property=`), where the unified hierarchy lacks the controller.
    var limited: [FilePath] = []

    /// Every v1 cgroup of the container's: the device policy's and the limits'.
    private var legacy: [FilePath] { (devices.map { [$0] } ?? []) + limited }

    static let parentName = "berth"

    /// `BERTH_LEGACY_DEVICES=1` makes berth use the v1 devices controller even where BPF device
    /// programs work, so the tests cover both ways on a hybrid host.
    private static let legacyForced = getenv("BERTH_LEGACY_DEVICES").map { String(cString: $0) == "1" } ?? false

    static let devicesHierarchy: FilePath = "/sys/fs/cgroup/devices"

    /// Makes the container's cgroups, named `name`. Runs `body` (which starts the container's
    /// setup process in them) under a shared lock that keeps a concurrent sweep of stale
    /// cgroups from taking the fresh, still empty ones.
    static func make<T>(name: String, limits: [CgroupLimit] = [], _ body: (ContainerCgroup) throws -> T) throws -> T {
        let lock = try Descriptor.open(try RuntimeDirectory.path("cgroup").appending("lock"), O_RDWR | O_CREAT, mode: 0o600)
        if try lock.lock(.exclusive, wait: false) {
            removeStale()
            lock.unlock()
        }
        _ = try lock.lock(.shared, wait: true)
        defer { lock.unlock() }

        let hierarchy = unifiedHierarchy()
        let unified = try hierarchy.map { try makeDirectory($0.appending(parentName)).appending(name) }
        if let unified { try makeDirectory(unified) }
        var limited: [FilePath] = []
        do {
            limited = try applyLimits(limits, name: name, unified: unified)
            if !legacyForced, let hierarchy {
                let parent = try Descriptor.open(hierarchy.appending(parentName), O_RDONLY | O_DIRECTORY)
                if (try? DevicePolicy.attach(to: parent)) != nil, let unified {
                    return try body(ContainerCgroup(unified: unified, intoCgroup: try Descriptor.open(unified, O_RDONLY | O_DIRECTORY), devices: nil,
                                                    limited: limited))
                }
            }
            guard try FileStatus.of(devicesHierarchy.appending("devices.deny")) != nil else {
                throw LaunchError("this host has neither BPF device programs on cgroup v2 nor the v1 devices controller; berth cannot keep a container from the host's devices")
            }
            let parent = try makeDirectory(devicesHierarchy.appending(parentName))
            try write(parent.appending("devices.deny"), "a")
            for rule in DevicePolicy.legacyRules { try write(parent.appending("devices.allow"), rule) }
            // A new v1 devices cgroup starts with its parent's rules.
            let devices = try makeDirectory(parent.appending(name))
            return try body(ContainerCgroup(unified: unified, intoCgroup: nil, devices: devices, limited: limited))
        } catch {
            ContainerCgroup(unified: unified, intoCgroup: nil, devices: nil, limited: limited).remove()
            throw error
        }
    }

    /// Writes `limits` to the container's cgroup `unified` where the unified hierarchy has
    /// their controller (enabling it for the cgroups below `berth`), else to a cgroup of the
    /// container's own, `name`, in the controller's v1 hierarchy; returns those v1 cgroups.
    /// A limit that cannot be applied stops the start with one error, before anything runs.
    private static func applyLimits(_ limits: [CgroupLimit], name: String, unified: FilePath?) throws -> [FilePath] {
        var made: [FilePath] = []
        do {
            let available = unified.flatMap { try? Descriptor.open($0.removingLastComponent().removingLastComponent().appending("cgroup.controllers"), O_RDONLY).readAll(limit: 4096) }
                .map { String(decoding: $0, as: UTF8.self).split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init) } ?? []
            for limit in limits {
                let (controller, file, value) = limit.unified
                if let unified, available.contains(controller) {
                    let parent = unified.removingLastComponent()
                    for level in [parent.removingLastComponent(), parent] {
                        try write(level.appending("cgroup.subtree_control"), "+\(controller)")
                    }
                    try write(unified.appending(file), value)
                    continue
                }
                let (hierarchyName, files) = limit.legacy
                let hierarchy = FilePath("/sys/fs/cgroup").appending(hierarchyName)
                guard (try? FileStatus.of(hierarchy.appending("cgroup.procs"))) != nil else {
                    throw LaunchError("cannot apply --property=\(limit.property.rawValue): this host's cgroups have no \(controller) controller, on cgroup v2 or v1")
                }
                let cgroup = hierarchy.appending(parentName).appending(name)
                if !made.contains(cgroup) {
                    try makeDirectory(hierarchy.appending(parentName))
                    try makeDirectory(cgroup)
                    made.append(cgroup)
                }
                for (file, value) in files {
                    guard (try? FileStatus.of(cgroup.appending(file))) != nil else {
                        throw LaunchError("cannot apply --property=\(limit.property.rawValue): the v1 \(hierarchyName) controller has no \(file) here"
                            + (hierarchyName == "blkio" ? " (IOWeight on cgroup v1 needs the BFQ I/O scheduler)" : ""))
                    }
                    try write(cgroup.appending(file), value)
                }
            }
            return made
        } catch {
            for cgroup in made { _ = cgroup.withPlatformString { rmdir($0) } }
            throw error
        }
    }

    /// The v1 hierarchies `--property=` limits may use, for the sweep of stale cgroups.
    private static let limitHierarchies = ["memory", "cpu", "pids", "blkio"]

    /// Moves `pid` into the cgroups it was not made in.
    func place(_ pid: pid_t) throws {
        for cgroup in legacy { try Self.write(cgroup.appending("cgroup.procs"), "\(pid)") }
        if intoCgroup == nil, let unified { try Self.write(unified.appending("cgroup.procs"), "\(pid)") }
    }

    /// Gives the unified cgroup to the container's root (host id `owner`), as nspawn delegates
    /// it: the directory and the files a manager inside writes.
    func delegate(to owner: UInt32) throws {
        guard let unified else { return }
        for file in ["", "cgroup.procs", "cgroup.threads", "cgroup.subtree_control"] {
            let path = file.isEmpty ? unified : unified.appending(file)
            let rc = path.withPlatformString { chown($0, owner, owner) }
            if rc != 0 && errno != ENOENT { throw SystemError.last("chown", path: path.string) }
        }
    }

    /// Removes the cgroups and whatever a manager made inside, deepest first. rmdir fails on a
    /// cgroup that still has processes, so nothing alive is touched.
    func remove() {
        if let unified { Self.removeTree(unified) }
        for cgroup in legacy { _ = cgroup.withPlatformString { rmdir($0) } }
    }

    /// How the host mounts its cgroups: `unified`, `hybrid`, `legacy` or empty (LaunchSpec).
    static var hostLayout: String {
        if access("/sys/fs/cgroup/cgroup.controllers", F_OK) == 0 { return "unified" }
        let v1 = access("/sys/fs/cgroup/memory", F_OK) == 0 || access("/sys/fs/cgroup/cpu", F_OK) == 0
        if access("/sys/fs/cgroup/unified/cgroup.controllers", F_OK) == 0 { return v1 ? "hybrid" : "unified" }
        return v1 ? "legacy" : ""
    }

    /// Where the unified hierarchy is mounted, or nil when the host has none.
    static func unifiedHierarchy() -> FilePath? {
        for candidate in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"] {
            if access(candidate + "/cgroup.procs", F_OK) == 0, access(candidate + "/cgroup.controllers", F_OK) == 0 {
                return FilePath(candidate)
            }
        }
        return nil
    }

    /// The cgroups a killed supervisor left: those no process uses any more, in the whole
    /// subtree (`populated 0`); a running container's, and its manager's empty ones, stay.
    private static func removeStale() {
        if let hierarchy = unifiedHierarchy() {
            let parent = hierarchy.appending(parentName)
            for name in (try? Directory(opening: parent).entryNames()) ?? [] {
                let cgroup = parent.appending(name.components)
                guard let events = try? Descriptor.open(cgroup.appending("cgroup.events"), O_RDONLY).readAll(limit: 4096),
                      String(decoding: events, as: UTF8.self).contains("populated 0") else { continue }
                removeTree(cgroup)
            }
        }
        // A v1 cgroup with a process in it cannot be removed: only the empty ones go.
        for hierarchy in [devicesHierarchy] + limitHierarchies.map({ FilePath("/sys/fs/cgroup").appending($0) }) {
            let parent = hierarchy.appending(parentName)
            for name in (try? Directory(opening: parent).entryNames()) ?? [] {
                _ = parent.appending(name.components).withPlatformString { rmdir($0) }
            }
        }
    }

    /// Removes the cgroup directory `top` and every one below it, deepest first, without
    /// recursion: a manager inside may nest them deeply.
    private static func removeTree(_ top: FilePath) {
        var pending = [top], order: [FilePath] = []
        while let path = pending.popLast() {
            order.append(path)
            guard let dir = try? Directory(opening: path), let names = try? dir.entryNames() else { continue }
            for name in names where (try? dir.status(name))??.kind == .directory { pending.append(path.appending(name.components)) }
        }
        for path in order.reversed() { _ = path.withPlatformString { rmdir($0) } }
    }

    @discardableResult
    private static func makeDirectory(_ path: FilePath) throws -> FilePath {
        let made = path.withPlatformString { mkdir($0, 0o755) }
        if made != 0 && errno != EEXIST { throw SystemError.last("mkdir", path: path.string) }
        return path
    }

    private static func write(_ path: FilePath, _ value: String) throws {
        try Descriptor.open(path, O_WRONLY).writeAll(value + "\n")
    }
}
