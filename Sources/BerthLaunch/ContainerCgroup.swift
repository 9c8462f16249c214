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
    var intoCgroup: Descriptor?
    /// `<hierarchy>/berth/<uuid>` in every v1 hierarchy: the devices controller's holds the
    /// device policy where BPF cannot, the controllers' hold the limits (`--property=`) the
    /// unified hierarchy lacks, and each roots the container's cgroup namespace at its own
    /// cgroup there (`LegacyCgroupHierarchy`).
    var legacy: [FilePath] = []
    /// The one of these in name=systemd, given to the container's root with the unified one.
    var legacySystemd: FilePath?
    /// v1 cgroups the container enters and shares with other machines, never removed: `berth`
    /// of the cpu hierarchy under realtime group scheduling (`sharedRealtimeCgroup`).
    var shared: [FilePath] = []
    /// Every v1 cgroup the setup process moves itself into.
    var entered: [FilePath] { legacy + shared }

    static let parentName = "berth"

    /// `BERTH_LEGACY_DEVICES=1` makes berth use the v1 devices controller even where BPF device
    /// programs work, so the tests cover both ways on a hybrid host.
    private static let legacyForced = getenv("BERTH_LEGACY_DEVICES").map { String(cString: $0) == "1" } ?? false

    /// Makes the container's cgroups, named `name`. Runs `body` (which starts the container's
    /// setup process in them) under a shared lock that keeps a concurrent sweep of stale
    /// cgroups from taking the fresh, still empty ones. The lock is handed to `sweepGuard`: the
    /// v1 cgroups stay empty until the setup process moves itself in, and the caller closes it
    /// once it has.
    static func make<T>(name: String, limits: [CgroupLimit] = [], sweepGuard: inout Descriptor?, _ body: (ContainerCgroup) throws -> T) throws -> T {
        let lock = try Descriptor.open(try RuntimeDirectory.path("cgroup").appending("lock"), O_RDWR | O_CREAT, mode: 0o600)
        if try lock.lock(.exclusive, wait: false) {
            removeStale()
            lock.unlock()
        }
        _ = try lock.lock(.shared, wait: true)
        var made = false
        defer { if made { sweepGuard = lock } else { lock.unlock() } }
        return try make(name: name, limits: limits, made: &made, body)
    }

    private static func make<T>(name: String, limits: [CgroupLimit], made done: inout Bool, _ body: (ContainerCgroup) throws -> T) throws -> T {
        let hierarchy = unifiedHierarchy()
        var made = ContainerCgroup(unified: try hierarchy.map { try makeDirectory($0.appending(parentName)).appending(name) }, intoCgroup: nil)
        do {
            if let unified = made.unified { try makeDirectory(unified) }
            var bpf = false
            if !legacyForced, let hierarchy {
                bpf = (try? DevicePolicy.attach(to: try Descriptor.open(hierarchy.appending(parentName), O_RDONLY | O_DIRECTORY))) != nil
            }
            let hierarchies = try LegacyCgroupHierarchy.all()
            guard bpf || hierarchies.contains(where: { $0.holds("devices") }) else {
                throw LaunchError("this host has neither BPF device programs on cgroup v2 nor the v1 devices controller; berth cannot keep a container from the host's devices")
            }
            // A CPU limit only v1 can take needs a cpu cgroup of the machine's own.
            let ownCPU = limits.contains { $0.legacy.controller == "cpu" }
            var placed: [(hierarchy: LegacyCgroupHierarchy, cgroup: FilePath)] = []
            for hierarchy in hierarchies {
                do {
                    if hierarchy.holds("cpu"), !ownCPU, let shared = sharedRealtimeCgroup(hierarchy) {
                        made.shared.append(shared)
                        continue
                    }
                    let parent = try makeDirectory(hierarchy.mountPoint.appending(hierarchy.holds("cpu") && ownCPU ? limitedCPUParentName : parentName))
                    if hierarchy.holds("cpuset") { try inheritCPUSet(parent) }
                    if hierarchy.holds("devices") {
                        // Where BPF holds the policy, this one is a second wall, when it can be had.
                        do { try setLegacyDevicePolicy(parent) } catch where bpf {}
                    }
                    // A new v1 devices cgroup starts with its parent's rules.
                    let cgroup = try makeDirectory(parent.appending(name))
                    made.legacy.append(cgroup)
                    if hierarchy.holds("cpuset") { try inheritCPUSet(cgroup) }
                    if hierarchy.holds("name=systemd") { made.legacySystemd = cgroup }
                    placed.append((hierarchy, cgroup))
                } catch let error as SystemError where [.readOnlyFileSystem, .permissionDenied, .notPermitted].contains(error.errno) {
                    // berth in a container that mounts the hierarchy read-only, as nspawn does:
                    // the machine stays in berth's own cgroup there, which is safe only below
                    // the hierarchy's root, where no release_agent shows.
                    guard (try? FileStatus.of(hierarchy.mountPoint.appending("release_agent"))) == nil, !(hierarchy.holds("devices") && !bpf) else {
                        throw LaunchError("cannot make the machine's cgroup in the v1 hierarchy \(hierarchy.controllers) (\(error)); berth gives every container one, so that it cannot reach the hierarchy's root")
                    }
                }
            }
            try applyLimits(limits, unified: made.unified, legacy: placed)
            if bpf, let unified = made.unified { made.intoCgroup = try Descriptor.open(unified, O_RDONLY | O_DIRECTORY) }
            let result = try body(made)
            done = true
            return result
        } catch {
            made.remove()
            throw error
        }
    }

    /// Where machines with a v1 CPU limit have their cpu cgroups under realtime group scheduling:
    /// beside `berth`, which the others share, so none of them shows to those.
    static let limitedCPUParentName = "berth-cpu"

    /// Under realtime group scheduling (`cpu.rt_runtime_us`) a new cpu cgroup has no realtime
    /// budget: no process in it may take a realtime policy (`chrt`), and one that has one cannot
    /// move in. The machines then share `berth`, given the root's budget once, as before they
    /// shared the caller's cgroup; returned when that is so. Their cgroup namespace is rooted
    /// there, below the hierarchy's root all the same.
    private static func sharedRealtimeCgroup(_ hierarchy: LegacyCgroupHierarchy) -> FilePath? {
        func budget(_ cgroup: FilePath) -> Int? {
            (try? Descriptor.open(cgroup.appending("cpu.rt_runtime_us"), O_RDONLY).readAll(limit: 64))
                .flatMap { Int(String(decoding: $0, as: UTF8.self).filter { !$0.isWhitespace }) }
        }
        guard let root = budget(hierarchy.mountPoint), let parent = try? makeDirectory(hierarchy.mountPoint.appending(parentName)) else { return nil }
        if budget(parent) == 0 { try? write(parent.appending("cpu.rt_runtime_us"), "\(root)") }
        return parent
    }

    /// Gives the v1 devices cgroup `berth` nspawn's set, unless it has it. The kernel takes a
    /// "deny all" only from a cgroup with no child, as `berth` is when it is made: a later start
    /// finds the rules in place, the running machines' cgroups below them.
    /// Two first starts write it one after the other, under a lock of its own.
    private static func setLegacyDevicePolicy(_ parent: FilePath) throws {
        func inPlace() throws -> Bool {
            let list = try Descriptor.open(parent.appending("devices.list"), O_RDONLY).readAll(limit: 1 << 16)
            return Set(String(decoding: list, as: UTF8.self).split(separator: "\n").map(String.init)) == Set(DevicePolicy.legacyRules)
        }
        guard try !inPlace() else { return }
        let lock = try Descriptor.open(try RuntimeDirectory.path("cgroup").appending("devices.lock"), O_RDWR | O_CREAT, mode: 0o600)
        _ = try lock.lock(.exclusive, wait: true)
        defer { lock.unlock() }
        guard try !inPlace() else { return }
        do {
            try write(parent.appending("devices.deny"), "a")
            for rule in DevicePolicy.legacyRules { try write(parent.appending("devices.allow"), rule) }
        } catch {
            throw LaunchError("cannot give \(parent) the device policy (\(error)): machines started without it still run below it; stop them ('berth ps' lists them) and start this one again")
        }
    }

    /// A v1 cpuset cgroup starts with no CPUs and no memory nodes, and takes no process until
    /// it has some: it gets its parent's.
    private static func inheritCPUSet(_ cgroup: FilePath) throws {
        for file in ["cpuset.cpus", "cpuset.mems"] {
            func value(_ path: FilePath) throws -> String {
                String(decoding: try Descriptor.open(path.appending(file), O_RDONLY).readAll(limit: 4096), as: UTF8.self).filter { !$0.isWhitespace }
            }
            if try value(cgroup).isEmpty { try write(cgroup.appending(file), try value(cgroup.removingLastComponent())) }
        }
    }

    /// Writes `limits` to the container's cgroup `unified` where the unified hierarchy has
    /// their controller (enabling it for the cgroups below `berth`), else to its cgroup in the
    /// v1 hierarchy that holds the controller. A limit that cannot be applied stops the start
    /// with one error, before anything runs.
    private static func applyLimits(_ limits: [CgroupLimit], unified: FilePath?, legacy: [(hierarchy: LegacyCgroupHierarchy, cgroup: FilePath)]) throws {
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
            guard let cgroup = legacy.first(where: { $0.hierarchy.holds(hierarchyName) })?.cgroup else {
                throw LaunchError("cannot apply --property=\(limit.property.rawValue): this host's cgroups have no \(controller) controller, on cgroup v2 or v1")
            }
            for (file, value) in files {
                guard (try? FileStatus.of(cgroup.appending(file))) != nil else {
                    throw LaunchError("cannot apply --property=\(limit.property.rawValue): the v1 \(hierarchyName) controller has no \(file) here"
                        + (hierarchyName == "blkio" ? " (IOWeight on cgroup v1 needs the BFQ I/O scheduler)" : ""))
                }
                try write(cgroup.appending(file), value)
            }
        }
    }

    /// Moves `pid` into the unified cgroup where it could not be made there. (The v1 ones the
    /// setup process enters itself, LaunchSpec.legacyCgroups.)
    func place(_ pid: pid_t) throws {
        if intoCgroup == nil, let unified { try Self.write(unified.appending("cgroup.procs"), "\(pid)") }
    }

    /// Gives the unified cgroup to the container's root (host id `owner`), as nspawn delegates
    /// it: the directory and the files a manager inside writes.
    /// On a v1 host, name=systemd's cgroup likewise (nspawn's hierarchy for a manager).
    func delegate(to owner: UInt32) throws {
        let files = [(unified, ["", "cgroup.procs", "cgroup.threads", "cgroup.subtree_control"]),
                     (legacySystemd, ["", "cgroup.procs", "tasks", "notify_on_release", "cgroup.clone_children"])]
        for case let (cgroup?, names) in files {
            for file in names {
                let path = file.isEmpty ? cgroup : cgroup.appending(file)
                let rc = path.withPlatformString { chown($0, owner, owner) }
                if rc != 0 && errno != ENOENT { throw SystemError.last("chown", path: path.string) }
            }
        }
    }

    /// Removes the cgroups and whatever a manager made inside, deepest first. rmdir fails on a
    /// cgroup that still has processes, so nothing alive is touched. The unified one goes last:
    /// while it is there, a later sweep finds the v1 ones by its name (removeStale).
    func remove() {
        for cgroup in legacy + (unified.map { [$0] } ?? []) { Self.removeTree(cgroup) }
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
    /// subtree (`populated 0` in the unified hierarchy); a running container's, and its
    /// manager's empty ones, stay. A machine's v1 cgroups have the name of its unified one, and
    /// v1 has no `populated` for a subtree: they are looked at (every `cgroup.procs` in them
    /// empty) for the stale names alone, or all of them on a host with no unified hierarchy.
    private static func removeStale() {
        var stale: [FilePath]?
        if let hierarchy = unifiedHierarchy() {
            stale = []
            let parent = hierarchy.appending(parentName)
            for name in (try? Directory(opening: parent).subdirectoryNames()) ?? [] {
                let cgroup = parent.appending(name.components)
                guard let events = try? Descriptor.open(cgroup.appending("cgroup.events"), O_RDONLY).readAll(limit: 4096),
                      String(decoding: events, as: UTF8.self).contains("populated 0") else { continue }
                removeTree(cgroup)
                stale?.append(name)
            }
        }
        guard stale?.isEmpty != true else { return }
        for hierarchy in (try? LegacyCgroupHierarchy.all()) ?? [] {
            for parent in [parentName, limitedCPUParentName].map({ hierarchy.mountPoint.appending($0) }) {
                for name in stale ?? (try? Directory(opening: parent).subdirectoryNames()) ?? [] {
                    let cgroup = parent.appending(name.components)
                    if subtree(of: cgroup).allSatisfy({ (try? Descriptor.open($0.appending("cgroup.procs"), O_RDONLY).readAll(limit: 16)) == [] }) {
                        removeTree(cgroup)
                    }
                }
            }
        }
    }

    /// Removes the cgroup directory `top` and every one below it, deepest first, without
    /// recursion: a manager inside may nest them deeply.
    private static func removeTree(_ top: FilePath) {
        for path in subtree(of: top).reversed() { _ = path.withPlatformString { rmdir($0) } }
    }

    /// The cgroup directory `top` and every one below it, each before those below it.
    private static func subtree(of top: FilePath) -> [FilePath] {
        var pending = [top], order: [FilePath] = []
        while let path = pending.popLast() {
            order.append(path)
            for name in (try? Directory(opening: path).subdirectoryNames()) ?? [] { pending.append(path.appending(name.components)) }
        }
        return order
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
