import BerthSystem
import CBerth
import CSeccomp
import Glibc
import SystemPackage

/// `berth shell [USER@]NAME [COMMAND...]`: a command, or the user's login shell, run inside a
/// running machine, with its exit status. Built on what runc exec, lxc-attach and nsenter
/// learned, and their CVEs:
/// - The joining process is single-threaded, as setns into a user or mount namespace needs:
///   berth itself without a terminal, a fresh exec of `berth-stage` beside the pty's relay. It
///   is non-dumpable before it enters anything, so nothing in the machine can trace it or open
///   its /proc files, its executable among them (CVE-2016-9962, CVE-2019-5736); only its child,
///   which the command replaces by exec, is in the machine's PID namespace and cgroup.
/// - Every descriptor but the streams closes before the exec, and the working directory is
///   the user's home inside, opened there (CVE-2024-21626).
/// - Users come from the machine's own /etc/passwd and /etc/group, read after entering its
///   mount namespace; no NSS module is ever loaded (CVE-2019-14271).
/// - It joins every namespace of the machine's PID 1, its cgroup, and runs with PID 1's
///   capability bounding set and the machine's system call filter.
/// - On a terminal, the command gets a pty of the machine's own devpts, made inside; the
///   caller's terminal never enters the machine (berth relays it from outside).
public enum MachineShell {
    /// berth-stage's hidden subcommand for the joining process.
    public static let subcommand = "__join"

    /// Runs `command` (empty: the login shell) as `user` in `machine`, and returns its exit
    /// status (128 plus a signal's number).
    public static func run(_ machine: MachineRecord, user: String, command: [String], term: String) throws -> Int32 {
        let terminals = ConsoleRelay.terminalStreams()
        let leader = machine.leader
        let filter = try MachineRecord.filterPath(machine.name)
        if terminals.isEmpty {
            // Nothing to relay: this process enters the machine itself, streams and all, and
            // passes signals on to the command. It is as fresh as an exec of berth-stage would
            // make it: one thread, nothing of the machine's seen yet, no descriptor the command
            // gets; and its executable no more reachable from inside (undumpable before it joins).
            do {
                try join(leader: leader, leaderStart: machine.leaderStart, filter: filter, changes: machine.filterChanges, user: user,
                         term: term, ptyStreams: [], command: command, socket: nil)
            } catch {
                throw LaunchError("cannot enter the machine: \(error)")
            }
        }
        let fields = ["leader=\(leader)", "leader-start=\(machine.leaderStart)", "filter=\(Hex.encode(Array(filter.string.utf8)))", "user=\(Hex.encode(Array(user.utf8)))", "term=\(Hex.encode(Array(term.utf8)))",
                      "pty=" + terminals.map(String.init).joined(separator: ",")] + (machine.filterChanges.isEmpty ? [] : ["filter-changes=\(Hex.encode(Array(machine.filterChanges.encoded.utf8)))"]) + command.map { "arg=\(Hex.encode(Array($0.utf8)))" }
        let argv = (["berth-stage", subcommand] + fields).map { strdup($0) } + [nil]
        let envp: [UnsafeMutablePointer<CChar>?] = [nil]
        defer { argv.forEach { free($0) } }
        let (socket, childSocket) = try MessageSocket.pair()
        let executable = try Descriptor.open(FilePath(Supervisor.stageExecutable), CBERTH_O_PATH)
        let null = try Descriptor.open("/dev/null", O_RDWR)
        // The caller's terminal stays outside: a stream that is one is /dev/null there, and the pty inside.
        let streams: [Int32] = (0..<3).map { terminals.contains($0) ? null.rawValue : $0 }

        var relay: ConsoleRelay?
        var signals: Int32 = -1
        var blocked = sigset_t(), previous = sigset_t()
        sigemptyset(&blocked)
        for sig in [SIGCHLD, SIGINT, SIGTERM, SIGHUP, SIGWINCH] { sigaddset(&blocked, sig) }
        pthread_sigmask(SIG_BLOCK, &blocked, &previous)
        defer { pthread_sigmask(SIG_SETMASK, &previous, nil) }

        let pid = streams.withUnsafeBufferPointer { buffer in
            cberth_spawn_with_streams(executable.rawValue, argv, envp, buffer.baseAddress, childSocket.descriptor.rawValue, 0)
        }
        guard pid > 0 else { throw LaunchError("cannot enter the machine: \(SystemError.last("clone"))") }
        withExtendedLifetime(childSocket) {}
        if !terminals.isEmpty {
            // The pty's master, made inside, or the end of the file when the join failed.
            if let master = try? socket.receive(limit: 16).descriptors.first {
                var saved = [UInt8](repeating: 0, count: 256)
                let raw = terminals.contains(0) && saved.withUnsafeMutableBytes { cberth_make_raw(0, $0.baseAddress, $0.count) } == 0
                _ = cberth_copy_window_size(terminals[0], master.rawValue)
                relay = ConsoleRelay(master: master, slave: Descriptor(owning: -1),
                                     output: terminals.contains(1) ? 1 : terminals.contains(2) ? 2 : -1, input: terminals.contains(0),
                                     savedTerminal: raw ? Array(saved.prefix(MemoryLayout<termios>.size)) : nil)
                signals = cberth_signalfd(&blocked)
            }
        }
        defer { if signals >= 0 { close(signals) } }
        var status: Int32 = 0
        while true {
            if waitpid(pid, &status, WNOHANG) == pid {
                relay?.drain()
                relay?.restore()
                return ExitStatus(waitStatus: status).code
            }
            let sig: Int32
            if let relay, signals >= 0 {
                sig = relay.relay(signals: signals) { kill(pid, SIGKILL) }
            } else {
                var info = siginfo_t()
                sig = sigwaitinfo(&blocked, &info)
            }
            // The command is in its own session: what the caller's terminal would send it, berth passes on.
            if sig == SIGINT || sig == SIGTERM || sig == SIGHUP { kill(pid, sig) }
        }
    }

    // MARK: The joining process

    /// `berth-stage __join FIELDS`: enters the machine and runs the command there; exits with its status.
    public static func main(arguments: some Sequence<String>) -> Never {
        do {
            try join(arguments)
        } catch {
            let text = "berth: error: cannot enter the machine: \(error)\n"
            _ = text.withCString { Glibc.write(2, $0, strlen($0)) }
            _exit(1)
        }
    }

    private static func join(_ arguments: some Sequence<String>) throws -> Never {
        var leader: pid_t = 0, leaderStart: UInt64 = 0, filter: FilePath?, user = "root", term = "dumb", ptyStreams: [Int32] = [], command: [String] = []
        var changes = SyscallFilterChanges()
        for argument in arguments {
            guard let equals = argument.firstIndex(of: "=") else { continue }
            let key = argument[..<equals], value = String(argument[argument.index(after: equals)...])
            func text() -> String { Hex.decode(value).map { String(decoding: $0, as: UTF8.self) } ?? "" }
            switch key {
            case "leader": leader = pid_t(value) ?? 0
            case "leader-start": leaderStart = UInt64(value) ?? 0
            case "filter-changes":
                guard let given = SyscallFilterChanges(encoded: text()) else { throw LaunchError("the machine's filter changes are not berth's") }
                changes = given
            case "filter": filter = FilePath(text())
            case "user": user = text()
            case "term": term = text()
            case "pty": ptyStreams = value.split(separator: ",").compactMap { Int32($0) }
            case "arg": command.append(text())
            default: continue
            }
        }
        guard leader > 0, leaderStart > 0, let filter else { throw LaunchError("no machine's leader was named") }
        // The socket to berth, descriptor 3, is there only for a pty's master (berth relays it).
        let socket = ptyStreams.isEmpty ? nil : MessageSocket(descriptor: Descriptor(owning: 3))
        try join(leader: leader, leaderStart: leaderStart, filter: filter, changes: changes, user: user, term: term,
                 ptyStreams: ptyStreams, command: command, socket: socket)
    }

    /// Enters the machine, runs the command there in a child, and exits with its status. Only
    /// for a single-threaded process (setns into a user or mount namespace needs one).
    /// `filter` is where the machine's system call filter is kept (`SyscallFilter.Saved`).
    private static func join(leader: pid_t, leaderStart: UInt64, filter: FilePath, changes: SyscallFilterChanges, user: String, term: String, ptyStreams: [Int32],
                             command: [String], socket: MessageSocket?) throws -> Never {
        _ = try retryingInterrupts("prctl(PR_SET_DUMPABLE)") { cberth_make_undumpable() }
        let bounding = try boundingSet(of: leader)
        let program = SyscallFilter.Saved(path: filter, leader: leader, leaderStart: leaderStart, capabilities: bounding, changes: changes)
            .program(capabilities: bounding, changes: changes)

        // Its cgroups first, by the host's paths, while this is still the host's root. The
        // command is made in the unified one (clone3 below); a v1 hierarchy's is joined here by
        // this thread, which the command is cloned from (`tasks`, "0": a thread that moves
        // itself takes no global lock, as a move by pid does).
        let limits = try takeLimits(of: leader)
        let cgroups = try leaderCgroups(leader)
        let unified = try cgroups.unified.map { try Descriptor.open($0, O_RDONLY | O_DIRECTORY) }
        for cgroup in cgroups.legacy {
            try Descriptor.open(cgroup.appending("tasks"), O_WRONLY).writeAll("0")
        }
        // The namespaces, the user namespace first: in it, the others may be entered.
        let kinds: [(String, Int32)] = [("user", Int32(CBERTH_CLONE_NEWUSER)), ("mnt", Int32(CBERTH_CLONE_NEWNS)),
                                        ("pid", Int32(CBERTH_CLONE_NEWPID)), ("uts", Int32(CBERTH_CLONE_NEWUTS)),
                                        ("ipc", Int32(CBERTH_CLONE_NEWIPC)), ("net", Int32(CBERTH_CLONE_NEWNET)),
                                        ("cgroup", Int32(CBERTH_CLONE_NEWCGROUP))]
        var namespaces: [(Descriptor, Int32, String)] = []
        for (name, type) in kinds {
            let theirs = try Descriptor.open(FilePath("/proc/\(leader)/ns/\(name)"), O_RDONLY)
            let ours = try Descriptor.open(FilePath("/proc/self/ns/\(name)"), O_RDONLY)
            // The same namespace (the host's network, no user namespace) is not entered again.
            if try theirs.status().inode != ours.status().inode { namespaces.append((theirs, type, name)) }
        }
        // The cgroup namespace last, by the command itself: clone3 into a cgroup checks it, and
        // where namespaces delegate, this process's cgroup is not below the machine's.
        let cgroupNamespace = namespaces.last { $0.2 == "cgroup" }?.0
        for (descriptor, type, name) in namespaces where name != "cgroup" {
            _ = try retryingInterrupts("setns(\(name))") { cberth_setns(descriptor.rawValue, type) }
        }
        namespaces.removeAll()
        // The signals berth would pass on (this process may have taken its place) go to the
        // command, which is in a session of its own; blocked from before it exists.
        var forwarded = sigset_t(), previous = sigset_t()
        sigemptyset(&forwarded)
        for sig in [SIGCHLD, SIGINT, SIGTERM, SIGHUP, SIGQUIT] { sigaddset(&forwarded, sig) }
        pthread_sigmask(SIG_BLOCK, &forwarded, &previous)
        // The PID namespace holds only the children made from here on. The child shares this
        // process's memory until its exec (cberth_clone_process_into), so it only reads what is
        // here, and ends by exec or _exit.
        let child = ChildBody {
            pthread_sigmask(SIG_SETMASK, &previous, nil)
            do {
                if let cgroupNamespace {
                    _ = try retryingInterrupts("setns(cgroup)") { cberth_setns(cgroupNamespace.rawValue, Int32(CBERTH_CLONE_NEWCGROUP)) }
                }
                try runCommand(command, as: user, term: term, bounding: bounding, filter: program, limits: limits, ptyStreams: ptyStreams, socket: socket)
            } catch {
                let text = "berth: error: cannot run the command in the machine: \(error)\n"
                _ = text.withCString { Glibc.write(2, $0, strlen($0)) }
                _exit(127)
            }
        }
        let pid = try withExtendedLifetime(child) {
            try retryingInterrupts("clone3") {
                cberth_clone_process_into(unified?.rawValue ?? -1, { ChildBody.run($0) }, Unmanaged.passUnretained(child).toOpaque())
            }
        }
        var status: Int32 = 0
        while true {
            var info = siginfo_t()
            let sig = sigwaitinfo(&forwarded, &info)
            if sig == SIGCHLD {
                if waitpid(pid, &status, WNOHANG) == pid { break }
            } else if sig > 0 {
                kill(pid, sig)
            }
        }
        _exit(ExitStatus(waitStatus: status).code)
    }

    /// What the joining process's child runs, passed to C as a pointer.
    private final class ChildBody {
        let body: () -> Never
        init(_ body: @escaping () -> Never) { self.body = body }

        static func run(_ pointer: UnsafeMutableRawPointer?) -> Int32 {
            guard let pointer else { _exit(127) }
            Unmanaged<ChildBody>.fromOpaque(pointer).takeUnretainedValue().body()
        }
    }

    /// PID 1's capability bounding set (CapBnd in /proc/PID/status).
    private static func boundingSet(of leader: pid_t) throws -> Capabilities {
        let text = String(decoding: try Descriptor.open(FilePath("/proc/\(leader)/status"), O_RDONLY).readAll(limit: 1 << 16), as: UTF8.self)
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("CapBnd:") }),
              let bits = UInt64(line.dropFirst("CapBnd:".count).filter { !$0.isWhitespace }, radix: 16) else {
            throw LaunchError("cannot read the capabilities of the machine's leader \(leader)")
        }
        return Capabilities(rawValue: bits)
    }

    /// PID 1's resource limits and OOM score adjustment, the machine's (nspawn's defaults and
    /// `--rlimit=`, `--oom-score-adjust=`), for the command in place of the caller's. Read from
    /// /proc/PID/limits (prlimit(2) on another user's process takes CAP_SYS_RESOURCE). This
    /// process takes the score, and a hard limit above its own (it is the host's root here, who
    /// may raise one with CAP_SYS_RESOURCE); the command sets the limits just before its exec, so
    /// that a low one (RLIMIT_AS, RLIMIT_NOFILE) never starves this process or the command's
    /// start, which share its memory until then.
    private static func takeLimits(of leader: pid_t) throws -> [(resource: Int32, soft: UInt64, hard: UInt64)] {
        let text = String(decoding: try Descriptor.open(FilePath("/proc/\(leader)/limits"), O_RDONLY).readAll(limit: 1 << 16), as: UTF8.self)
        var limits: [(resource: Int32, soft: UInt64, hard: UInt64)] = []
        // The kernel's columns: the name in 25, then the soft and the hard limit in 20 each.
        for (resource, line) in text.split(separator: "\n").dropFirst().prefix(16).enumerated() {
            let columns = Array(line)
            guard columns.count >= 67 else { continue }
            func value(_ range: Range<Int>) -> UInt64? {
                let text = columns[range].split(separator: " ").first.map { String($0) } ?? ""
                return text == "unlimited" ? UInt64.max : UInt64(text)
            }
            guard let soft = value(26..<46), let hard = value(47..<67) else { continue }
            limits.append((Int32(resource), soft, hard))
            var ownSoft: UInt64 = 0, ownHard: UInt64 = 0
            if cberth_get_limit(0, Int32(resource), &ownSoft, &ownHard) == 0, hard > ownHard { _ = cberth_set_limit(Int32(resource), ownSoft, hard) }
        }
        let score = try Descriptor.open(FilePath("/proc/\(leader)/oom_score_adj"), O_RDONLY).readAll(limit: 64)
        do { try Descriptor.open("/proc/self/oom_score_adj", O_WRONLY).writeAll(String(decoding: score, as: UTF8.self)) } catch let error as SystemError where error.errno == .permissionDenied {}
        return limits
    }

    /// PID 1's cgroups as the host sees them: in the unified hierarchy, and the machine's own in
    /// every v1 hierarchy (the device policy's, the limits'), which hold what enters it too.
    private static func leaderCgroups(_ leader: pid_t) throws -> (unified: FilePath?, legacy: [FilePath]) {
        let text = try LegacyCgroupHierarchy.cgroupFile(of: "\(leader)")
        let unified = text.split(separator: "\n").first { $0.hasPrefix("0::") }.flatMap { line in
            ContainerCgroup.unifiedHierarchy().map { FilePath($0.string + line.dropFirst(3)) }
        }
        let hierarchies = try LegacyCgroupHierarchy.all()
        let legacy = LegacyCgroupHierarchy.memberships(text).compactMap { membership -> FilePath? in
            // The machine's own, or `berth` itself where machines share it (realtime budgets).
            guard membership.path.hasPrefix("/\(ContainerCgroup.parentName)/") || membership.path == "/\(ContainerCgroup.parentName)"
                || membership.path.hasPrefix("/\(ContainerCgroup.limitedCPUParentName)/"),
                  let hierarchy = hierarchies.first(where: { $0.controllers == membership.controllers }) else { return nil }
            return FilePath(hierarchy.mountPoint.string + membership.path)
        }
        return (unified, legacy)
    }

    /// In the machine's namespaces: becomes the user, gets the pty, execs.
    private static func runCommand(_ command: [String], as name: String, term: String, bounding: Capabilities, filter: [sock_filter],
                                   limits: [(resource: Int32, soft: UInt64, hard: UInt64)], ptyStreams: [Int32], socket: MessageSocket?) throws -> Never {
        // Root of the machine's user namespace (its ids are the namespace's now), with no group
        // of the host's; the user comes below.
        _ = try retryingInterrupts("become the user namespace's root") { cberth_become_namespace_root() }
        _ = try retryingInterrupts("setsid") { setsid() }
        if !ptyStreams.isEmpty, let socket {
            var slave: Int32 = -1
            let master = Descriptor(owning: try retryingInterrupts("open a pty in the machine") { cberth_open_pty_pair(&slave) })
            let slaveDescriptor = Descriptor(owning: slave)
            try socket.send([1], descriptors: [master.rawValue])
            _ = try retryingInterrupts("TIOCSCTTY") { cberth_set_controlling_terminal(slaveDescriptor.rawValue) }
            for stream in ptyStreams { _ = try retryingInterrupts("dup2") { dup2(slaveDescriptor.rawValue, stream) } }
        }
        let user = try ImageUser.lookup(name)
        let program: String, argv: [String]
        if command.isEmpty {
            program = user.shell
            argv = [user.loginShellName]
        } else {
            program = try ContainerStage.resolve(command[0])
            argv = command
        }
        let home = command.isEmpty && access(user.home, X_OK) == 0 ? user.home : "/"
        if chdir(home) != 0 { throw LaunchError("cannot change to \(home) in the machine: \(SystemError.last("chdir").errno)") }
        try Capabilities.limitBoundingSet(to: bounding)
        try SyscallFilter.install(filter)
        if user.uid != 0 { try user.become() }
        let environment = user.environment(term: term)
        _ = cberth_close_from(3)
        let cArgs = argv.map { strdup($0) } + [nil], cEnv = environment.map { strdup($0) } + [nil]
        // The machine's limits last: nothing is allocated after them (see takeLimits).
        for limit in limits { _ = cberth_set_limit(limit.resource, limit.soft, limit.hard) }
        execve(program, cArgs, cEnv)
        throw LaunchError("cannot run \(program): \(SystemError.last("execve").errno)")
    }
}
