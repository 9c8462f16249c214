import BerthSystem
import BerthTestSupport
import Foundation
import SystemPackage
import Testing

/// The console as a person sees it: driven in tmux and read off the screen while the machine
/// runs, and off a terminal read from the file it writes while it runs.
@Suite(.serialized) struct ConsoleTests {
    /// A store with Debian imported as "deb" (a directory image, for nspawn too) and as "base",
    /// cloned as "web", and busybox as "bb".
    static let shared: TemporaryDirectory = {
        let tmp = try! TemporaryDirectory.forProcess("console")
        precondition(try! berth(["import", "-q", Fixtures.debianZstd, "deb"], store: tmp).status == 0)
        precondition(try! berth(["import", "-q", Fixtures.debianZstd, "base"], store: tmp).status == 0)
        precondition(try! berth(["clone", "base", "web"], store: tmp).status == 0)
        precondition(try! berth(["import", "-q", Fixtures.busybox, "bb"], store: tmp).status == 0)
        return tmp
    }()

    var store: String { Self.shared.appending("store").string }
    var berthLine: String { "'\(berthBinary)' --store '\(store)'" }

    @Test func aBootOnATerminalShowsItsMessagesThenALoginThatWorks() throws {
        let terminal = try TerminalSession()
        try terminal.type("\(berthLine) boot web; echo berth-exited-$?")
        #expect(try terminal.waitFor("Spawning container web on \(store)/web."), "\(terminal.shown)")
        #expect(try terminal.screen().contains("Press ^] three times within 1s to kill container."))
        // systemd's messages show as they come, long before the machine ends.
        #expect(try terminal.waitFor("Reached target"), "\(terminal.shown)")
        #expect(try terminal.waitFor("login:", timeout: 60), "no login prompt: \(terminal.shown)")
        #expect(!(try terminal.screen().contains("berth-exited")))
        try terminal.type("root")
        #expect(try terminal.waitFor("root@"), "the login did not take: \(terminal.shown)")
        // What a typed command prints shows while the machine runs.
        try terminal.type("echo typed-$((6 * 7))")
        #expect(try terminal.waitFor("typed-42"), "\(terminal.shown)")
        #expect(!(try terminal.screen().contains("berth-exited")))
        try terminal.type("poweroff")
        // A writable run's end waits for its overlay's sync of the store's file system, which
        // the suite's other tests (1 GB loop devices among them) may keep busy for a while.
        #expect(try terminal.waitFor("berth-exited-0", timeout: 180), "\(terminal.shown)")
        // The closing line stands on a line of its own, and so does the prompt after it.
        let lines = try terminal.screen().split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        #expect(lines.contains("Container web exited successfully."), "\(lines)")
        #expect(lines.contains("berth-exited-0"), "\(lines)")
        #expect(mounts(under: store).isEmpty)
    }

    @Test func offATerminalTheBootMessagesReachAFileWhileTheMachineRuns() throws {
        let log = try TemporaryDirectory("console-log")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: berthBinary)
        process.arguments = ["--store", store, "boot", "-q", "-x", "web"]
        process.standardInput = FileHandle.nullDevice
        FileManager.default.createFile(atPath: log.appending("boot.log").string, contents: nil)
        process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: log.appending("boot.log").string))
        try process.run()
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        var seen = ""
        waitUntil(timeout: 60) {
            // systemd colours its messages for the caller's TERM, which berth passes on as nspawn does.
            seen = String(decoding: (try? readFile(log.appending("boot.log"))) ?? [], as: UTF8.self)
                .replacingOccurrences(of: "\u{1b}\\[[0-9;]*m", with: "", options: .regularExpression)
            return seen.contains("Reached target multi-user.target")
        }
        #expect(seen.contains("Reached target multi-user.target"), "\(seen)")
        #expect(process.isRunning, "the messages came only after the machine ended")
        kill(process.processIdentifier, SIGTERM)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        let all = String(decoding: try readFile(log.appending("boot.log")), as: UTF8.self)
            .replacingOccurrences(of: "\u{1b}\\[[0-9;]*m", with: "", options: .regularExpression)
        // SIGTERM asks systemd to halt (SIGRTMIN+3, as nspawn sends), which it reports to the end.
        #expect(all.contains("Reached target") && all.contains("Halting system."), "\(all)")
    }

    @Test func threeEscapesEndTheContainerOnALineOfItsOwn() throws {
        let terminal = try TerminalSession()
        try terminal.type("\(berthLine) run -M bb /bin/sh; echo berth-exited-$?")
        #expect(try terminal.waitFor("/ #"), "\(terminal.shown)")
        try terminal.type("echo in-$((2 + 3))")
        #expect(try terminal.waitFor("in-5"))
        try terminal.press("C-]", "C-]", "C-]")
        #expect(try terminal.waitFor("berth-exited-137"), "\(terminal.shown)")
        let lines = try terminal.screen().split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        #expect(lines.contains("Container bb terminated by ^]^]^]."), "\(lines)")
        #expect(lines.contains("berth-exited-137"), "\(lines)")
    }

    @Test func theConsoleModesAreNspawns() throws {
        func inBusybox(_ options: [String], _ script: String, input: String? = nil) throws -> CommandResult {
            try berth(["run", "-q"] + options + ["-M", "bb", "/bin/sh", "-c", script], store: Self.shared, input: input)
        }
        // read-only: the console's output on standard output, the streams all the pty.
        let readOnly = try inBusybox(["--console=read-only"], "test -t 0 && test -t 1 && echo all-pty; exit 4")
        #expect(readOnly.status == 4 && readOnly.stdout.contains("all-pty"), "\(readOnly)")
        // passive: a pty that is relayed nowhere.
        let passive = try inBusybox(["--console=passive"], "echo lost; exit 5")
        #expect(passive.status == 5 && passive.stdout.isEmpty, "\(passive)")
        // interactive: input is relayed into the pty too.
        let tmp = try TemporaryDirectory("console-input")
        try writeFile(tmp.appending("in"), "abc\n")
        let interactive = try inBusybox(["--console=interactive"], "read x; echo got-$x", input: tmp.appending("in").string)
        #expect(interactive.stdout.contains("got-abc"), "\(interactive)")
        // pipe, and the default off a terminal: berth's own streams, nothing in between.
        for options in [["-P"], ["--console=pipe"], []] {
            let piped = try inBusybox(options, "test -t 0 || test -t 1 || echo no-tty; read x; echo got-$x", input: tmp.appending("in").string)
            #expect(piped.stdout == "no-tty\ngot-abc\n", "\(options): \(piped)")
        }
        expectCleanFailure(try inBusybox(["--console=sideways"], "true"), "--console takes interactive, read-only, passive or pipe")
    }

    @Test func pipeIsRefusedBesideATerminalWhichTheContainerMustNeverHold() throws {
        let terminal = try TerminalSession()
        try terminal.type("\(berthLine) run -P -M bb /bin/true; echo berth-exited-$?")
        #expect(try terminal.waitFor("berth-exited-1"), "\(terminal.shown)")
        #expect(try terminal.screen().contains("berth: error: --console=pipe would give the container your terminal"))
    }

    @Test func withoutQuietBerthSaysWhatItRunsAndHowItEnded() throws {
        let ok = try berth(["run", "-M", "bb", "/bin/true"], store: Self.shared)
        #expect(ok.stderr == "Spawning container bb on \(store)/bb.\nContainer bb exited successfully.\n", "\(ok)")
        let failed = try berth(["run", "-M", "bb", "/bin/sh", "-c", "exit 3"], store: Self.shared)
        #expect(failed.status == 3 && failed.stderr.hasSuffix("Container bb failed with error code 3.\n"), "\(failed)")
        // An ephemeral run tells the name it got.
        let ephemeral = try berth(["run", "-x", "-M", "bb", "/bin/true"], store: Self.shared)
        #expect(ephemeral.stderr.range(of: #"Spawning container bb-[0-9a-f]{16} on "#, options: .regularExpression) != nil, "\(ephemeral)")
        #expect(try berth(["run", "-q", "-M", "bb", "/bin/true"], store: Self.shared).stderr.isEmpty)
    }

    @Test func devHoldsWhatNspawnsDoes() throws {
        let script = "ls -l /dev/net/tun | cut -c1; ls /dev/char | sort | tr '\\n' ' '"
        let ours = try berth(["run", "-q", "-M", "deb", "/bin/sh", "-c", script], store: Self.shared)
        let theirs = try run("/usr/bin/systemd-nspawn", ["--register=no", "--keep-unit", "-q", "-D", "\(store)/deb", "/bin/sh", "-c", script])
        #expect(ours.status == 0 && theirs.status == 0, "\(ours) \(theirs)")
        #expect(ours.stdout == theirs.stdout.replacingOccurrences(of: "\r\n", with: "\n"), "berth: \(ours.stdout) nspawn: \(theirs.stdout)")
    }
}
