import BerthLaunch
import BerthStore
import BerthSystem
import CBerth
import Glibc
import SystemPackage

/// `berth start NAME` and `berth run -d`: the run goes on in the background, in a session of its
/// own, its console's output in the machine's log (`berth logs`), and berth returns once the
/// machine is up: when systemd inside says `READY=1` on its notify socket (nspawn's
/// `NOTIFY_SOCKET`, `/run/host/notify` inside), which its supervisor passes on to this one; for a
/// command, or an init that is not systemd, once it runs, unless `--notify-ready=yes` asks for
/// its READY=1 too. It fails, with the console's last lines, when the machine ends first or is not
/// up within `--timeout` (it is then stopped).
struct BackgroundStart {
    /// Set for the background half, which runs the machine as `berth run` does.
    static let childVariable = "BERTH_BACKGROUND_CHILD"
    /// The machine's name, picked here (an ephemeral one has a random suffix).
    static let nameVariable = "BERTH_MACHINE_NAME"

    let line: RunCommandLine

    init(_ line: RunCommandLine) { self.line = line }

    func run() throws -> Int32 {
        let name = try machineName()
        if try MachineRecord.running(name) != nil {
            throw StoreError(.inUse, "machine '\(name)' is already running; 'berth ps' lists it, 'berth poweroff \(name)' stops it")
        }
        let log = try Descriptor.open(MachineRecord.logPath(name), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, mode: 0o600)
        let notifyPath = try MachineRecord.notifyPath(name)
        let notify = try line.boot || line.notifyReady
            ? Descriptor(owning: notifyPath.withPlatformString { path in
                try retryingInterrupts("bind the notify socket", path: notifyPath.string) { cberth_bind_datagram_socket(path) }
            })
            : nil
        let input = try Descriptor.open("/dev/null", O_RDONLY)
        // Its supervisor tells this process the machine is up as it would tell a service manager
        // (NotifyListener), on the socket this reads; never the caller's manager.
        var environment = [Self.childVariable + "=1", Self.nameVariable + "=" + name] + (notify == nil ? [] : ["NOTIFY_SOCKET=\(notifyPath)"])
        var index = 0
        while let entry = environ[index] {
            let text = String(cString: entry)
            if ![Self.childVariable, Self.nameVariable, "NOTIFY_SOCKET"].contains(where: { text.hasPrefix($0 + "=") }) { environment.append(text) }
            index += 1
        }
        let argv = CommandLine.arguments.map { strdup($0) } + [nil]
        let envp = environment.map { strdup($0) } + [nil]
        defer { (argv + envp).forEach { free($0) } }
        let executable = try Descriptor.open("/proc/self/exe", CBERTH_O_PATH)
        let streams = [input.rawValue, log.rawValue, log.rawValue]
        let pid = streams.withUnsafeBufferPointer { cberth_spawn_with_streams(executable.rawValue, argv, envp, $0.baseAddress, -1, 1) }
        guard pid > 0 else { throw LaunchError("cannot start machine '\(name)' in the background: \(SystemError.last("clone"))") }
        return try waitUntilUp(name, pid: pid, notify: notify)
    }

    /// The name `launch` will give the machine.
    private func machineName() throws -> String {
        let base: String
        if let machine = line.machine {
            base = machine
        } else if let directory = line.directory, let path = RunCommandLine.absolutePath(directory) {
            base = NspawnSettings.machineName(ofDirectory: path)
        } else {
            throw UsageError("give the tree to run: -D DIR, or -M NAME for an image in the store (see 'berth run --help')")
        }
        return line.ephemeral ? "\(base.prefix(47))-\(Hex.random(16))" : base
    }

    /// Waits for the machine started as `pid` (its supervisor, after its exec) to be up.
    private func waitUntilUp(_ name: String, pid: pid_t, notify: Descriptor?) throws -> Int32 {
        var deadline = timespec()
        clock_gettime(CLOCK_MONOTONIC, &deadline)
        let end = Double(deadline.tv_sec) + Double(deadline.tv_nsec) / 1e9 + line.timeout
        while true {
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid {
                try fail(name, "it ended before it was up, with status \(ExitStatus(waitStatus: status, boot: line.boot).code)")
            }
            if let notify, NotifyListener.saysReady(notify) { return 0 }
            if !line.notifyReady, let record = try MachineRecord.running(name), let command = record.leaderCommand,
               !["berth-stage", "berth", "(berth-init)"].contains(command), !line.boot || command != "systemd" {
                return 0  // no systemd to say so: up once its own program runs
            }
            var now = timespec()
            clock_gettime(CLOCK_MONOTONIC, &now)
            if Double(now.tv_sec) + Double(now.tv_nsec) / 1e9 > end {
                kill(pid, SIGKILL)  // its supervisor: the machine dies with it
                waitpid(pid, nil, 0)
                try fail(name, "it was not up within \(Int(line.timeout)) s, and was stopped; --timeout gives it longer")
            }
            var poller = pollfd(fd: notify?.rawValue ?? -1, events: Int16(POLLIN), revents: 0)
            _ = poll(&poller, 1, 50)
        }
    }

    /// Prints the console's last lines, then throws why the machine is not up.
    private func fail(_ name: String, _ reason: String) throws -> Never {
        if let log = try? MachineRecord.logPath(name), let bytes = try? Descriptor.open(log, O_RDONLY).readAll(limit: 1 << 20) {
            for text in ConsoleLog.lines(bytes).suffix(10) { writeOut(2, "  | \(Printable.escaping(text))\n") }
        }
        throw LaunchError("machine '\(name)' did not start: \(reason); 'berth logs \(name)' shows its console")
    }
}
