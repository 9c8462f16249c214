import BerthSystem
import BerthTestSupport
import Foundation
import SystemPackage
import Testing

/// `berth run` on the real Debian root, side by side with systemd-nspawn where it can be.
@Suite(.serialized) struct RunTests {
    /// A store with the Debian image imported as "deb", made once for the suite.
    static let shared: TemporaryDirectory = {
        let tmp = try! TemporaryDirectory.forProcess("run")
        let result = try! berth(["import", "-q", Fixtures.debianZstd, "deb"], store: tmp)
        precondition(result.status == 0, "\(result)")
        return tmp
    }()

    var image: String { Self.shared.appending("store/deb").string }

    func inContainer(_ script: String, options: [String] = [], input: String? = nil) throws -> CommandResult {
        try berth(["run", "-q", "-D", image] + options + ["/bin/sh", "-c", script], store: Self.shared, input: input)
    }

    /// nspawn 252 relays a command's output through a pty even when berth's caller pipes it, so
    /// its lines end in CR LF; berth passes the streams straight through.
    func inNspawn(_ script: String) throws -> CommandResult {
        var result = try run("/usr/bin/systemd-nspawn", ["--register=no", "--keep-unit", "-q", "-D", image, "/bin/sh", "-c", script])
        result.stdout = result.stdout.replacingOccurrences(of: "\r\n", with: "\n")
        return result
    }

    @Test func theCommandIsPID1AndItsStatusIsBerths() throws {
        let result = try inContainer("echo $$ $(hostname); exit 7")
        #expect(result.status == 7, "\(result)")
        #expect(result.stdout == "1 deb\n", "\(result)")
    }

    @Test func aSignalToBerthEndsTheCommandWithADistinctStatus() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: berthBinary)
        process.arguments = ["--store", Self.shared.appending("store").string, "run", "-q", "-D", image, "/bin/sleep", "30"]
        try process.run()
        // Once the command runs in the container (a signal before that ends the start instead).
        #expect(waitUntil { processRuns("/bin/sleep 30") }, "the container did not start")
        kill(process.processIdentifier, SIGTERM)
        process.waitUntilExit()
        // PID 1 of a command ignores SIGTERM, so berth ends it with SIGKILL: 128 + 9.
        #expect(process.terminationStatus == 137)
        #expect(try shell("pgrep -f '^/bin/sleep 30$'").status != 0)
    }

    @Test(arguments: [
        "grep CapBnd /proc/self/status",
        "readlink /proc/1/ns/pid >/dev/null && echo pid-ns-ok",
        "ls /dev | sort | tr '\\n' ' '",
        "cat /proc/1/cmdline | tr '\\0' ' '; echo",
        // A random (version 4) UUID in its dashed form, as nspawn gives.
        "echo $container_uuid | grep -qE '^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$' && echo uuid-ok",
        "echo $HOME $PATH",
    ])
    func whatTheContainerSeesMatchesNspawn(_ script: String) throws {
        let ours = try inContainer(script), theirs = try inNspawn(script)
        #expect(ours.status == 0 && theirs.status == 0, "\(ours)\n\(theirs)")
        if script.hasPrefix("ls /dev") {
            // nspawn adds /dev/net/tun and the like; every device berth makes is one nspawn makes.
            let mine = Set(ours.stdout.split(separator: " ")), nspawns = Set(theirs.stdout.split(separator: " "))
            #expect(mine.subtracting(nspawns).isEmpty, "berth has \(mine.subtracting(nspawns)) that nspawn has not")
            #expect(mine.isSuperset(of: ["null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "shm", "console"]))
        } else {
            #expect(ours.stdout == theirs.stdout, "berth: \(ours.stdout) nspawn: \(theirs.stdout)")
        }
    }

    @Test func theKernelIsOutOfReach() throws {
        // PID 1's descriptors are looked at with builtins only, so that the shell opens none of
        // its own meanwhile (a pipe or a saved stream would show).
        let result = try inContainer("""
            echo 1 > /proc/sys/kernel/domainname 2>/dev/null && echo wrote-proc-sys
            test -e /proc/sysrq-trigger && (echo h > /proc/sysrq-trigger) 2>/dev/null && echo wrote-sysrq
            head -c1 /proc/kallsyms | grep -q . && echo read-kallsyms
            test -s /proc/keys && echo read-keys
            touch /sys/kernel/x 2>/dev/null && echo wrote-sys
            for fd in 0 1 2 3 4 5 6 7 8 9 10 11 12; do [ -e /proc/1/fd/$fd ] && printf '%s ' $fd; done; echo
            mount -t tmpfs none /mnt && echo mounted
            """)
        #expect(!result.stdout.contains("wrote") && !result.stdout.contains("read-"), "\(result)")
        #expect(result.stdout.contains("\n0 1 2 \n") || result.stdout.hasPrefix("0 1 2 \n"), "PID 1 holds its standard streams and no more: \(result)")
        // A mount made inside stays inside.
        #expect(result.stdout.contains("mounted"))
        #expect(mounts(under: image).isEmpty, "\(mounts(under: image))")
    }

    func installProbe(_ action: String) throws -> () -> Void {
        try installBootProbe(in: FilePath(image), action: action)
    }

    @Test func bootsToMultiUserAndPowersOffAsNspawnDoes() throws {
        let remove = try installProbe("poweroff")
        defer { remove() }
        for tool in ["berth", "nspawn"] {
            let out = try TemporaryDirectory("boot-\(tool)")
            let result = tool == "berth"
                ? try berth(["run", "-q", "-b", "-M", "deb", "--bind", "\(out.string):/out"], store: Self.shared)
                : try run("/usr/bin/timeout", ["120", "/usr/bin/systemd-nspawn", "--register=no", "--keep-unit", "-q", "-b", "-D", image, "--bind", "\(out.string):/out"])
            #expect(result.status == 0, "\(tool): \(result)")
            #expect(try readFile(out.appending("state")) == Array("active\n".utf8), "\(tool)")
            // No unit failed, so nothing in the container's setup got in systemd's way.
            let failed = String(decoding: try readFile(out.appending("failed")), as: UTF8.self)
            #expect(failed.isEmpty, "\(tool): failed units: \(failed)")
        }
        #expect(try FileStatus.of("/dev/null")?.permissions == 0o666, "the host's /dev/null kept its mode")
        let leftover = try shell("ls /sys/fs/cgroup/unified 2>/dev/null | grep '^berth-' || true").stdout
        #expect(leftover.isEmpty, "cgroups left: \(leftover)")
    }

    /// berth as a pure cgroup v2 host shows it: in a mount namespace of its own, the unified
    /// hierarchy is mounted at /sys/fs/cgroup, over the hybrid layout, so no v1 controller (the
    /// devices fallback included) is there to be found. The kernel is the same one; what this
    /// cannot show is a host whose controllers are bound to the unified hierarchy.
    func onPureCgroupV2(_ arguments: [String]) throws -> CommandResult {
        try run("/usr/bin/unshare", ["-m", "--propagation", "private", "/bin/sh", "-c", """
            mount -t cgroup2 cgroup2 /sys/fs/cgroup || exit 90
            test -e /sys/fs/cgroup/devices && exit 91
            exec "$@"
            """, "sh", berthBinary, "--store", Self.shared.appending("store").string] + arguments)
    }

    @Test func onAPureCgroupV2HostABootAndTheDevicePolicyWork() throws {
        let remove = try installProbe("poweroff")
        defer { remove() }
        let out = try TemporaryDirectory("v2")
        let boot = try onPureCgroupV2(["run", "-q", "-b", "-M", "deb", "--bind", "\(out.string):/out"])
        #expect(boot.status == 0, "\(boot)")
        #expect(try readFile(out.appending("state")) == Array("active\n".utf8))
        let failed = String(decoding: try readFile(out.appending("failed")), as: UTF8.self)
        #expect(failed.isEmpty, "failed units: \(failed)")
        // The booted system's cgroup is gone with it (the hierarchy is the host's own).
        let leftover = try shell("ls /sys/fs/cgroup/unified | grep '^berth-' || true").stdout
        #expect(leftover.isEmpty, "cgroups left: \(leftover)")

        let (major, minor) = try rootDisk()
        let devices = try onPureCgroupV2(["run", "-q", "-M", "deb", "/bin/sh", "-c", """
            mknod /tmp/disk b \(major) \(minor) 2>/dev/null && echo made-node
            head -c 512 /tmp/disk >/dev/null 2>&1 && echo read-made
            echo x > /dev/null && head -c 1 /dev/urandom >/dev/null && echo pseudo-devices-ok
            """])
        #expect(devices.stdout == "pseudo-devices-ok\n", "\(devices)")
    }

    @Test func aRebootReturns133() throws {
        let remove = try installProbe("reboot")
        defer { remove() }
        let out = try TemporaryDirectory("reboot")
        let result = try berth(["run", "-q", "-b", "-M", "deb", "--bind", "\(out.string):/out"], store: Self.shared)
        #expect(result.status == 133, "\(result)")
        #expect(try readFile(out.appending("state")) == Array("active\n".utf8))
    }

    @Test func sigtermPowersABootedSystemOffCleanly() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: berthBinary)
        process.arguments = ["--store", Self.shared.appending("store").string, "boot", "deb"]
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        // Up once its systemd, the supervisor's child, has started processes of its own: by then
        // it has its handler for SIGRTMIN+3.
        let up = waitUntil(timeout: 60) {
            children(of: process.processIdentifier).contains { !children(of: $0).isEmpty }
        }
        #expect(up, "the booted system did not start")
        #expect(process.isRunning)
        kill(process.processIdentifier, SIGTERM)
        process.waitUntilExit()
        // systemd got SIGRTMIN+3, stopped its units and powered off: status 0, not 137.
        #expect(process.terminationStatus == 0)
        #expect(mounts(under: image).isEmpty)
    }

    @Test func onATerminalTheContainerGetsAPtyOfItsOwn() throws {
        let berthCommand = "'\(berthBinary)' --store '\(Self.shared.appending("store").string)' -qM deb"
        let session = try shell("""
            script -qec "stty cols 101 rows 33; \(berthCommand) /bin/sh -c 'test -t 0 && echo isatty; stty size; exit 3'; echo status=\\$?" /dev/null
            """)
        let lines = session.stdout.replacingOccurrences(of: "\r", with: "")
        #expect(lines.contains("isatty\n33 101\nstatus=3"), "\(session)")
        // ^]^]^] within a second ends the container at once.
        let started = Date()
        let escaped = try shell("""
            (until pgrep -fx '/bin/sleep 32' >/dev/null; do sleep 0.02; done; printf '\\035\\035\\035') | script -qec "\(berthCommand) /bin/sleep 32; echo status=\\$?" /dev/null
            """)
        #expect(escaped.stdout.contains("status=137"), "\(escaped)")
        #expect(Date().timeIntervalSince(started) < 10)
    }

    @Test func keystrokesInjectedInsideNeverReachTheCallersTerminal() throws {
        // TIOCSTI inside pushes "echo INJECTED" into the container's terminal; were that the
        // caller's, the shell that started berth would read it as its next line.
        let tmp = try TemporaryDirectory("tiocsti")
        let inner = tmp.appending("inner.sh")
        try writeFile(inner, """
            '\(berthBinary)' --store '\(Self.shared.appending("store").string)' -qM deb /usr/bin/perl -e \
              'for (split //, "echo INJECTED\\n") { ioctl(STDIN, 0x5412, $_) or die "TIOCSTI: $!\\n" } print "injected\\n"'
            echo "status=$?"
            read -t 1 line
            echo "after=[$line]"
            """)
        let session = try shell("script -qec 'bash \(inner.string)' /dev/null")
        let output = session.stdout.replacingOccurrences(of: "\r", with: "")
        #expect(output.contains("injected\nstatus=0"), "the ioctl worked inside: \(session)")
        #expect(output.contains("after=[]"), "\(session)")
    }

    @Test func theConsoleIsTheContainersOwnNotAHostFile() throws {
        // systemd chowns and chmods /dev/console; off a terminal that must not reach the host's
        // /dev/null (or the caller's terminal) through a bind.
        let before = try FileStatus.of("/dev/null")
        let result = try inContainer("chmod 600 /dev/console && chown 0:5 /dev/console && stat -c '%a %g %t:%T' /dev/console")
        #expect(result.stdout == "600 5 1:3\n", "\(result)")
        #expect(try FileStatus.of("/dev/null") == before)
        #expect(try FileStatus.of("/dev/null")?.permissions == 0o666)
    }

    /// By default a BPF device program on the container's cgroup v2 enforces nspawn's device set;
    /// with BERTH_LEGACY_DEVICES=1, the v1 devices controller (the fallback) does.
    /// The device numbers of the disk the host's root is on.
    func rootDisk() throws -> (major: UInt32, minor: UInt32) {
        let numbers = try shell("stat -c '%t %T' $(findmnt -no SOURCE / | head -1)").stdout.split(separator: " ")
            .compactMap { UInt32($0.trimmingCharacters(in: .whitespacesAndNewlines), radix: 16) }
        try #require(numbers.count == 2)
        return (numbers[0], numbers[1])
    }

    @Test(arguments: [false, true])
    func hostDisksAreOutOfReach(legacy: Bool) throws {
        // The host's first disk, by its numbers, made inside and planted in the image beforehand.
        let (major, minor) = try rootDisk()
        #expect(try shell("mknod '\(image)/root/planted' b \(major) \(minor)").status == 0)
        defer { _ = try? shell("rm -f '\(image)/root/planted'") }
        let result = try run(berthBinary, ["--store", Self.shared.appending("store").string, "run", "-q", "-D", image, "/bin/sh", "-c", """
            mknod /tmp/disk b \(major) \(minor) 2>/dev/null && echo made-node
            head -c 512 /tmp/disk >/dev/null 2>&1 && echo read-made
            head -c 512 /root/planted >/dev/null 2>&1 && echo read-planted
            echo x > /dev/null && head -c 1 /dev/urandom >/dev/null && echo pseudo-devices-ok
            """], environment: legacy ? ["BERTH_LEGACY_DEVICES": "1"] : [:])
        #expect(result.stdout == "pseudo-devices-ok\n", "\(result)")
    }

    @Test func optionsDoWhatNspawnsDo() throws {
        let tmp = try TemporaryDirectory("options")
        try writeFile(tmp.appending("file"), "from host\n")
        try FileManager.default.createDirectory(atPath: tmp.appending("dir").string, withIntermediateDirectories: false)
        let root = try berth(["run", "-q", "-D", image, "-E", "GREETING=hello", "-E", "COPIED", "--chdir", "/usr",
                              "--hostname", "other", "--bind", "\(tmp.string):/mnt/one",
                              "--bind-ro", "\(tmp.appending("dir").string):/mnt/ro",
                              "--bind-ro", "\(tmp.appending("file").string):/etc/host-file", "/bin/sh", "-c", """
            echo "$GREETING $COPIED"; pwd; hostname
            cat /mnt/one/file; touch /mnt/one/written && echo rw-ok
            touch /mnt/ro/x 2>/dev/null || echo ro-refused
            cat /etc/host-file
            """], store: Self.shared)
        #expect(root.status == 0, "\(root)")
        #expect(root.stdout == "hello \n/usr\nother\nfrom host\nrw-ok\nro-refused\nfrom host\n", "\(root)")
        #expect(try FileStatus.of(tmp.appending("written")) != nil)
        let nobody = try berth(["run", "-q", "-D", image, "-u", "nobody", "/usr/bin/id", "-u"], store: Self.shared)
        #expect(nobody.stdout == "65534\n", "\(nobody)")
        // The destination of a bind is made in the image, so remove what the test made.
        _ = try shell("rmdir '\(image)/mnt/one' '\(image)/mnt/ro'; rm -f '\(image)/etc/host-file'")
    }

    @Test func asPID2RunsTheCommandUnderAMinimalInitAsNspawnDoes() throws {
        let script = "echo $$; cat /proc/1/comm"
        let berthResult = try inContainer(script, options: ["--as-pid2"])
        let nspawn = try run("/usr/bin/systemd-nspawn", ["--register=no", "--keep-unit", "-q", "--as-pid2", "-D", image, "/bin/sh", "-c", script])
        #expect(berthResult.stdout.split(separator: "\n").first == "2", "\(berthResult)")
        #expect(nspawn.stdout.replacingOccurrences(of: "\r\n", with: "\n").split(separator: "\n").first == "2", "\(nspawn)")
        #expect(berthResult.stdout.hasSuffix("(berth-init)\n"), "\(berthResult)")
        #expect(try inContainer("exit 7", options: ["--as-pid2"]).status == 7)
        // PID 1 reaps orphans: a background child that outlives its parent leaves no zombie.
        // Counted once no sleep is left, or after 5 s with an unreaped one.
        let reaped = try inContainer("""
            sh -c 'sleep 0.2 &'; i=0
            while ps -eo comm= | grep -qx sleep && [ $i -lt 250 ]; do i=$((i+1)); sleep 0.02; done
            ps -eo stat= | grep -c Z || true
            """, options: ["--as-pid2"])
        #expect(reaped.stdout == "0\n", "\(reaped)")
        // A signal to berth reaches the command itself: it dies of SIGTERM (143), where a
        // command as PID 1 is shielded and ends with SIGKILL (137).
        let process = Process()
        process.executableURL = URL(fileURLWithPath: berthBinary)
        process.arguments = ["--store", Self.shared.appending("store").string, "run", "-q", "--as-pid2", "-D", image, "/bin/sleep", "33"]
        try process.run()
        #expect(waitUntil { processRuns("/bin/sleep 33") }, "the command did not start")
        kill(process.processIdentifier, SIGTERM)
        process.waitUntilExit()
        #expect(process.terminationStatus == 143)
        expectCleanFailure(try berth(["run", "-q", "-b", "--as-pid2", "-D", image], store: Self.shared), "exclude each other")
    }

    @Test func theSmallSupervisorHoldsTheImageAndBerthAloneStillWorks() throws {
        // With berth-stage beside it, berth hands the running container to it.
        let process = Process()
        process.executableURL = URL(fileURLWithPath: berthBinary)
        process.arguments = ["--store", Self.shared.appending("store").string, "run", "-q", "-M", "deb", "/bin/sleep", "5"]
        try process.run()
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL); process.waitUntilExit() } }
        // berth execs berth-stage once the container has started.
        waitUntil { (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(process.processIdentifier)/exe"))?.hasSuffix("/berth-stage") == true }
        let exe = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(process.processIdentifier)/exe")
        #expect(exe.hasSuffix("/berth-stage"), "\(exe)")
        expectCleanFailure(try berth(["remove", "deb"], store: Self.shared), "in use")
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()

        // A berth binary alone (no berth-stage beside it) stages and supervises by itself.
        let tmp = try TemporaryDirectory("alone")
        #expect(try shell("cp '\(berthBinary)' '\(tmp.string)/berth'").status == 0)
        let alone = try run(tmp.string + "/berth", ["--store", Self.shared.appending("store").string, "run", "-q", "-M", "deb",
                                                    "/bin/sh", "-c", "readlink /proc/1/exe; exit 4"])
        #expect(alone.status == 4 && alone.stdout == "/usr/bin/dash\n", "\(alone)")
    }

    @Test func privateNetworkHasOnlyLoopbackUp() throws {
        let result = try inContainer("ls /sys/class/net | tr '\\n' ' '; cat /sys/class/net/lo/operstate; ip -o link show lo | grep -c UP",
                                     options: ["--private-network"])
        // lo's operstate is "unknown" even when it is up; `ip` says UP.
        #expect(result.stdout == "lo unknown\n1\n", "\(result)")
    }

    @Test func readOnlyAndPipedInput() throws {
        let ro = try inContainer("touch /etc/x 2>/dev/null && echo wrote || echo refused", options: ["--read-only"])
        #expect(ro.stdout == "refused\n", "\(ro)")
        let tmp = try TemporaryDirectory("stdin")
        try writeFile(tmp.appending("in"), "piped line\n")
        let piped = try berth(["run", "-q", "-D", image, "/bin/cat"], store: Self.shared, input: tmp.appending("in").string)
        #expect(piped.stdout == "piped line\n", "\(piped)")
    }

    @Test func imagesByNameDefaultSubcommandAndRefusals() throws {
        let byName = try run(berthBinary, ["--store", Self.shared.appending("store").string, "-qM", "deb", "/bin/cat", "/etc/hostname"])
        #expect(byName.status == 0 && byName.stdout == "berth-test\n", "\(byName)")
        expectCleanFailure(try berth(["run", "-D", "/", "/bin/true"], store: Self.shared), "-D / would run the host's own root")
        let empty = try TemporaryDirectory("notos")
        expectCleanFailure(try berth(["run", "-D", empty.string, "/bin/true"], store: Self.shared), "not an OS tree")
        expectCleanFailure(try berth(["run", "-M", "missing", "/bin/true"], store: Self.shared), "no image 'missing'")
        expectCleanFailure(try berth(["run", "/bin/true"], store: Self.shared), "give the tree to run")
    }

    @Test func aWritableRunHoldsTheImage() throws {
        let first = Process()
        first.executableURL = URL(fileURLWithPath: berthBinary)
        first.arguments = ["--store", Self.shared.appending("store").string, "run", "-q", "-M", "deb", "/bin/sleep", "30"]
        try first.run()
        #expect(waitUntil { processRuns("/bin/sleep 30") }, "the first run did not start")
        #expect(first.isRunning, "the first run ended early")
        defer { if first.isRunning { kill(first.processIdentifier, SIGKILL); first.waitUntilExit() } }
        var busy = CommandResult(status: 0, stdout: "", stderr: "")
        try waitUntil(timeout: 30) {
            busy = try berth(["run", "-q", "-M", "deb", "/bin/true"], store: Self.shared)
            return busy.status != 0
        }
        expectCleanFailure(busy, "in use by another container")
        expectCleanFailure(try berth(["remove", "deb"], store: Self.shared), "in use")
        // Read-only runs share an image with each other, not with a writer.
        expectCleanFailure(try berth(["run", "-q", "--read-only", "-M", "deb", "/bin/true"], store: Self.shared), "in use")

        // Killing the supervisor takes the container with it, and frees the image at once.
        kill(first.processIdentifier, SIGKILL)
        first.waitUntilExit()
        var again = CommandResult(status: 1, stdout: "", stderr: "")
        try waitUntil(timeout: 30) {
            again = try berth(["run", "-q", "-M", "deb", "/bin/true"], store: Self.shared)
            return again.status == 0
        }
        #expect(again.status == 0, "\(again)")

        #expect(try shell("pgrep -f '^/bin/sleep 30$'").status != 0, "the container's process outlived its supervisor")
    }
}
