import BerthSystem
import CBerth
import Glibc
import SystemPackage

/// The process the user started (berth, or `berth-stage --supervise` that berth becomes by exec,
/// with the same pid): it starts the container in new namespaces, passes it the launch
/// description, relays signals, and returns its exit status. Every mount the container makes
/// lives in the container's own mount namespaces and goes with its last process; the supervisor
/// makes none on the host.
public enum Supervisor {
    /// What sets the container up and becomes its PID 1: `berth-stage` beside the berth binary, which
    /// starts several times faster than berth itself, or else berth's own hidden stage.
    static let stageExecutable: String = {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard n > 0 else { return "/proc/self/exe" }
        buffer[n] = 0
        let own = String(cString: buffer)
        guard let slash = own.lastIndex(of: "/") else { return "/proc/self/exe" }
        let stage = String(own[..<slash]) + "/berth-stage"
        return access(stage, X_OK) == 0 ? stage : "/proc/self/exe"
    }()

    /// A container whose PID 1 has been started: what supervising it takes. It crosses
    /// the exec into `berth-stage --supervise` as that command's arguments.
    public struct Started {
        /// The container's PID 1.
        public let pid: pid_t
        /// The process that set the container up, which ends once PID 1 runs; 0 once reaped.
        var setup: pid_t
        let boot: Bool
        let asPID2: Bool
        /// `--kill-signal=`: what PID 1 gets first when the supervisor is asked to stop it.
        var killSignal: Int32? = nil
        /// The machine's name, for the closing status line, unless `-q`.
        let machineName: String?
        /// The container's cgroups, removed when it ends.
        let cgroup: ContainerCgroup
        let console: ConsoleRelay?
        /// What keeps the container's range of user ids its own while it runs.
        let userRangeLocks: [Descriptor]
        /// The image's tree to mount again on the host when the container ends.
        var remount: TreeRemount? = nil
        /// The machine whose record (`MachineRecord`) goes when the container ends.
        public var machineRecord: String? = nil
        /// The machine whose network (`MachineNetwork`) berth made, torn down when it ends.
        var network: String? = nil
        /// The host's directories made for the container (`--bind=:DST`'s, an overlay's fresh
        /// layer and work directories), removed with everything in them when it ends.
        var temporaryDirectories: [FilePath] = []
        /// Lets `berth login` attach to the console through the socket listening on `listener`
        /// (a machine in the background).
        public func acceptLogins(on listener: Descriptor) {
            console?.logins = ConsoleSocket.Server(listener: listener)
        }
        public var hasConsole: Bool { console != nil }
        /// The container's cgroup in the unified hierarchy.
        public var cgroupPath: String? { cgroup.unified?.string }
        /// The container's notify socket, read while it runs.
        var notify: NotifyListener?
        /// A machine started in the background that reboots (exit 133) is started again, as
        /// systemd-nspawn@.service's `RestartForceExitStatus=133` does.
        public var restartsOnReboot = false

        var arguments: [String] {
            var fields = ["pid=\(pid)", "setup=\(setup)", "boot=\(boot ? 1 : 0)", "as-pid2=\(asPID2 ? 1 : 0)"]
            if let killSignal { fields.append("kill-signal=\(killSignal)") }
            if let machineName { fields.append("machine=\(Hex.encode(Array(machineName.utf8)))") }
            if let unified = cgroup.unified { fields.append("cgroup=\(unified)") }
            if !cgroup.legacy.isEmpty { fields.append("v1-cgroups=" + cgroup.legacy.map { Hex.encode(Array($0.string.utf8)) }.joined(separator: ",")) }
            if let console {
                fields += ["console=\(console.master.rawValue)", "console-slave=\(console.slave.rawValue)",
                           "console-output=\(console.output)", "console-input=\(console.input ? 1 : 0)"]
                if let saved = console.savedTerminal { fields.append("terminal=\(Hex.encode(saved))") }
                if let logins = console.logins { fields.append("console-logins=\(logins.listener.rawValue)") }
            }
            return fields + (remount?.arguments ?? []) + (machineRecord.map { ["record=\(Hex.encode(Array($0.utf8)))"] } ?? [])
                + (restartsOnReboot ? ["restart=1"] : []) + (network.map { ["network=\(Hex.encode(Array($0.utf8)))"] } ?? [])
                + temporaryDirectories.map { "temporary=\(Hex.encode($0.bytes))" }
                + (notify.map { ["notify=\($0.socket.rawValue)", "notify-ready=\($0.ready?.rawValue ?? "none")"] } ?? [])
        }

        /// The descriptors the supervisor keeps across its exec.
        var descriptors: [Int32] {
            (console.map { [$0.master.rawValue, $0.slave.rawValue] + ($0.logins.map { [$0.listener.rawValue] } ?? []) } ?? [])
                + userRangeLocks.map(\.rawValue) + (notify.map { [$0.socket.rawValue] } ?? [])
        }
    }

    /// Runs `spec` and returns the exit status berth should exit with: the command's own, or
    /// 128 plus the signal that killed it.
    public static func run(_ spec: LaunchSpec) throws -> Int32 {
        var mask = sigset_t()
        pthread_sigmask(SIG_SETMASK, nil, &mask)
        // Supervised here, in the caller's process (a recipe step): its signals come back after.
        defer { pthread_sigmask(SIG_SETMASK, &mask, nil) }
        return supervise(try start(spec))
    }

    /// Starts the container and its cgroup, and hands the launch description and the mounts made
    /// for it to the process that sets it up. The signals the supervisor takes are blocked from
    /// here on: they stay pending across the exec into `berth-stage --supervise`, as the
    /// container's exit does.
    ///
    /// The order matters, and is nspawn's. The supervisor, still the host's root, makes every
    /// mount the container needs as a detached mount, mapped through a user namespace with the
    /// container's id map. The setup process (`ContainerStage`, in a mount namespace of its own
    /// that the host's user namespace owns) attaches them and pivots into the root; only then is
    /// PID 1 made, in the container's user namespace and the others it owns, on a copy of that
    /// mount namespace. The kernel locks every mount of a copy into a less privileged user
    /// namespace to its flags and its place, so root inside can neither make a read-only mount
    /// writable nor unmount what hides the host. PID 1 is the supervisor's child (CLONE_PARENT).
    public static func start(_ spec: LaunchSpec, remounting remount: TreeRemount? = nil) throws -> Started {
        var spec = spec
        let users = try spec.privateUsers.allocate(for: spec.machineName)
        spec.userRange = users?.range

        var unblocked = sigset_t()
        pthread_sigmask(SIG_BLOCK, &handledSignals, &unblocked)
        // A start that fails gives the caller its signals back (a recipe build goes on after it).
        var started = false
        defer { if !started { pthread_sigmask(SIG_SETMASK, &unblocked, nil) } }
        let (streams, console) = try ConsoleRelay.make(spec.consoleMode, boot: spec.boot)
        spec.consoleStreams = streams
        if !spec.quiet {
            // The terminal may be raw already: a line ends with CR LF there.
            let end = Terminal.isTerminal(2) ? "\r\n" : "\n"
            var banner = "Spawning container \(spec.machineName) on \(spec.displayRoot ?? spec.tree.root.string).\(end)"
            if console?.escapes == true { banner += "Press ^] three times within 1s to kill container.\(end)" }
            _ = banner.withCString { write(2, $0, strlen($0)) }
        }
        // What the mounts are mapped through: the container's own namespace does not exist yet.
        let userNamespace = try users.map { try $0.range.makeUserNamespace() }
        let networkSettings = try spec.network.map { _ in try NetworkSettings.host() }
        var resolvConf: FilePath?
        defer { _ = resolvConf?.withPlatformString { unlink($0) } }  // its mount holds it from there
        let notify = try NotifyListener.bind(ready: spec.readyWord)
        spec.notifySocket = notify.path
        defer { _ = notify.path.withPlatformString { unlink($0) } }  // as resolv.conf's
        if let request = spec.network, let settings = networkSettings {
            try request.validate(machine: spec.machineName)
            spec.privateNetwork = true
            spec.awaitsNetwork = true
            let path = settings.runtimeDirectory.appending("resolv-\(spec.uuid).conf")
            try Descriptor.open(path, O_WRONLY | O_CREAT | O_TRUNC, mode: 0o644).writeAll(GuestNetworkFiles.resolvConf())
            resolvConf = path
        }
        spec.cgroupLayout = ContainerCgroup.hostLayout
        (spec.resolvConfAction, spec.resolvConf) = HostFiles.resolvConf(mode: spec.resolvConfMode, ownNetwork: spec.privateNetwork,
                                                                         readOnly: !spec.rootIsWritable, generated: resolvConf)
        (spec.timezoneAction, spec.timezone) = HostFiles.timezone(mode: spec.timezoneMode, readOnly: !spec.rootIsWritable)
        spec.journalTreePart = try spec.journalLink.prepareHost(machineID: spec.uuid, treePath: FilePath(spec.displayRoot ?? spec.tree.root.string),
                                                                ephemeral: spec.ephemeral && spec.volatile != .overlay)

        let (socket, childSocket) = try MessageSocket.pair()
        let executable = try Descriptor.open(FilePath(stageExecutable), CBERTH_O_PATH)
        let argv = [strdup("berth"), strdup(ContainerStage.subcommand), nil]
        let envp: [UnsafeMutablePointer<CChar>?] = [nil]
        defer { argv.forEach { free($0) } }
        var setup: pid_t = 0
        var report: Int32 = -1
        // The uuid may be the image's (its /etc/machine-id), which two runs of one tree share.
        var sweepGuard: Descriptor?
        let cgroup = try ContainerCgroup.make(name: "\(spec.uuid)-\(Hex.random(8))", limits: spec.limits, sweepGuard: &sweepGuard) { cgroup in
            setup = cberth_spawn(Namespaces.mount.rawValue, executable.rawValue, nil, argv, envp, childSocket.descriptor.rawValue,
                                 cgroup.intoCgroup?.rawValue ?? -1, 0, &report)
            guard setup > 0 else { throw LaunchError("cannot start the container: \(SystemError.last("clone"))") }
            // Where it could not be made in its cgroups, it is moved there before it does anything.
            do {
                try cgroup.place(setup)
            } catch {
                kill(setup, SIGKILL)
                waitpid(setup, nil, 0)
                close(report)
                throw error
            }
            return cgroup
        }
        withExtendedLifetime(childSocket) {}
        spec.legacyCgroups = cgroup.entered
        var pid: pid_t = 0
        var networked = false
        var temporaries: [FilePath] = []
        do {
            for i in spec.bindMounts.indices where spec.bindMounts[i].source.isEmpty && !spec.bindMounts[i].sourceInImage {
                spec.bindMounts[i].source = try makeTemporaryDirectory()
                temporaries.append(spec.bindMounts[i].source)
            }
            // An overlay's writable layer needs a work directory on its file system: beside it,
            // or with a fresh layer (an empty path, nspawn's) both in a directory of their own.
            // (A writable layer in the tree gets its work directory there, from PreparedMounts.)
            for i in spec.overlayMounts.indices where !spec.overlayMounts[i].readOnly && spec.overlayMounts[i].layersInImage.last != true {
                guard let top = spec.overlayMounts[i].layers.last else { continue }
                if top.isEmpty {
                    let directory = try makeTemporaryDirectory()
                    temporaries.append(directory)
                    let opened = try Directory(opening: directory)
                    for name in ["upper", "work"] { try opened.makeDirectory(FilePath(name), mode: 0o755) }
                    spec.overlayMounts[i].layers[spec.overlayMounts[i].layers.count - 1] = directory.appending("upper")
                    spec.overlayMounts[i].work = directory.appending("work")
                } else {
                    // By its real path, the work directory beside it: on its file system, and
                    // removed by a path that has no symlink (removeTemporaryDirectory).
                    guard let real = realPath(top), let name = real.lastComponent, try FileStatus.of(real)?.kind == .directory else {
                        throw LaunchError("--overlay's writable layer \(top) is not a directory; make it first")
                    }
                    let workName = FilePath(".#\(name.string)-berth-work-\(Hex.random(8))")
                    try Directory(opening: real.removingLastComponent()).makeDirectory(workName, mode: 0o700)
                    temporaries.append(real.removingLastComponent().appending(workName.components))
                    spec.overlayMounts[i].layers[spec.overlayMounts[i].layers.count - 1] = real
                    spec.overlayMounts[i].work = real.removingLastComponent().appending(workName.components)
                }
            }
            if let users { try cgroup.delegate(to: users.range.base) }
            let mounts = try PreparedMounts(for: spec, setup: setup, userNamespace: userNamespace, range: users?.range, console: console)
            temporaries += mounts.temporaryDirectories
            spec.descriptorRoles = mounts.roles
            let sent = Result { try socket.send(try spec.encoded(), descriptors: mounts.descriptors.map(\.rawValue)) }
            let execed = cberth_spawn_result(setup, report) == 0
            report = -1  // closed by cberth_spawn_result
            guard execed else {
                setup = 0  // reaped
                throw LaunchError("cannot start the container: \(SystemError.last("execve \(stageExecutable)"))")
            }
            try sent.get()
            pid = try ContainerStage.SetupReport.receive(on: socket)
            sweepGuard = nil  // the setup process is in its v1 cgroups, and a sweep leaves them
            if let request = spec.network, let settings = networkSettings {
                // PID 1 is in its network namespace, and waits for this before its payload runs.
                let made = try MachineNetwork.setUp(machine: spec.machineName, leader: pid, request: request, settings: settings)
                networked = true
                if spec.boot, let config = made.networkdConfig {
                    try GuestNetworkFiles.place(networkd: config, leader: pid, owner: users?.range.base ?? 0)
                }
                if let notice = made.notice, !spec.quiet { _ = "berth: \(notice)\n".withCString { write(2, $0, strlen($0)) } }
                try socket.send(ContainerStage.Handshake.networkReady, descriptors: [])
            }
            started = true
            var result = Started(pid: pid, setup: setup, boot: spec.boot, asPID2: spec.asPID2,
                                 machineName: spec.quiet ? nil : spec.machineName, cgroup: cgroup, console: console,
                                 userRangeLocks: users?.locks ?? [], remount: remount)
            result.network = networked ? spec.machineName : nil
            result.killSignal = spec.killSignal
            result.temporaryDirectories = temporaries
            result.notify = notify.listener
            notify.listener.started(leader: pid)
            return result
        } catch {
            temporaries.forEach(removeTemporaryDirectory)
            if report >= 0 { close(report) }
            for child in [pid, setup] where child > 0 {
                kill(child, SIGKILL)
                waitpid(child, nil, 0)
            }
            if networked, let settings = networkSettings { try? MachineNetwork.tearDown(machine: spec.machineName, settings: settings) }
            cgroup.remove()
            throw error
        }
    }

    /// nspawn's fresh directory for `--bind=:DST` and an empty `--overlay` layer: made on the host, under /var/tmp (on disk, as
    /// the container's writes to it may be large), mode 0755 and root's (the container's root
    /// through the bind's id mapping).
    private static func makeTemporaryDirectory() throws -> FilePath {
        var template = Array("/var/tmp/berth-bind-XXXXXX".utf8CString)
        guard template.withUnsafeMutableBufferPointer({ buffer in buffer.baseAddress.flatMap { mkdtemp($0) } }) != nil else {
            throw LaunchError("cannot make a fresh directory for the container: \(SystemError.last("mkdtemp /var/tmp"))")
        }
        let path = FilePath(platformString: template)
        guard chmod(path.string, 0o755) == 0 else {
            let error = SystemError.last("chmod \(path)")
            removeTemporaryDirectory(path)
            throw LaunchError("cannot make a fresh directory for the container: \(error)")
        }
        return path
    }

    /// Removes what `path` names, its way there opened from / without following a symlink: a
    /// container may have replaced a directory of its tree on the way to a work directory made
    /// there, and a symlink would take the removal elsewhere on the host. Such a path is left.
    static func removeTemporaryDirectory(_ path: FilePath) {
        guard let name = path.lastComponent, let root = try? Directory(opening: "/"),
              let parent = try? root.openDirectory(beneath: FilePath(root: nil, path.removingLastComponent().components), crossingMounts: true)
        else { return }
        try? parent.removeTree(FilePath(root: nil, [name]))
    }

    /// Replaces this process with `berth-stage --supervise`, which supervises `started` and
    /// exits with its status: a running container is watched by a process of a few megabytes
    /// instead of the whole berth binary. PID 1 is still setting up, so its setup and
    /// this exec run side by side. It stays this process's child, and
    /// `descriptors` (the image's lock) and the console stay open across the exec. Returns when
    /// there is no `berth-stage` beside berth or it cannot be started; the caller then supervises.
    public static func handOver(_ started: Started, keeping descriptors: [Int32]) {
        guard stageExecutable != "/proc/self/exe" else { return }
        let kept = descriptors + started.descriptors
        for fd in kept { _ = fcntl(fd, F_SETFD, 0) }
        // Its title in ps names the machine, so an admin tells supervisors apart.
        let title = started.machineRecord.map { "berth-stage [\(Printable.escaping($0))]" } ?? "berth-stage"
        let restart = started.restartsOnReboot ? ["--"] + CommandLine.arguments : []
        let argv = ([title, supervisorFlag] + started.arguments + restart).map { strdup($0) } + [nil]
        execv(stageExecutable, argv)
        argv.forEach { free($0) }
        for fd in kept { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
    }

    public static let supervisorFlag = "--supervise"

    /// `berth-stage --supervise ARGUMENTS`: supervises the container berth started, exits with
    /// its status.
    public static func supervise(arguments: some Sequence<String>) -> Never {
        let (own, berth) = splitRestart(arguments)
        restartArguments = berth
        guard let started = Started(arguments: own) else {
            _ = "berth: error: berth-stage --supervise was given damaged arguments\n".withCString { write(2, $0, strlen($0)) }
            exit(1)
        }
        let code = supervise(started)
        if code == ExitStatus.rebootCode && started.restartsOnReboot { restart() }
        exit(code)
    }

    /// Starts the machine again, by berth's own command line, which the process berth became by
    /// exec still has (its environment too, so berth knows it is the background half). Its
    /// locks, console and everything else this process held close first: the new start takes
    /// them afresh. Returns only when berth cannot be run.
    public static func restart() {
        let berth = stageExecutable == "/proc/self/exe" ? "/proc/self/exe"
            : String(stageExecutable.dropLast("berth-stage".count)) + "berth"
        _ = cberth_close_from(3)
        let argv = restartArguments.map { strdup($0) } + [nil]
        execv(berth, argv)
        argv.forEach { free($0) }
    }

    /// berth's command line, for `restart`: berth-stage --supervise is given it after `--`.
    nonisolated(unsafe) public static var restartArguments: [String] = []

    /// `supervise(arguments:)`'s own arguments, and berth's command line after `--`.
    static func splitRestart(_ arguments: some Sequence<String>) -> (own: [String], berth: [String]) {
        let all = Array(arguments)
        guard let dash = all.firstIndex(of: "--") else { return (all, []) }
        return (Array(all[..<dash]), Array(all[(dash + 1)...]))
    }

    /// SIGCHLD and what berth relays or acts on.
    nonisolated(unsafe) private static var handledSignals: sigset_t = {
        var set = sigset_t()
        sigemptyset(&set)
        for sig in [SIGCHLD, SIGINT, SIGTERM, SIGHUP, SIGWINCH, SIGIO] { sigaddset(&set, sig) }
        return set
    }()

    /// Waits for the container to end, passing signals on, and returns berth's exit status.
    /// The signals it takes are blocked already: by `start`, in this process or in berth
    /// before its exec into `berth-stage --supervise` (a blocked mask survives an exec).
    public static func supervise(_ started: Started) -> Int32 {
        let pid = started.pid
        var setup = started.setup
        defer {
            started.cgroup.remove()
            started.temporaryDirectories.forEach(removeTemporaryDirectory)
        }
        // The machine's ports on ::1, which NAT cannot carry (LoopbackRelay), served from here.
        var loopback: LoopbackRelay?
        if let name = started.network {
            do {
                loopback = try LoopbackRelay.forMachine(name, settings: try NetworkSettings.host())
            } catch {
                let line = "berth: warning: the machine's ports are not forwarded on ::1: \(error)\n"
                _ = line.withCString { write(2, $0, strlen($0)) }
            }
        }
        let signals = started.console == nil && loopback == nil ? -1 : cberth_signalfd(&handledSignals)
        defer { if signals >= 0 { close(signals) } }

        started.notify?.signalOnInput()
        defer { started.notify?.stop() }
        var interrupts = 0
        var escaped = false
        var sig: Int32 = SIGCHLD  // the child may have ended before its exit could be waited for
        while true {
            if sig == SIGCHLD {
                var status: Int32 = 0
                if setup > 0 && waitpid(setup, nil, WNOHANG) == setup { setup = 0 }
                if waitpid(pid, &status, WNOHANG) == pid {
                    // The setup process ends before PID 1 goes on, or as soon as PID 1 is gone.
                    if setup > 0 { waitpid(setup, nil, 0) }
                    if let name = started.network {
                        loopback = nil  // its listeners close before the network goes
                        do {
                            try MachineNetwork.tearDownInBackground(machine: name, settings: try NetworkSettings.host())
                        } catch {
                            let line = "berth: warning: cannot remove the network of machine \(name) (\(error)); the next berth command does\n"
                            _ = line.withCString { write(2, $0, strlen($0)) }
                        }
                    }
                    let exit = ExitStatus(waitStatus: status, boot: started.boot)
                    if let name = started.machineRecord {
                        MachineRecord.remove(name)
                        // The socket its start waited on too, which only a start holding the name
                        // (as this process does until it ends) may bind, so no other reader
                        // removes it.
                        _ = (try? MachineRecord.notifyPath(name))?.withPlatformString { unlink($0) }
                    }
                    if let remount = started.remount {
                        do {
                            try remount.mount()
                        } catch {
                            let line = "berth: warning: cannot mount the image's tree at \(remount.target) again (\(error)); the next berth command does\n"
                            _ = line.withCString { write(2, $0, strlen($0)) }
                        }
                    }
                    started.console?.drain()
                    started.console?.restore()
                    if let name = started.machineName {
                        // After a console shown on a terminal, on a line of its own, so that neither
                        // it nor the caller's prompt lands on the console's last line.
                        let shown = started.console.map { $0.output >= 0 && Terminal.isTerminal($0.output) } ?? false
                        let line = (shown ? "\n" : "") + (escaped ? "Container \(name) terminated by ^]^]^].\n" : exit.sentence(machine: name))
                        _ = line.withCString { write(2, $0, strlen($0)) }
                    }
                    return exit.code
                }
            } else if sig == SIGIO {
                started.notify?.drain()
            } else if sig != SIGWINCH && sig > 0 {
                // A booted system is asked to power off (systemd's SIGRTMIN+3), and a command under
                // --as-pid2's init gets the signal itself; a command as PID 1 (which the kernel
                // shields from signals it does not handle), or a second request, ends at once.
                interrupts += 1
                let gentle = started.killSignal ?? (started.boot ? cberth_sigrtmin_plus(3) : started.asPID2 ? sig : SIGKILL)
                kill(pid, interrupts == 1 ? gentle : SIGKILL)
            }
            if let console = started.console, signals >= 0 {
                sig = console.relay(signals: signals, loopback: loopback) {
                    escaped = true
                    kill(pid, SIGKILL)
                }
            } else if let relay = loopback, signals >= 0 {
                var fds = [pollfd(fd: signals, events: Int16(POLLIN), revents: 0)] + relay.pollDescriptors
                sig = 0
                if poll(&fds, nfds_t(fds.count), -1) > 0 {
                    relay.handle(ready: Array(fds.dropFirst()))
                    var info = [UInt8](repeating: 0, count: 128)  // struct signalfd_siginfo
                    if fds[0].revents != 0, info.withUnsafeMutableBytes({ read(signals, $0.baseAddress, $0.count) }) == 128 {
                        sig = Int32(info.withUnsafeBytes { $0.load(as: UInt32.self) })
                    }
                }
            } else {
                var info = siginfo_t()
                sig = sigwaitinfo(&handledSignals, &info)
            }
        }
    }
}

extension Supervisor.Started {
    /// What `arguments` (from `berth-stage --supervise`) say; nil when they are damaged.
    init?(arguments: some Sequence<String>) {
        var fields: [Substring: Substring] = [:], ordered: [(key: Substring, value: Substring)] = []
        for argument in arguments {
            guard let equals = argument.firstIndex(of: "=") else { return nil }
            fields[argument[..<equals]] = argument[argument.index(after: equals)...]
            ordered.append((argument[..<equals], argument[argument.index(after: equals)...]))
        }
        // 0 and negative pids name groups of processes (or all of them) to kill and waitpid.
        guard let pid = fields["pid"].flatMap({ pid_t($0) }), pid > 0 else { return nil }
        self.pid = pid
        setup = fields["setup"].flatMap { pid_t($0) }.map { max($0, 0) } ?? 0
        boot = fields["boot"] == "1"
        asPID2 = fields["as-pid2"] == "1"
        killSignal = fields["kill-signal"].flatMap { Int32($0) }
        machineName = fields["machine"].flatMap { Hex.decode(String($0)) }.map { String(decoding: $0, as: UTF8.self) }
        // An earlier berth's record names the devices and limits cgroups apart, by plain paths.
        let legacy = fields["v1-cgroups"].map { $0.split(separator: ",").compactMap { Hex.decode(String($0)) }.map { FilePath(String(decoding: $0, as: UTF8.self)) } }
            ?? (fields["devices-cgroup"].map { [FilePath(String($0))] } ?? []) + (fields["limits-cgroups"].map { $0.split(separator: ",").map { FilePath(String($0)) } } ?? [])
        cgroup = ContainerCgroup(unified: fields["cgroup"].map { FilePath(String($0)) }, intoCgroup: nil, legacy: legacy)
        let savedTerminal = fields["terminal"].flatMap { Hex.decode(String($0)) }
        let output = fields["console-output"].flatMap { Int32($0) } ?? -1, input = fields["console-input"] == "1"
        let slave = fields["console-slave"].flatMap { Int32($0) }
        console = fields["console"].flatMap { Int32($0) }.map { master in
            ConsoleRelay(master: Descriptor(owning: master), slave: Descriptor(owning: slave ?? -1), output: output, input: input,
                         savedTerminal: savedTerminal, logins: fields["console-logins"].flatMap { Int32($0) }.map { Descriptor(owning: $0) })
        }
        // The range's lock stays open across the exec, unnamed: it is released when this ends.
        userRangeLocks = []
        remount = fields["remount-at"] == nil ? nil : TreeRemount(fields: ordered)
        machineRecord = fields["record"].flatMap { Hex.decode(String($0)) }.map { String(decoding: $0, as: UTF8.self) }
        restartsOnReboot = fields["restart"] == "1"
        network = fields["network"].flatMap { Hex.decode(String($0)) }.map { String(decoding: $0, as: UTF8.self) }
        notify = fields["notify"].flatMap { Int32($0) }.map { fd in
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            return NotifyListener(socket: Descriptor(owning: fd), ready: fields["notify-ready"].flatMap { NotifyListener.Ready(rawValue: String($0)) })
        }
        temporaryDirectories = ordered.filter { $0.key == "temporary" }.compactMap { Hex.decode(String($0.value)).map(FilePath.init(bytes:)) }
        if fields["remount-at"] != nil && remount == nil { return nil }
    }
}
