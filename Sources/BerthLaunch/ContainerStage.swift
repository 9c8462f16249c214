import BerthSystem
import CBerth
import Glibc
import SystemPackage

/// The container's first process. The supervisor starts it in new mount, PID, UTS and IPC
/// namespaces (a user namespace too, unless --private-users=no, and network with
/// --private-network) as a fresh exec of berth-stage, so it runs single-threaded with no state
/// from the supervisor. It receives the launch description and the mounts the supervisor made
/// for it (`PreparedMounts`), sets the container up as systemd-nspawn does, and execs the
/// payload, which becomes PID 1.
public enum ContainerStage {
    /// The hidden subcommand that runs this stage.
    public static let subcommand = "__container-stage"
    /// argv[1] of --as-pid2's init, run from its sealed copy.
    public static let initFlag = "--as-pid2-init"

    /// The capability bounding set the container keeps: nspawn's default; with a private
    /// network the container may manage it, so CAP_NET_ADMIN stays, as in nspawn.
    static func keptCapabilities(privateNetwork: Bool) -> Capabilities {
        Capabilities.nspawnDefault.union(privateNetwork ? .netAdmin : [])
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

    /// --as-pid2's init, from its sealed copy: `arguments` are `(berth-init) --as-pid2-init PROGRAM
    /// ARGV...`. It stays PID 1, runs PROGRAM as PID 2 in a session of its own (with the terminal
    /// on standard input as its controlling terminal, when there is one), reaps every orphan,
    /// passes each signal it gets on to PROGRAM, and exits with PROGRAM's status (128 plus the
    /// signal that killed it). Never returns.
    public static func runInit(_ arguments: [String]) -> Never {
        guard arguments.count >= 4 else { _exit(127) }
        var all = sigset_t()
        sigfillset(&all)
        sigprocmask(SIG_BLOCK, &all, nil)
        // Named before the payload starts, so it never sees another name; its exec renames it.
        _ = cberth_set_name("(berth-init)")
        let cArgs = arguments.dropFirst(3).map { strdup($0) } + [nil]
        var report: Int32 = -1
        let payload = cberth_spawn(0, -1, arguments[2], cArgs, environ, -1, -1, -1, -1, 1, &report)
        if payload < 0 || cberth_spawn_result(payload, report) != 0 {
            let text = "berth: error: cannot run \(arguments[2]): \(SystemError.last("execve").errno)\n"
            _ = text.withCString { Glibc.write(2, $0, strlen($0)) }
            _exit(127)
        }
        while true {
            var info = siginfo_t()
            let signal = sigwaitinfo(&all, &info)
            if signal < 0 { continue }
            if signal != SIGCHLD {
                kill(payload, signal)
                continue
            }
            var status: Int32 = 0
            while case let done = waitpid(-1, &status, WNOHANG), done > 0 {
                // The payload is gone: so is the container (the kernel ends the rest with PID 1).
                if done == payload { _exit(ExitStatus(waitStatus: status).code) }
            }
        }
    }

    /// The launch description and the descriptors that came with it, by role.
    private static func receive() throws -> (LaunchSpec, [String: [Descriptor]]) {
        let (bytes, descriptors) = try MessageSocket(descriptor: Descriptor(owning: 3)).receive()
        guard let spec = LaunchSpec(decoding: bytes), spec.descriptorRoles.count == descriptors.count else {
            throw LaunchError("the launch description is damaged")
        }
        var byRole: [String: [Descriptor]] = [:]
        for (role, descriptor) in zip(spec.descriptorRoles, descriptors) { byRole[role, default: []].append(descriptor) }
        return (spec, byRole)
    }

    private static func run() throws -> Never {
        let (spec, mounts) = try receive()
        func mount(_ role: String) throws -> DetachedMount {
            guard let descriptor = mounts[role]?.first else { throw LaunchError("the launch description lacks its \(role)") }
            return DetachedMount(descriptor)
        }
        // If the supervisor dies, so does the container: PID 1's death ends the PID namespace,
        // and with its last process the mount namespace and every mount in it.
        _ = try retryingInterrupts("prctl(PR_SET_PDEATHSIG)") { cberth_set_parent_death_signal(SIGKILL) }

        // A session of its own in every case: left in the caller's, it would keep the caller's
        // terminal as its controlling tty, which /dev/tty opens (and TIOCSTI types into) even
        // when no standard stream is that terminal.
        _ = try retryingInterrupts("setsid") { setsid() }
        if let console = mounts["console"]?.first {
            // The pty becomes the container's terminal, in place of each of the caller's streams
            // that is a terminal.
            _ = try retryingInterrupts("TIOCSCTTY") { cberth_set_controlling_terminal(console.rawValue) }
            for target in spec.consoleStreams { _ = try retryingInterrupts("dup2") { dup2(console.rawValue, target) } }
        }
        // The supervisor placed this process in its cgroup before sending the description: it
        // becomes the root of all the container sees of cgroups.
        _ = try retryingInterrupts("unshare(CLONE_NEWCGROUP)") { cberth_unshare_cgroup_namespace() }
        try Mount.makePrivate("/")
        let root = try mount("root")
        try root.attach(onto: mount("root-target").descriptor)
        let tree = Directory(root.descriptor, displayPath: spec.tree.root.string)
        try mountAPIFileSystems(in: tree, spec: spec, mount: mount)
        for (bind, source) in zip(spec.bindMounts, mounts["bind"] ?? []) {
            try attach(DetachedMount(source), at: bind.destination, in: tree)
        }
        if spec.readOnly { try root.set(.readOnly, recursive: false) }

        try spec.hostname.withCString { name in
            _ = try retryingInterrupts("sethostname") { sethostname(name, strlen(name)) }
        }
        if spec.privateNetwork {
            _ = try retryingInterrupts("bring up lo") { cberth_interface_up("lo") }
        }
        _ = try retryingInterrupts("fchdir") { fchdir(root.descriptor.rawValue) }
        try Mount.pivotRoot(to: ".")
        try Capabilities.limitBoundingSet(to: keptCapabilities(privateNetwork: spec.privateNetwork))
        try exec(spec, initCopy: mounts["init"]?.first)
    }

    // MARK: File systems

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

    /// Attaches `mount` at `path` beneath the root, made of the mount's kind (file or directory)
    /// where missing, without following any symlink the image holds.
    private static func attach(_ mount: DetachedMount, at path: FilePath, in tree: Directory) throws {
        let isDirectory = try mount.descriptor.status().kind == .directory
        try mount.attach(onto: target(path, in: tree, file: !isDirectory))
    }

    private static func mountAPIFileSystems(in tree: Directory, spec: LaunchSpec, mount: (String) throws -> DetachedMount) throws {
        let nosuid = UInt(MS_NOSUID), nodev = UInt(MS_NODEV), noexec = UInt(MS_NOEXEC)

        // A proc of the container's own PID namespace, mounted from inside its user namespace.
        try Mount.make("proc", onto: target("proc", in: tree), flags: nosuid | nodev | noexec)
        // What a container must not change or read of the host's kernel, as nspawn protects it.
        let proc = try tree.openDirectory(beneath: "proc", pathOnly: true, crossingMounts: true)
        for name in ["sys", "sysrq-trigger"] where try proc.status(FilePath(name)) != nil {
            let p = proc.procPath(FilePath(name))
            try Mount.bind(p, at: p, recursive: name == "sys")
            try Mount.remountReadOnly(p, extraFlags: nosuid | nodev | noexec)
        }
        for name in ["kcore", "keys", "kallsyms", "timer_list", "sched_debug", "latency_stats", "key-users", "config.gz"]
            where try proc.status(FilePath(name))?.kind == .regular {
            try Mount.bind("/dev/null", at: proc.procPath(FilePath(name)), recursive: false)
        }
        for name in ["acpi", "scsi", "irq", "bus", "fs"] where try proc.status(FilePath(name))?.kind == .directory {
            try Mount.make("tmpfs", at: proc.procPath(FilePath(name)),
                           flags: UInt(MS_RDONLY) | nosuid | nodev | noexec, options: "mode=555")
        }

        if spec.privateNetwork {
            try Mount.make("sysfs", onto: target("sys", in: tree), flags: UInt(MS_RDONLY) | nosuid | nodev | noexec)
        } else {
            try mount("sys").attach(onto: target("sys", in: tree))
        }
        let sys = try tree.openDirectory(beneath: "sys", pathOnly: true, crossingMounts: true)
        // The firmware's tables (ACPI, EFI, DMI) are the host's: nothing of them shows inside.
        if try sys.status("firmware")?.kind == .directory {
            try Mount.make("tmpfs", at: sys.procPath("firmware"), flags: UInt(MS_RDONLY) | nosuid | nodev | noexec, options: "mode=555")
        }
        if ContainerCgroup.unifiedHierarchy() != nil, try sys.status("fs/cgroup")?.kind == .directory {
            let cgroup = try sys.openDirectory(beneath: "fs/cgroup", pathOnly: true, crossingMounts: true)
            try Mount.make("cgroup2", onto: cgroup.descriptor, flags: nosuid | nodev | noexec)
        }

        try mount("dev").attach(onto: target("dev", in: tree))
        let dev = try tree.openDirectory(beneath: "dev", pathOnly: true, crossingMounts: true)
        try Mount.make("devpts", at: dev.procPath("pts"), flags: nosuid | noexec,
                       options: "newinstance,ptmxmode=0666,mode=620,gid=5")
        try Mount.make("tmpfs", at: dev.procPath("shm"), flags: nosuid | nodev, options: "mode=1777")
        try Mount.make("mqueue", at: dev.procPath("mqueue"), flags: nosuid | nodev | noexec)
        // The console: the container's own pty when berth relays one (otherwise the supervisor
        // made it a null device of the container's own). Never a host file: systemd chowns and
        // chmods /dev/console, which through a bind of the host's /dev/null (or the caller's
        // terminal) would change the host's.
        if spec.descriptorRoles.contains("console-mount") {
            try mount("console-mount").attach(onto: dev.openFile("console", CBERTH_O_PATH))
        }

        try Mount.make("tmpfs", onto: target("run", in: tree), flags: nosuid | nodev, options: "mode=755")
        try Mount.make("tmpfs", onto: target("tmp", in: tree), flags: nosuid | nodev, options: "mode=1777")

        // The host's resolver settings, read-only, where the image keeps a plain file (nspawn's
        // default copies it in; a bind leaves the image as it was).
        if spec.descriptorRoles.contains("resolv"),
           let etc = try? tree.openDirectory(beneath: "etc", pathOnly: true, crossingMounts: true),
           try etc.status("resolv.conf")?.kind == .regular {
            try mount("resolv").attach(onto: etc.openFile("resolv.conf", CBERTH_O_PATH))
        }
    }

    // MARK: The payload

    private static let defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

    private static func exec(_ spec: LaunchSpec, initCopy: Descriptor?) throws -> Never {
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

        let directory = spec.workingDirectory?.string ?? (spec.arguments.isEmpty && !spec.boot ? user.home : "/")
        if chdir(directory) != 0 { throw LaunchError("cannot change to \(directory) in the container: \(SystemError.last("chdir").errno)") }

        try SyscallFilter.install(capabilities: keptCapabilities(privateNetwork: spec.privateNetwork))
        if user.uid != 0 || spec.user != nil {
            var groups = user.groups
            _ = try retryingInterrupts("setgroups") { setgroups(groups.count, &groups) }
            _ = try retryingInterrupts("setgid") { setgid(user.gid) }
            _ = try retryingInterrupts("setuid") { setuid(user.uid) }
            // A change of ids clears the parent-death signal: set it again.
            _ = try retryingInterrupts("prctl(PR_SET_PDEATHSIG)") { cberth_set_parent_death_signal(SIGKILL) }
        }
        // --as-pid2: PID 1 becomes the init from its sealed copy; it runs `program` as PID 2.
        if initCopy != nil {
            argv = ["(berth-init)", initFlag, program] + argv
            program = "--as-pid2's init"
        }
        // Every descriptor above the standard streams closes; the init's copy, moved to 3, at
        // its exec.
        if let initCopy {
            _ = try retryingInterrupts("dup2") { dup2(initCopy.rawValue, 3) }
            _ = fcntl(3, F_SETFD, FD_CLOEXEC)
        }
        _ = cberth_close_from(initCopy == nil ? 3 : 4)

        let cArgs = argv.map { strdup($0) } + [nil]
        let cEnv = environment.map { strdup($0) } + [nil]
        if initCopy != nil {
            _ = cberth_execveat_empty(3, cArgs, cEnv)
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
