import BerthSystem
import CBerth
import Glibc
import SystemPackage

/// The container's first process. The supervisor starts it in new mount, PID, UTS and IPC
/// namespaces (and network, with --private-network) as a fresh exec of berth, so it runs
/// single-threaded with no state from the supervisor; it sets the container up as
/// systemd-nspawn does and then execs the payload, which becomes PID 1.
public enum ContainerStage {
    /// The hidden subcommand that runs this stage.
    public static let subcommand = "__container-stage"

    /// The capability bounding set systemd-nspawn 252 keeps by default (`CapBnd` 0xfcecafff):
    /// all of 0-31 but CAP_NET_ADMIN (12), CAP_IPC_LOCK (14), CAP_SYS_MODULE (16), CAP_SYS_RAWIO (17),
    /// CAP_SYS_PACCT (20), CAP_SYS_RESOURCE (24) and CAP_SYS_TIME (25), and none from 32 up.
    /// With a private network the container may manage it, so CAP_NET_ADMIN stays, as in nspawn.
    static func keptCapabilities(privateNetwork: Bool) -> UInt64 {
        0xfcec_afff | (privateNetwork ? 1 << 12 : 0)
    }

    /// Reads the spec from descriptor 3, sets up, execs. Never returns.
    public static func main() -> Never {
        do {
            try run()
        } catch {
            let text = "berth: error: cannot start the container: \(error)\n"
            _ = text.withCString { Glibc.write(2, $0, strlen($0)) }
            _exit(1)
        }
    }

    private static func readSpec() throws -> LaunchSpec {
        guard let spec = LaunchSpec(decoding: try Descriptor(owning: 3).readAll()) else { throw LaunchError("the launch description is damaged") }
        return spec
    }

    private static func run() throws -> Never {
        let spec = try readSpec()
        // If the supervisor dies, so does the container: PID 1's death ends the PID namespace,
        // and with its last process the mount namespace and every mount in it.
        _ = try retryingInterrupts("prctl(PR_SET_PDEATHSIG)") { cberth_set_parent_death_signal(SIGKILL) }

        if let console = spec.console {
            // The pty becomes the container's terminal: a new session, then its controlling tty.
            let fd = try Descriptor.open(FilePath(console), O_RDWR)
            _ = try retryingInterrupts("setsid") { setsid() }
            _ = try retryingInterrupts("TIOCSCTTY") { cberth_set_controlling_terminal(fd.rawValue) }
            for target in [0, 1, 2] as [Int32] { _ = try retryingInterrupts("dup2") { dup2(fd.rawValue, target) } }
        }
        // The supervisor placed this process in its cgroups before sending the description.
        if spec.systemCgroup != nil {
            // The container's cgroup becomes the root of what it sees under /sys/fs/cgroup.
            _ = try retryingInterrupts("unshare(CLONE_NEWCGROUP)") { cberth_unshare_cgroup_namespace() }
        }
        try Mount.makePrivate("/")
        let root = FilePath(spec.root)
        if spec.ephemeral || !spec.lowerLayers.isEmpty { try mountOverlay(at: root, spec: spec) }
        try Mount.bind(root, at: root)
        let tree = try Directory(opening: root)
        try mountAPIFileSystems(in: tree, spec: spec)
        for bind in spec.bindMounts { try mountBind(bind, in: tree) }
        if spec.readOnly { try Mount.remountReadOnly(root) }

        try spec.hostname.withCString { name in
            _ = try retryingInterrupts("sethostname") { sethostname(name, strlen(name)) }
        }
        if spec.privateNetwork {
            _ = try retryingInterrupts("bring up lo") { cberth_interface_up("lo") }
        }
        try Mount.pivotRoot(to: root)
        try dropCapabilities(keeping: keptCapabilities(privateNetwork: spec.privateNetwork))
        try exec(spec)
    }

    // MARK: File systems

    /// Stacks the image's layers over `root`, in this mount namespace only: when the container's
    /// last process goes, so does the overlay, even if berth was killed. An ephemeral run writes
    /// to a tmpfs mounted here first, which goes the same way.
    private static func mountOverlay(at root: FilePath, spec: LaunchSpec) throws {
        let lowers = try (spec.lowerLayers.isEmpty ? [spec.root] : spec.lowerLayers).map {
            try Descriptor.open(FilePath($0), CBERTH_O_PATH | O_DIRECTORY)
        }
        var upper: (layer: Descriptor, work: Descriptor)?
        if spec.ephemeral {
            try Mount.make("tmpfs", at: root, options: "mode=700")
            let scratch = try Directory(opening: root)
            // The upper root's mode and owner show as the merged root's: take the image's.
            let template = try lowers[0].status()
            try scratch.makeDirectory("upper", mode: template.permissions)
            try scratch.setOwner("upper", uid: template.uid, gid: template.gid)
            try scratch.setMode("upper", template.permissions)
            try scratch.makeDirectory("work", mode: 0o700)
            upper = (try scratch.openFile("upper", CBERTH_O_PATH | O_DIRECTORY), try scratch.openFile("work", CBERTH_O_PATH | O_DIRECTORY))
        } else if let layer = spec.upperLayer, let work = spec.overlayWork {
            upper = (try Descriptor.open(FilePath(layer), CBERTH_O_PATH | O_DIRECTORY),
                     try Descriptor.open(FilePath(work), CBERTH_O_PATH | O_DIRECTORY))
        }
        // Opened now, so the overlay lands on top of the tmpfs, not beneath it.
        let target = try Descriptor.open(root, CBERTH_O_PATH | O_DIRECTORY)
        try Mount.overlay(lowers: lowers, upper: upper, onto: target, readOnly: spec.readOnly)
    }

    /// Opens (making it if missing) the directory or file `path` beneath the root, never through
    /// a symlink, for mount(2) to use as target through its /proc path.
    private static func target(_ path: FilePath, in tree: Directory, file: Bool = false) throws -> Descriptor {
        var current = tree
        let components = Array(path.components)
        for (index, component) in components.enumerated() {
            let name = FilePath(root: nil, [component])
            let last = index == components.count - 1
            if try current.status(name) == nil {
                if last && file {
                    _ = try current.createFile(name, mode: 0o644)
                } else {
                    try current.makeDirectory(name, mode: 0o755)
                }
            }
            if last && file { return try current.openFile(name, CBERTH_O_PATH) }
            current = try current.openDirectory(beneath: name, pathOnly: true, crossingMounts: true)
        }
        return current.descriptor
    }

    private static func mountAPIFileSystems(in tree: Directory, spec: LaunchSpec) throws {
        let nosuid = UInt(MS_NOSUID), nodev = UInt(MS_NODEV), noexec = UInt(MS_NOEXEC)

        try Mount.make("proc", onto: target("proc", in: tree), flags: nosuid | nodev | noexec)
        // What a container must not change or read of the host's kernel, as nspawn protects it.
        let proc = try tree.openDirectory(beneath: "proc", pathOnly: true, crossingMounts: true)
        for name in ["sys", "sysrq-trigger"] where try proc.status(FilePath(name)) != nil {
            let p = proc.procPath(FilePath(name))
            try Mount.bind(p, at: p, recursive: name == "sys")
            try Mount.remountReadOnly(p, extraFlags: nosuid | nodev | noexec)
        }
        for name in ["kcore", "keys", "kallsyms", "timer_list", "sched_debug", "latency_stats", "key-users"]
            where try proc.status(FilePath(name))?.kind == .regular {
            try Mount.bind("/dev/null", at: proc.procPath(FilePath(name)), recursive: false)
        }
        for name in ["acpi", "scsi", "irq", "bus", "fs"] where try proc.status(FilePath(name))?.kind == .directory {
            try Mount.make("tmpfs", at: proc.procPath(FilePath(name)),
                           flags: UInt(MS_RDONLY) | nosuid | nodev | noexec, options: "mode=555")
        }

        try Mount.make("sysfs", onto: target("sys", in: tree), flags: UInt(MS_RDONLY) | nosuid | nodev | noexec)
        if spec.systemCgroup != nil {
            let sys = try tree.openDirectory(beneath: "sys/fs/cgroup", pathOnly: true, crossingMounts: true)
            try Mount.make("cgroup2", onto: sys.descriptor, flags: nosuid | nodev | noexec)
        }

        try Mount.make("tmpfs", onto: target("dev", in: tree), flags: nosuid, options: "mode=755")
        let dev = try tree.openDirectory(beneath: "dev", pathOnly: true, crossingMounts: true)
        for (name, major, minor) in [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8),
                                     ("urandom", 1, 9), ("tty", 5, 0)] as [(String, UInt32, UInt32)] {
            try dev.makeNode(FilePath(name), mode: S_IFCHR | 0o666, device: makeDevice(major: major, minor: minor))
            try dev.setMode(FilePath(name), 0o666)
        }
        for (name, target) in [("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                               ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx")] {
            try target.withCString { try dev.makeSymlink(FilePath(name), target: $0) }
        }
        for name in ["pts", "shm", "mqueue"] { try dev.makeDirectory(FilePath(name), mode: 0o755) }
        try Mount.make("devpts", at: dev.procPath("pts"), flags: nosuid | noexec,
                       options: "newinstance,ptmxmode=0666,mode=620,gid=5")
        try Mount.make("tmpfs", at: dev.procPath("shm"), flags: nosuid | nodev, options: "mode=1777")
        try Mount.make("mqueue", at: dev.procPath("mqueue"), flags: nosuid | nodev | noexec)
        // The console: the container's own pty when berth relays one; otherwise a null device
        // of the container's own. Never a host file: systemd chowns and chmods /dev/console,
        // which through a bind of the host's /dev/null (or the caller's terminal) would change
        // the host's.
        if let console = spec.console {
            _ = try dev.createFile("console", mode: 0o600)
            try Mount.bind(FilePath(console), onto: dev.openFile("console", CBERTH_O_PATH), readOnly: false)
        } else {
            try dev.makeNode("console", mode: S_IFCHR | 0o600, device: makeDevice(major: 1, minor: 3))
        }

        try Mount.make("tmpfs", onto: target("run", in: tree), flags: nosuid | nodev, options: "mode=755")
        try Mount.make("tmpfs", onto: target("tmp", in: tree), flags: nosuid | nodev, options: "mode=1777")

        // The host's resolver settings, read-only, where the image keeps a plain file (nspawn's
        // default copies it in; a bind leaves the image as it was).
        if let etc = try? tree.openDirectory(beneath: "etc", pathOnly: true, crossingMounts: true),
           try etc.status("resolv.conf")?.kind == .regular,
           try FileStatus.of("/etc/resolv.conf") != nil {
            try Mount.bind("/etc/resolv.conf", onto: etc.openFile("resolv.conf", CBERTH_O_PATH), readOnly: true)
        }
    }

    /// --bind/--bind-ro: the source is the user's host path; the destination is made inside the
    /// image, of the source's type, without following any symlink the image holds.
    private static func mountBind(_ bind: LaunchSpec.BindMount, in tree: Directory) throws {
        guard let source = try FileStatus.of(FilePath(bind.source)) else {
            throw LaunchError("--bind source \(bind.source) does not exist")
        }
        let destination = try target(FilePath(bind.destination), in: tree, file: source.kind != .directory)
        try Mount.bind(FilePath(bind.source), onto: destination, readOnly: bind.readOnly)
    }

    private static func dropCapabilities(keeping kept: UInt64) throws {
        // The highest capability this kernel knows; dropping past it fails with EINVAL.
        let text = (try? Descriptor.open("/proc/sys/kernel/cap_last_cap", O_RDONLY).readAll(limit: 16)) ?? []
        let last = Int(String(decoding: text.filter { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }, as: UTF8.self)) ?? 40
        for cap in 0...last where kept & (1 << UInt64(cap)) == 0 {
            _ = try retryingInterrupts("drop capability \(cap)") { cberth_drop_bounding_capability(Int32(cap)) }
        }
    }

    // MARK: The payload

    private static let defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

    private static func exec(_ spec: LaunchSpec) throws -> Never {
        let user = try ImageUser.lookup(spec.user ?? "root")
        var environment = [
            "PATH=\(defaultPath)", "container=berth", "container_uuid=\(spec.uuid)", "TERM=\(spec.term)",
            "HOME=\(user.home)", "USER=\(user.name)", "LOGNAME=\(user.name)", "SHELL=\(user.shell)",
        ]
        for setting in spec.environment {
            let key = setting.prefix { $0 != "=" }
            environment.removeAll { $0.hasPrefix(key + "=") }
            environment.append(setting)
        }

        var argv: [String]
        var program: String
        if spec.boot {
            guard let initPath = ["/usr/lib/systemd/systemd", "/lib/systemd/systemd", "/sbin/init"].first(where: { (path: String) in access(path, X_OK) == 0 }) else {
                throw LaunchError("the image has no init (/usr/lib/systemd/systemd, /lib/systemd/systemd or /sbin/init)")
            }
            program = initPath
            argv = [initPath] + spec.arguments
        } else if spec.arguments.isEmpty {
            // The user's login shell, in their home, as nspawn starts it.
            program = user.shell
            argv = ["-" + (user.shell.split(separator: "/").last.map(String.init) ?? "sh")]
        } else {
            program = try resolve(spec.arguments[0])
            argv = spec.arguments
        }

        let directory = spec.workingDirectory ?? (spec.arguments.isEmpty && !spec.boot ? user.home : "/")
        if chdir(directory) != 0 { throw LaunchError("cannot change to \(directory) in the container: \(SystemError.last("chdir").errno)") }

        try SyscallFilter.install(capabilities: keptCapabilities(privateNetwork: spec.privateNetwork))
        if user.uid != 0 || spec.user != nil {
            var groups = user.groups
            _ = try retryingInterrupts("setgroups") { setgroups(groups.count, &groups) }
            _ = try retryingInterrupts("setgid") { setgid(user.gid) }
            _ = try retryingInterrupts("setuid") { setuid(user.uid) }
        }
        _ = cberth_close_from(3)

        let cArgs = argv.map { strdup($0) } + [nil]
        let cEnv = environment.map { strdup($0) } + [nil]
        if spec.asPID2 {
            _ = cberth_run_as_pid2(program, cArgs, cEnv)
        } else {
            execve(program, cArgs, cEnv)
        }
        throw LaunchError("cannot run \(program): \(SystemError.last("execve").errno)")
    }

    /// `name` as execvp would find it on the container's PATH.
    private static func resolve(_ name: String) throws -> String {
        if name.contains("/") { return name }
        for dir in defaultPath.split(separator: ":") {
            let candidate = "\(dir)/\(name)"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        throw LaunchError("\(name) is not in the container's PATH")
    }
}
