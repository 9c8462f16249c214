import BerthSystem
import CBerth
import Glibc

/// The process the user started (berth, or `berth-stage --supervise` that berth becomes by exec,
/// with the same pid): it starts the container's first process in new
/// namespaces, passes it the launch description, relays signals, and returns its exit status.
/// Every mount the container makes lives in the container's own mount namespace and goes with
/// its last process; the supervisor makes none on the host.
public enum Supervisor {
    /// What runs as the container's first process: `berth-stage` beside the berth binary, which
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

    /// Replaces this process with `berth-stage --supervise`, which runs `spec` as `run` does and
    /// exits with its status: the container is supervised by a process of a few megabytes instead
    /// of the whole berth binary. `descriptors` (the image's lock) stay open across the exec. Returns without
    /// doing anything when there is no `berth-stage` beside berth; the caller then supervises.
    public static func handOver(_ spec: LaunchSpec, keeping descriptors: [Int32]) throws {
        guard stageExecutable != "/proc/self/exe" else { return }
        let description = spec.encoded()
        var fds: [Int32] = [-1, -1]
        _ = try retryingInterrupts("pipe") { pipe(&fds) }
        // A pipe holds 64 KiB: a larger description is supervised here.
        guard description.count < 60_000 else {
            fds.forEach { close($0) }
            return
        }
        let writer = Descriptor(owning: fds[1])
        try description.withUnsafeBytes { try writer.writeAll($0) }
        _ = consume writer
        for fd in descriptors + [fds[0]] { _ = fcntl(fd, F_SETFD, 0) }
        let argv = [strdup("berth-stage"), strdup(supervisorFlag), strdup("\(fds[0])"), nil]
        execv(stageExecutable, argv)
        let error = SystemError.last("execve", path: stageExecutable)
        argv.forEach { free($0) }
        close(fds[0])
        throw LaunchError("cannot start \(stageExecutable): \(error.errno)")
    }

    public static let supervisorFlag = "--supervise"

    /// `berth-stage --supervise FD`: reads the description from FD, runs it, exits with its status.
    public static func supervise(descriptionFrom fd: Int32) -> Never {
        do {
            guard let spec = LaunchSpec(decoding: try Descriptor(owning: fd).readAll()) else {
                throw LaunchError("the launch description is damaged")
            }
            exit(try run(spec))
        } catch {
            let text = "berth: error: \(error)\n"
            _ = text.withCString { write(2, $0, strlen($0)) }
            exit(1)
        }
    }

    /// Runs `spec` and returns the exit status berth should exit with: the command's own, or
    /// 128 plus the signal that killed it.
    public static func run(_ spec: LaunchSpec) throws -> Int32 {
        var spec = spec
        let system = spec.boot ? try SystemCgroup.make(name: "berth-\(spec.uuid)") : nil
        spec.systemCgroup = system?.path.string
        defer { system?.remove() }
        let cgroup = try ContainerCgroup.make(system: system)
        var flags = UInt(CBERTH_CLONE_NEWNS | CBERTH_CLONE_NEWPID | CBERTH_CLONE_NEWUTS | CBERTH_CLONE_NEWIPC)
        if spec.privateNetwork { flags |= UInt(CBERTH_CLONE_NEWNET) }

        // Signals are taken synchronously (sigwaitinfo), so block them before the child exists.
        var handled = sigset_t()
        sigemptyset(&handled)
        for sig in [SIGCHLD, SIGINT, SIGTERM, SIGHUP, SIGWINCH] { sigaddset(&handled, sig) }
        pthread_sigmask(SIG_BLOCK, &handled, nil)
        // On a terminal the container gets a pty of its own; elsewhere the streams pass through.
        let console = Terminal.isTerminal(0) && Terminal.isTerminal(1) ? try ConsoleRelay() : nil
        spec.console = console?.slavePath
        let signals = try retryingInterrupts("signalfd") { cberth_signalfd(&handled) }
        defer { close(signals) }

        var fds: [Int32] = [-1, -1]
        _ = try retryingInterrupts("pipe") { pipe(&fds) }
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        let reader = Descriptor(owning: fds[0]), writer = Descriptor(owning: fds[1])
        let argv = [strdup("berth"), strdup(ContainerStage.subcommand), nil]
        let envp: [UnsafeMutablePointer<CChar>?] = [nil]
        defer { argv.forEach { free($0) } }
        let pid = cberth_spawn(flags, stageExecutable, argv, envp, reader.rawValue, cgroup.unified?.rawValue ?? -1)
        guard pid > 0 else { throw LaunchError("cannot start the container: \(SystemError.last("clone"))") }
        withExtendedLifetime(reader) {}
        // The child waits for its description before doing anything, so where it could not be
        // made in its cgroup it is moved there first (a v1 migration takes milliseconds).
        do {
            try cgroup.place(pid)
        } catch {
            kill(pid, SIGKILL)
            waitpid(pid, nil, 0)
            throw error
        }
        try spec.encoded().withUnsafeBytes { try writer.writeAll($0) }
        _ = consume writer

        var interrupts = 0
        while true {
            let sig: Int32
            if let console {
                sig = console.relay(signals: signals) { kill(pid, SIGKILL) }
            } else {
                var info = siginfo_t()
                sig = sigwaitinfo(&handled, &info)
            }
            if sig < 0 || sig == SIGWINCH { continue }
            if sig == SIGCHLD {
                var status: Int32 = 0
                let done = waitpid(pid, &status, WNOHANG)
                guard done == pid else { continue }
                console?.drain()
                console?.restore()
                if status & 0x7f == 0 { return (status >> 8) & 0xff }  // exited
                let signal = status & 0x7f
                // reboot(2) in a PID namespace ends its init with SIGINT for power-off and halt,
                // SIGHUP for reboot; nspawn returns 0 and 133 for them.
                if spec.boot && signal == SIGINT { return 0 }
                if spec.boot && signal == SIGHUP { return 133 }
                return 128 + signal  // killed by a signal
            }
            // A booted system is asked to power off (systemd's SIGRTMIN+3), and a command under
            // --as-pid2's init gets the signal itself; a command as PID 1 (which the kernel
            // shields from signals it does not handle), or a second request, ends at once.
            interrupts += 1
            let gentle = spec.boot ? cberth_sigrtmin_plus(3) : spec.asPID2 ? sig : SIGKILL
            kill(pid, interrupts == 1 ? gentle : SIGKILL)
        }
    }
}
