import BerthSystem
import BerthTestSupport
import Foundation
import Glibc
import SystemPackage
import Testing

/// Machines in the background (issue 14): `start` returns once the machine is up, `ps` and
/// `status` show it, `logs` keeps its console, `poweroff`, `terminate` and `kill` stop it, and a
/// killed supervisor takes its machine with it. Against Debian (systemd inside, which says it is
/// up on the notify socket) and busybox (an init that says nothing).
@Suite(.serialized) struct MachineTests {
    /// Machine names are the host's, not the store's: each test's are its own.
    static func unique(_ base: String) -> String { "\(base)-\(Hex.random(6))" }

    /// A store with a clone of Debian, and a busybox image that boots (busybox's init, which
    /// runs /etc/init.d/rcS and, with no inittab, a shell on the console).
    func store(_ label: String, debian: String? = nil, busybox: String? = nil) throws -> TemporaryDirectory {
        let tmp = try TemporaryDirectory(label)
        if let debian {
            #expect(try berth(["import", "-q", Fixtures.debianZstd, "deb"], store: tmp).status == 0)
            #expect(try berth(["clone", "deb", debian], store: tmp).status == 0)
        }
        if let busybox {
            #expect(try berth(["import", "-q", Fixtures.busybox, busybox], store: tmp).status == 0)
            #expect(try inImage(busybox, "ln -s /bin/busybox /sbin/init", store: tmp).status == 0)
            // The fixture's root is mktemp's 0700; a distribution's is 0755, which other users need.
            chmod(tmp.appending("store/\(busybox)").string, 0o755)
        }
        return tmp
    }

    func machines() throws -> [[String: Any]] {
        let ps = try berth(["ps", "--json"], store: try TemporaryDirectory("unused"))
        return (try JSONSerialization.jsonObject(with: Data(ps.stdout.utf8)) as? [[String: Any]]) ?? []
    }

    func listed(_ name: String) throws -> [String: Any]? { try machines().first { $0["machine"] as? String == name } }

    @Test func aDebianCloneStartsInTheBackgroundIsListedAndPowersOff() throws {
        let name = Self.unique("web")
        let tmp = try store("machine-deb", debian: name)
        let started = try berth(["start", name], store: tmp)
        #expect(started.status == 0, "\(started)")
        // Up means systemd said READY=1: it reached its default target.
        let all = try machines()
        let machine = try #require(all.first { $0["machine"] as? String == name }, "\(all)")
        #expect(machine["os"] as? String == "debian" && machine["version"] as? String == "12")
        #expect(machine["image"] as? String == name && machine["class"] as? String == "container")
        let leader = try #require(machine["leader"] as? Int)
        #expect(try berth(["run", "-q", "-M", name, "/bin/true"], store: tmp).status == 75, "its image is in use while it runs")
        let again = try berth(["start", name], store: tmp)
        #expect(again.status == 75 && again.stderr.contains("already running"), "\(again)")

        let status = try berth(["status", name], store: tmp)
        #expect(status.status == 0 && status.stdout.contains("Leader: \(leader) (systemd)"), "\(status)")
        #expect(status.stdout.contains("systemd-journald"), "its processes: \(status)")
        let ps = try berth(["ps"], store: tmp)
        #expect(ps.stdout.split(separator: "\n").first?.split(separator: " ") == ["MACHINE", "CLASS", "SERVICE", "OS", "VERSION", "ADDRESSES", "IMAGE", "LEADER", "SINCE"], "\(ps)")

        let poweroff = try berth(["poweroff", name], store: tmp)
        #expect(poweroff.status == 0, "\(poweroff)")
        #expect(try listed(name) == nil)
        #expect(kill(pid_t(leader), 0) != 0)
        // Its notify socket goes with it, and its record and console socket.
        for suffix in ["notify", "filter", "machine", "console"] {
            #expect((try? FileStatus.of(FilePath("/run/berth/machines/\(name).\(suffix)"))) == nil, "\(suffix) is left")
        }
        // The console stays readable until the next start.
        let logs = try berth(["logs", name], store: tmp)
        #expect(logs.stdout.contains("Reached target multi-user.target") && logs.stdout.contains("Power"), "\(logs)")
        let last = try berth(["logs", "-n", "1", name], store: tmp)
        #expect(last.stdout.split(separator: "\n").count == 1, "\(last)")
        // Its tree is back at its place, now that nothing runs on it.
        #expect(keptTrees(under: tmp.string).contains(tmp.appending("store/\(name)").string))
        #expect(mounts(under: tmp.string).isEmpty, "\(mounts(under: tmp.string))")
    }

    @Test func aGuestWithoutSystemdIsUpOnceItsInitRunsAndIsTerminated() throws {
        let name = Self.unique("bb")
        let tmp = try store("machine-bb", busybox: name)
        #expect(try berth(["start", name], store: tmp).status == 0)
        let machine = try #require(try listed(name))
        #expect(machine["boot"] as? Bool == true)
        // busybox's init has no handler for systemd's poweroff signal: after --timeout it is terminated.
        let poweroff = try berth(["poweroff", "--timeout", "1", name], store: tmp)
        let after = try listed(name)
        #expect(poweroff.status == 0 && after == nil, "\(poweroff)")

        #expect(try berth(["start", name], store: tmp).status == 0)
        let kill = try berth(["kill", "--signal", "SIGBOGUS", name], store: tmp)
        #expect(kill.status == 64 && kill.stderr.contains("SIGBOGUS"), "\(kill)")
        #expect(try berth(["kill", "--kill-whom=leader", "-s", "KILL", name], store: tmp).status == 0)
        #expect(waitUntil { (try? listed(name)) == nil })
        #expect(try berth(["start", name], store: tmp).status == 0)
        #expect(try berth(["terminate", name], store: tmp).status == 0)
        #expect(try listed(name) == nil)
        let none = try berth(["terminate", name], store: tmp)
        #expect(none.status == 66 && none.stderr.contains("no machine '\(name)' is running"), "\(none)")
    }

    /// `shell` enters a running machine, systemd inside or not, and gives the command's status.
    @Test(arguments: ["debian", "busybox"])
    func shellRunsCommandsInsideWithTheirStatusAndNothingOfTheHosts(_ guest: String) throws {
        let name = Self.unique(guest == "debian" ? "web" : "bb")
        let tmp = try store("machine-shell", debian: guest == "debian" ? name : nil, busybox: guest == "busybox" ? name : nil)
        #expect(try berth(["start", name], store: tmp).status == 0)
        defer { _ = try? berth(["terminate", name], store: tmp) }
        let leader = try #require(try listed(name)?["leader"] as? Int)
        let status = try berth(["shell", name, "/bin/sh", "-c", "hostname; exit 7"], store: tmp)
        #expect(status.status == 7 && status.stdout == "\(name)\n", "\(status)")
        // The bounding set is PID 1's; no descriptor but the three streams (and ls's own) is open.
        let inside = try berth(["shell", name, "/bin/sh", "-c", "grep CapBnd /proc/self/status; ls /proc/self/fd; cat /proc/1/comm"], store: tmp)
        let pid1 = String(decoding: try readFile(FilePath("/proc/\(leader)/status")), as: UTF8.self)
            .split(separator: "\n").first { $0.hasPrefix("CapBnd:") }.map(String.init)
        #expect(inside.stdout.split(separator: "\n").first.map(String.init) == pid1, "\(inside) \(pid1 ?? "")")
        #expect(inside.stdout.contains("\n0\n1\n2\n3\n"), "\(inside)")
        // Standard input passes through; users are the machine's own.
        let input = try TemporaryDirectory("shell-input")
        try writeFile(input.appending("in"), "typed\n")
        let piped = try berth(["shell", "nobody@\(name)", "/bin/sh", "-c", "id -u; cat"], store: tmp, input: input.appending("in").string)
        #expect(piped.status == 0 && piped.stdout == "65534\ntyped\n", "\(piped)")
        let missing = try berth(["shell", "nosuchuser@\(name)", "/bin/true"], store: tmp)
        #expect(missing.status != 0 && missing.stderr.contains("nosuchuser"), "\(missing)")
    }

    /// On a terminal, `shell` gives a pty of the machine's own: the prompt, a typed command's
    /// output while it runs, and the shell's exit status, seen in tmux as a person sees them.
    @Test func anInteractiveShellOnATerminal() throws {
        let name = Self.unique("web")
        let tmp = try store("machine-tty", debian: name)
        #expect(try berth(["start", name], store: tmp).status == 0)
        defer { _ = try? berth(["terminate", name], store: tmp) }
        let terminal = try TerminalSession()
        try terminal.type("'\(berthBinary)' --store '\(tmp.appending("store").string)' shell \(name); echo shell-exited-$?")
        #expect(try terminal.waitFor("root@\(name)"), "no prompt: \(terminal.shown)")
        try terminal.type("tty; echo typed-$((6 * 7))")
        #expect(try terminal.waitFor("typed-42"), "\(terminal.shown)")
        #expect(try terminal.screen().contains("/dev/pts/"), "\(terminal.shown)")
        // The typed line shows "shell-exited-$?"; a status would be a digit there.
        #expect(try terminal.screen().range(of: #"shell-exited-[0-9]"#, options: .regularExpression) == nil)
        try terminal.type("exit 3")
        #expect(try terminal.waitFor("shell-exited-3"), "\(terminal.shown)")
        #expect(try listed(name) != nil, "leaving the shell leaves the machine running")
    }

    /// `login` attaches the terminal to the machine's console, where its getty runs (Debian) or
    /// busybox's init asks for Enter: the prompt, a typed command's output while it runs, the
    /// window's size; a second login is refused while one is attached; `^]^]^]` detaches and
    /// leaves the machine running, and a login attached when the machine powers off ends.
    @Test(arguments: ["debian", "busybox"])
    func loginAttachesToTheConsoleAndDetaches(_ guest: String) throws {
        let name = Self.unique(guest == "debian" ? "web" : "bb")
        let tmp = try store("machine-login", debian: guest == "debian" ? name : nil, busybox: guest == "busybox" ? name : nil)
        #expect(try berth(["start", name], store: tmp).status == 0)
        defer { _ = try? berth(["terminate", name], store: tmp) }
        let terminal = try TerminalSession(width: 100, height: 30)
        let login = "'\(berthBinary)' login \(name); echo login-exited-$?"
        try terminal.type(login)
        #expect(try terminal.waitFor("Connected to machine \(name)"), "\(terminal.shown)")
        if guest == "debian" {
            // The getty's prompt is there at once, shown again from the console's log when it
            // was written before the login attached.
            #expect(try terminal.waitFor("\(name) login:"), "\(terminal.shown)")
            try terminal.type("root")
            #expect(try terminal.waitFor("root@\(name):~#"), "\(terminal.shown)")
        } else {
            #expect(try terminal.waitFor("Please press Enter to activate this console."), "\(terminal.shown)")
            try terminal.press("Enter")
            #expect(try terminal.waitFor("# "), "\(terminal.shown)")
        }
        try terminal.type("tty; stty size; echo typed-$((6 * 7))")
        #expect(try terminal.waitFor("typed-42"), "\(terminal.shown)")
        #expect(try terminal.screen().contains("/dev/console"), "\(terminal.shown)")
        #expect(try terminal.screen().contains("30 100"), "the console takes the window's size: \(terminal.shown)")

        let second = try berth(["login", name], store: tmp)
        #expect(second.status == 1 && second.stderr.contains("attached to another login"), "\(second)")
        try terminal.press("C-]", "C-]", "C-]")
        #expect(try terminal.waitFor("Connection to machine \(name) terminated."), "\(terminal.shown)")
        #expect(try terminal.waitFor("login-exited-0"), "\(terminal.shown)")
        #expect(try listed(name) != nil, "detaching leaves the machine running")

        // Attached again, the shell is still there; a power-off ends the login with the machine.
        try terminal.type("clear; " + login)
        #expect(try terminal.waitFor("Connected to machine \(name)"), "\(terminal.shown)")
        try terminal.type("echo again-$((6 * 7))")
        #expect(try terminal.waitFor("again-42"), "\(terminal.shown)")
        #expect(try berth(["poweroff", name], store: tmp).status == 0)
        #expect(try terminal.waitFor("Machine \(name) ended."), "\(terminal.shown)")
        #expect(try terminal.waitFor("login-exited-0"), "\(terminal.shown)")
        #expect(!FileManager.default.fileExists(atPath: "/run/berth/machines/\(name).console"), "the console's socket goes with the machine")
    }

    /// A machine run in the foreground has its console on the terminal that started it: there is
    /// nothing to attach to, and login says so.
    @Test func loginToAMachineWithoutABackgroundConsoleSaysWhy() throws {
        let name = Self.unique("bb")
        let tmp = try store("machine-login-none", busybox: name)
        let missing = try berth(["login", name], store: tmp)
        #expect(missing.status != 0 && missing.stderr.contains("no machine '\(name)' is running"), "\(missing)")
        let command = try berth(["run", "-d", "-q", "-M", name, "/bin/sleep", "60"], store: tmp)
        #expect(command.status == 0, "\(command)")
        defer { _ = try? berth(["terminate", name], store: tmp) }
        let none = try berth(["login", name], store: tmp)
        #expect(none.status == 1 && none.stderr.hasPrefix("berth: error: machine '\(name)' has no console to attach to"), "\(none)")
    }

    /// A started machine that reboots (exit 133) is started again, as systemd-nspawn@.service's
    /// RestartForceExitStatus=133 has it: a new leader, the same name, a second boot in its log.
    @Test func aStartedMachineThatRebootsComesBackUp() throws {
        let name = Self.unique("web")
        let tmp = try store("machine-reboot", debian: name)
        #expect(try berth(["start", name], store: tmp).status == 0)
        defer { _ = try? berth(["terminate", name], store: tmp) }
        let first = try #require(try listed(name)?["leader"] as? Int)
        #expect(try berth(["reboot", name], store: tmp).status == 0)
        #expect(waitUntil(timeout: 60) {
            guard let leader = (try? listed(name))?["leader"] as? Int, leader != first else { return false }
            let log = (try? berth(["logs", name], store: tmp))?.stdout ?? ""
            return log.components(separatedBy: "Reached target multi-user.target").count == 3
        }, "\((try? berth(["logs", name], store: tmp))?.stdout ?? "")")
        #expect(try berth(["poweroff", name], store: tmp).status == 0)
        #expect(try listed(name) == nil, "a power-off stays off")
    }

    @Test func aKilledSupervisorTakesItsMachineAndItsListingWithIt() throws {
        let name = Self.unique("web")
        let tmp = try store("machine-kill", debian: name)
        #expect(try berth(["start", name], store: tmp).status == 0)
        let record = String(decoding: try readFile(FilePath("/run/berth/machines/\(name).machine")), as: UTF8.self)
        let supervisor = try #require(record.split(separator: "\n").first { $0.hasPrefix("supervisor=") }.flatMap { pid_t($0.dropFirst(11)) })
        let leader = try #require(try listed(name)?["leader"] as? Int)
        #expect(kill(supervisor, SIGKILL) == 0)
        #expect(waitUntil { kill(pid_t(leader), 0) != 0 || processState(pid_t(leader)) == "Z" })
        #expect(try listed(name) == nil)
        // The next command mounts its tree again, and it starts again.
        #expect(try berth(["start", name], store: tmp).status == 0)
        #expect(try berth(["terminate", name], store: tmp).status == 0)
    }

    @Test func aMachineThatIsNotUpInTimeIsStoppedWithItsConsoleShown() throws {
        let name = Self.unique("web")
        let tmp = try store("machine-slow", debian: name)
        // A unit multi-user.target waits for keeps systemd from saying READY=1 for a minute.
        let unit = """
            printf '[Unit]\\nBefore=multi-user.target\\n[Service]\\nType=oneshot\\nExecStart=/bin/sleep 60\\n[Install]\\nWantedBy=multi-user.target\\n' \\
              > /etc/systemd/system/slow.service && systemctl enable slow.service
            """
        #expect(try inImage(name, unit, store: tmp).status == 0)
        let result = try berth(["start", "--timeout", "3", name], store: tmp)
        #expect(result.status == 1 && result.stderr.contains("was not up within"), "\(result)")
        #expect(result.stderr.contains("  | "), "the console's last lines: \(result)")
        #expect(waitUntil { (try? listed(name)) == nil })
    }

    /// Where PID 1 is systemd, enable writes a unit in the spirit of systemd-nspawn@.service,
    /// which systemd-analyze accepts; on this host (PID 1 is not systemd) it says what to add
    /// to the host's init instead, and writes nothing.
    @Test func enableWritesAUnitSystemdAcceptsOrSaysWhatToAddToTheInit() throws {
        let tmp = try store("machine-enable", busybox: "bb")
        let here = try berth(["enable", "bb"], store: tmp)
        #expect(here.status == 65 && here.stderr.contains("PID 1 is not systemd") && here.stderr.contains("start bb"), "\(here)")
        let units = try TemporaryDirectory("units")
        let store = ["--store", tmp.appending("store").string]
        let enabled = try run(berthBinary, store + ["enable", "bb"], environment: ["BERTH_UNIT_DIRECTORY": units.string])
        #expect(enabled.status == 0, "\(enabled)")
        let unit = units.appending("berth-bb.service")
        let text = String(decoding: try readFile(unit), as: UTF8.self)
        #expect(text.contains("ExecStart=\(berthBinary) --store \(tmp.appending("store").string) start bb"), "\(text)")
        let verified = try run("/usr/bin/systemd-analyze", ["verify", unit.string])
        #expect(verified.status == 0 && verified.stderr.isEmpty, "\(verified)")
        #expect(try FileStatus.of(units.appending("machines.target.wants/berth-bb.service")) != nil)
        #expect(try run(berthBinary, store + ["disable", "bb"], environment: ["BERTH_UNIT_DIRECTORY": units.string]).status == 0)
        #expect(try FileStatus.of(unit) == nil)
        let again = try run(berthBinary, store + ["disable", "bb"], environment: ["BERTH_UNIT_DIRECTORY": units.string])
        #expect(again.status == 66 && again.stderr.contains("not enabled"), "\(again)")
    }

    @Test func tenMachinesAtOnceAreListedAndStoppedByName() throws {
        let tmp = try store("machine-ten", busybox: "bb")
        let names = (0..<10).map { _ in Self.unique("m") }
        for name in names { #expect(try berth(["clone", "bb", name], store: tmp).status == 0) }
        for name in names { #expect(try berth(["start", name], store: tmp).status == 0) }
        let running = Set(try machines().compactMap { $0["machine"] as? String })
        #expect(running.isSuperset(of: names))
        #expect(try berth(["terminate"] + names, store: tmp).status == 0)
        #expect(Set(try machines().compactMap { $0["machine"] as? String }).isDisjoint(with: names))
        #expect(mounts(under: tmp.string).isEmpty, "\(mounts(under: tmp.string))")
    }
}

/// The state letter of /proc/PID/stat ("Z" for a zombie), or nil.
func processState(_ pid: pid_t) -> String? {
    guard let text = try? String(decoding: readFile(FilePath("/proc/\(pid)/stat")), as: UTF8.self),
          let close = text.lastIndex(of: ")") else { return nil }
    return text[text.index(after: close)...].split(separator: " ").first.map(String.init)
}
