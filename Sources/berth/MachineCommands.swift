import ArgumentParser
import BerthLaunch
import BerthStore
import BerthSystem
import CBerth
import FoundationEssentials
import Glibc
import SystemPackage

/// `berth start`, as `berth --help` lists it: RunCommandLine reads its command line (run's
/// options, then the image's name and init's arguments), so this is never parsed or run.
struct StartCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "start", abstract: "Boot an image in the background; returns once it is up (berth boot -d NAME).")
}

extension MachineRecord {
    /// Its addresses on the network berth made for it, global ones first, as machinectl lists them.
    var addresses: [IPPrefix] {
        MachineNetwork.addresses(ofMachine: name, leader: leader).sorted { !$0.address.isLinkLocal && $1.address.isLinkLocal }
    }
}

/// A running machine by name, or the error that says there is none.
private func runningMachine(_ name: String) throws -> MachineRecord {
    guard let record = try MachineRecord.running(name) else {
        throw StoreError(.notFound, "no machine '\(name)' is running; 'berth ps' lists those that are")
    }
    return record
}

/// The machines `names` name, every one checked before anything is done to any.
private func runningMachines(_ names: [String]) throws -> [MachineRecord] {
    var seen: Set<String> = []
    return try names.filter { seen.insert($0).inserted }.map(runningMachine)
}

/// What `ps --json` and `status --json` print of a machine.
private struct MachineJSON: Encodable {
    var machine: String
    var `class` = "container"
    var service = "berth"
    var os: String
    var version: String
    var addresses: [String] = []
    var image: String?
    var root: String
    var leader: Int32
    var since: String
    var boot: Bool

    init(_ record: MachineRecord) {
        machine = record.name
        let os = record.operatingSystem
        self.os = os.id
        version = os.version
        image = record.image
        root = record.root
        leader = record.leader
        since = formatDate(record.since)
        boot = record.boot
        addresses = record.addresses.map(\.address.description)
    }
}

struct ShellCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "shell",
        abstract: "Run a command, or the user's login shell, in a running machine; exits with its status.",
        discussion: "Works in any guest, systemd or not: berth enters the machine itself, with no D-Bus or machined.")

    @Argument(help: "[USER@]NAME: the machine, and the user from its own /etc/passwd (default root).") var target: String
    @Argument(parsing: .captureForPassthrough, help: "The command and its arguments (default: the user's login shell).")
    var command: [String] = []

    /// `berth [--store S] shell [USER@]NAME [COMMAND...]` read by hand, as run's line is: entering
    /// a machine is as quick as nsenter only without swift-argument-parser's start-up. Anything
    /// else (an option, a missing name) is left to swift-argument-parser, for its help and errors.
    static func fastPath(_ arguments: [String]) -> ShellCommand? {
        var rest = arguments[...]
        while let first = rest.first, first == "--store" || first.hasPrefix("--store=") { rest = rest.dropFirst(first == "--store" ? 2 : 1) }
        guard rest.first == "shell", let target = rest.dropFirst().first, !target.hasPrefix("-") else { return nil }
        var shell = ShellCommand()
        shell.target = target
        shell.command = Array(rest.dropFirst(2))
        return shell
    }

    func run() throws { throw ExitCode(try enter()) }

    /// Runs the command in the machine; its exit status.
    func enter() throws -> Int32 {
        let parts = target.split(separator: "@", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        let (user, name) = parts.count == 2 ? (parts[0].isEmpty ? "root" : parts[0], parts[1]) : ("root", parts[0])
        let record = try runningMachine(name)
        let term = Terminal.isTerminal(0) || Terminal.isTerminal(1) ? environment("TERM") ?? "vt220" : "dumb"
        return try MachineShell.run(record, user: user, command: command, term: term)
    }
}

struct LoginCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "login",
        abstract: "Attach your terminal to a machine's console, where its getty runs; ^] three times within 1s detaches.",
        discussion: "For machines booted in the background (berth start, berth run -d -b). Detaching leaves the machine running; one login at a time.")

    @Argument(help: "The machine.") var name: String

    func run() throws {
        _ = try runningMachine(name)
        _ = try ConsoleSocket.attach(at: MachineRecord.consolePath(name), machine: name)
    }
}

struct PsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ps", abstract: "List the running machines, as machinectl list does, with their image, leader and start.")

    @Flag(help: "Print JSON.") var json = false
    @Flag(name: .customLong("no-legend"), help: "Print the rows only: no header, no count, nothing when there are none.")
    var noLegend = false

    func run() throws {
        let machines = try MachineRecord.all()
        if json {
            try printJSON(machines.map(MachineJSON.init))
            return
        }
        guard !machines.isEmpty else {
            if !noLegend { print("No machines.") }
            return
        }
        let rows = machines.map { record in
            let os = record.operatingSystem
            // machinectl's column: the first address, and an ellipsis for more.
            let addresses = record.addresses
            let shown = addresses.first.map { $0.address.description + (addresses.count > 1 ? "…" : "") } ?? "-"
            return [record.name, "container", "berth", os.id, os.version, shown, record.image ?? "-", "\(record.leader)", formatDate(record.since)]
        }
        printTable(header: ["MACHINE", "CLASS", "SERVICE", "OS", "VERSION", "ADDRESSES", "IMAGE", "LEADER", "SINCE"], rows: rows,
                   legend: !noLegend)
        if !noLegend { print("\n\(machines.count) machine\(machines.count == 1 ? "" : "s") listed.") }
    }
}

struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status", abstract: "Show a running machine, as machinectl status does: leader, since, root, its processes, its console's last lines.")

    @Argument(help: "The machine.") var name: String
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        let record = try runningMachine(name)
        if json {
            try printJSON(MachineJSON(record))
            return
        }
        let os = record.operatingSystem
        var text = """
            \(Printable.escaping(record.name))
                  Since: \(formatDate(record.since))
                 Leader: \(record.leader) (\(record.leaderCommand ?? "?"))
                   Root: \(Printable.escaping(record.root))
                  Image: \(record.image.map(Printable.escaping) ?? "-")
                     OS: \(os.id) \(os.version)

            """
        let addresses = record.addresses
        if !addresses.isEmpty {
            text += "    Address: " + addresses.map(\.address.description).joined(separator: "\n             ") + "\n"
        }
        let processes = record.processes
        text += "  Processes (\(processes.count)):\n"
        for pid in processes.sorted() {
            let line = (try? Descriptor.open(FilePath("/proc/\(pid)/cmdline"), O_RDONLY).readAll(limit: 256))
                .map { String(decoding: $0.map { $0 == 0 ? UInt8(ascii: " ") : $0 }, as: UTF8.self) } ?? "?"
            text += "    \(pid) \(Printable.escaping(line))\n"
        }
        if let log = try? Descriptor.open(MachineRecord.logPath(record.name), O_RDONLY).readAll(limit: 1 << 22) {
            let lines = ConsoleLog.lines(log).suffix(10)
            if !lines.isEmpty { text += "\n" + lines.map { "  | \(Printable.escaping($0))\n" }.joined() }
        }
        writeOut(1, text)
    }
}

/// The console's output of a machine started in the background, as lines.
enum ConsoleLog {
    static func lines(_ bytes: [UInt8]) -> [String] {
        var lines = String(decoding: bytes, as: UTF8.self).replacingOccurrences(of: "\r", with: "")
            .split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if lines.last == "" { lines.removeLast() }
        return lines
    }
}

struct LogsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "logs",
        abstract: "Print the console's output of a machine started in the background, kept until its next start.")

    @Flag(name: .shortAndLong, help: "Go on printing what comes while the machine runs.") var follow = false
    @Option(name: .customShort("n"), help: "Only the last N lines.") var lines: Int?
    @Argument(help: "The machine.") var name: String

    func run() throws {
        let path = try MachineRecord.logPath(name)
        guard let log = try? Descriptor.open(path, O_RDONLY) else {
            throw StoreError(.notFound, "machine '\(name)' has no log: only machines started with 'berth start' or 'run -d' keep one")
        }
        let bytes = try log.readAll()
        var all = ConsoleLog.lines(bytes)
        if let lines { all = Array(all.suffix(max(0, lines))) }
        writeOut(1, all.map { $0 + "\n" }.joined())
        guard follow else { return }
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = read(log.rawValue, &buffer, buffer.count)
            if n > 0 {
                buffer.withUnsafeBytes { _ = write(1, $0.baseAddress, n) }
                continue
            }
            if try MachineRecord.running(name) == nil { return }
            usleep(100_000)
        }
    }
}

/// How long poweroff waits, and how a machine is waited for.
private enum Stopping {
    /// Waits until `record`'s machine no longer runs; false after `timeout` seconds.
    static func wait(for record: MachineRecord, timeout: Double) -> Bool {
        var waited = 0.0
        while record.isRunning {
            if waited >= timeout { return false }
            usleep(20_000)
            waited += 0.02
        }
        // Its supervisor tidies after it (its record, its tree): give it the moment.
        var settled = 0.0
        while MachineRecord.runs(record.supervisor), settled < 5 {
            usleep(10_000)
            settled += 0.01
        }
        // And its network, which a process of the supervisor's takes down after it.
        MachineNetwork.tidyHost()
        return true
    }

    /// Ends the whole machine: PID 1's death ends every process of its PID namespace.
    static func terminate(_ record: MachineRecord) {
        kill(record.leader, SIGKILL)
    }
}

struct PoweroffCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "poweroff",
        abstract: "Power running machines off: a booted init is asked (SIGRTMIN+4, as machinectl does), a command killed; after --timeout, terminated.")

    @Option(help: "Seconds to wait before the machine is terminated.") var timeout: Double = 90
    @Argument(help: "The machines.") var names: [String]

    func run() throws {
        guard !names.isEmpty else { throw UsageError("poweroff needs the name of a running machine (see 'berth ps')") }
        for record in try runningMachines(names) {
            kill(record.leader, record.boot ? cberth_sigrtmin_plus(4) : record.killSignal ?? SIGKILL)
            if !Stopping.wait(for: record, timeout: timeout) {
                Stopping.terminate(record)
                _ = Stopping.wait(for: record, timeout: 10)
            }
        }
    }
}

struct RebootCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reboot",
        abstract: "Reboot running machines: a booted init is asked (SIGINT, as machinectl does); one started in the background comes back up.")

    @Argument(help: "The machines.") var names: [String]

    func run() throws {
        guard !names.isEmpty else { throw UsageError("reboot needs the name of a running machine (see 'berth ps')") }
        let records = try runningMachines(names)
        if let command = records.first(where: { !$0.boot }) {
            throw StoreError(.invalidInput, "machine '\(command.name)' runs a command, not an init, and cannot reboot; 'berth poweroff \(command.name)' stops it")
        }
        for record in records { kill(record.leader, SIGINT) }
    }
}

struct TerminateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "terminate", abstract: "End running machines at once, every process of theirs with them.")

    @Argument(help: "The machines.") var names: [String]

    func run() throws {
        guard !names.isEmpty else { throw UsageError("terminate needs the name of a running machine (see 'berth ps')") }
        for record in try runningMachines(names) {
            Stopping.terminate(record)
            _ = Stopping.wait(for: record, timeout: 10)
        }
    }
}

struct KillCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kill", abstract: "Send a signal to a running machine's leader, or to all its processes.")

    @Option(name: [.customShort("s"), .long], help: "The signal, by name (TERM, SIGRTMIN+3) or number (default SIGTERM).")
    var signal = "SIGTERM"
    @Option(name: .customLong("kill-whom"), help: "leader (the machine's PID 1) or all (every process of the machine).")
    var whom = "all"
    @Argument(help: "The machines.") var names: [String]

    func run() throws {
        guard !names.isEmpty else { throw UsageError("kill needs the name of a running machine (see 'berth ps')") }
        guard let number = Self.signalNumber(signal) else {
            throw UsageError("--signal takes a signal's name (TERM, SIGKILL, SIGRTMIN+3) or number, not '\(signal)'")
        }
        guard ["leader", "all"].contains(whom) else { throw UsageError("--kill-whom takes leader or all, not '\(whom)'") }
        for record in try runningMachines(names) {
            for pid in whom == "leader" ? [record.leader] : record.processes { kill(pid, number) }
        }
    }

    static func signalNumber(_ text: String) -> Int32? {
        if let number = Int32(text), number > 0, number < 65 { return number }
        var name = text.uppercased()
        if name.hasPrefix("SIG") { name.removeFirst(3) }
        let names: [String: Int32] = [
            "HUP": SIGHUP, "INT": SIGINT, "QUIT": SIGQUIT, "KILL": SIGKILL, "USR1": SIGUSR1, "USR2": SIGUSR2, "TERM": SIGTERM,
            "CONT": SIGCONT, "STOP": SIGSTOP, "WINCH": SIGWINCH, "PWR": SIGPWR,
        ]
        if let number = names[name] { return number }
        if name.hasPrefix("RTMIN") {
            let offset = name.dropFirst(5)
            if offset.isEmpty { return cberth_sigrtmin_plus(0) }
            if offset.hasPrefix("+"), let n = Int32(offset.dropFirst()), n >= 0, cberth_sigrtmin_plus(n) <= 64 { return cberth_sigrtmin_plus(n) }
        }
        return nil
    }
}

/// `enable` and `disable`: a machine started at the host's boot, in the spirit of
/// systemd-nspawn@.service, as a unit `berth-NAME.service` wanted by machines.target. Where
/// the host's PID 1 is not systemd there is no unit to write, and berth says what to add to the
/// host's init instead. `BERTH_UNIT_DIRECTORY` names another directory for the unit (a package
/// build's tree, a test's), which is then written whatever PID 1 is.
enum BootUnit {
    static func directory() throws -> FilePath {
        if let given = environment("BERTH_UNIT_DIRECTORY"), !given.isEmpty { return FilePath(given) }
        // sd_booted(): systemd as PID 1 makes /run/systemd/system.
        guard (try? FileStatus.of("/run/systemd/system"))??.kind == .directory else { return "" }
        return "/etc/systemd/system"
    }

    static func name(_ machine: String) -> String { "berth-\(machine).service" }

    /// The unit that starts `machine` from `store` at boot and powers it off at shutdown.
    static func text(machine: String, store: String, berth: String) -> String {
        """
        # Made by 'berth enable \(machine)'; 'berth disable \(machine)' removes it.
        [Unit]
        Description=Berth machine \(machine)
        Documentation=man:systemd-nspawn(1)
        After=local-fs.target network.target
        RequiresMountsFor=\(store)

        [Service]
        Type=forking
        GuessMainPID=yes
        ExecStartPre=\(berth) --store \(store) mount --all -q
        ExecStart=\(berth) --store \(store) start \(machine)
        ExecStop=\(berth) poweroff \(machine)
        KillMode=mixed
        TimeoutStartSec=120
        TimeoutStopSec=100

        [Install]
        WantedBy=machines.target

        """
    }

    /// What to tell an admin whose host does not run systemd.
    static func noSystemd(_ machine: String, store: String) -> String {
        "this host's PID 1 is not systemd, so there is no unit to write: add 'berth --store \(store) mount --all' and then 'berth --store \(store) start \(machine)' to the host's boot (its init scripts or rc.local), and 'berth poweroff \(machine)' to its shutdown"
    }
}

struct EnableCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "enable", abstract: "Start a machine at the host's boot (a systemd unit, or what to add to another init).")

    @OptionGroup var store: StoreOptions
    @Argument(help: "The image.") var name: String

    func run() throws {
        let image = try ImageName(name)
        guard try StoreOptions.open(store.store, access: .read).imageExists(image) else {
            throw StoreError(.notFound, "no image '\(name)' in \(store.path); 'berth list' shows the images there")
        }
        let directory = try BootUnit.directory()
        guard !directory.isEmpty else { throw StoreError(.invalidInput, BootUnit.noSystemd(name, store: store.path)) }
        let unit = directory.appending(BootUnit.name(name))
        var berth = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink("/proc/self/exe", &berth, berth.count - 1)
        let executable = n > 0 ? String(decoding: berth[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : "/usr/local/bin/berth"
        let file = try Descriptor.open(unit, O_WRONLY | O_CREAT | O_TRUNC, mode: 0o644)
        try file.writeAll(BootUnit.text(machine: name, store: store.path, berth: executable))
        let wants = directory.appending("machines.target.wants")
        _ = wants.withPlatformString { mkdir($0, 0o755) }
        let link = wants.appending(BootUnit.name(name))
        _ = link.withPlatformString { unlink($0) }
        _ = try "../\(BootUnit.name(name))".withCString { target in
            try link.withPlatformString { path in try retryingInterrupts("symlink", path: link.string) { symlink(target, path) } }
        }
        print("Created \(unit.string), wanted by machines.target.")
    }
}

struct DisableCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "disable", abstract: "No longer start a machine at the host's boot.")

    @OptionGroup var store: StoreOptions
    @Argument(help: "The image.") var name: String

    func run() throws {
        _ = try ImageName(name)
        let directory = try BootUnit.directory()
        guard !directory.isEmpty else { throw StoreError(.invalidInput, BootUnit.noSystemd(name, store: store.path)) }
        let unit = directory.appending(BootUnit.name(name))
        guard (try? FileStatus.of(unit)) ?? nil != nil else {
            throw StoreError(.notFound, "machine '\(name)' is not enabled: there is no \(unit.string)")
        }
        for path in [directory.appending("machines.target.wants").appending(BootUnit.name(name)), unit] {
            _ = path.withPlatformString { unlink($0) }
        }
        print("Removed \(unit.string).")
    }
}
