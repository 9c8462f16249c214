import BerthSystem
import BerthTestSupport
import Foundation
import SystemPackage
import Testing

/// systemd-nspawn's options that berth takes as nspawn 252 does, each run side by side with
/// nspawn (`--register=no --keep-unit`, as this host needs) on the same busybox tree: the same
/// output from inside and the same status; and the values both refuse.
@Suite(.serialized) struct NspawnOptionTests {
    /// A store with the busybox tree as "bb", made once for the suite.
    static let shared: TemporaryDirectory = {
        let tmp = try! TemporaryDirectory.forProcess("nspawn-options")
        let imported = try! berth(["import", "-q", Fixtures.busybox, "bb"], store: tmp)
        precondition(imported.status == 0, "\(imported)")
        return tmp
    }()

    var tree: String { Self.shared.appending("store/bb").string }

    /// What a container shows of what these options set: its limits, OOM score, CPUs, whether
    /// its command is PID 1, its hostname, and a container_uuid the test gave.
    static let probe = """
        cat /proc/self/limits; cat /proc/self/oom_score_adj; grep Cpus_allowed_list /proc/self/status; echo "pid $$"; hostname
        case "$container_uuid" in 0123*) echo "uuid $container_uuid";; esac
        """

    func inBerth(_ options: [String], _ script: String = probe, in root: String? = nil) throws -> CommandResult {
        try berth(["run", "-q"] + options + ["-D", root ?? tree, "/bin/sh", "-c", script], store: Self.shared)
    }

    /// nspawn's output through its pty ends lines in CR LF, and its stderr holds its own notes
    /// (it cannot clean up /run/systemd/nspawn without systemd here), so only stdout is compared.
    func inNspawn(_ options: [String], _ script: String = probe, in root: String? = nil) throws -> CommandResult {
        var result = try run("/usr/bin/systemd-nspawn",
                             ["--register=no", "--keep-unit", "-q"] + options + ["-D", root ?? tree, "/bin/sh", "-c", script])
        result.stdout = result.stdout.replacingOccurrences(of: "\r\n", with: "\n")
        return result
    }

    @Test(arguments: [
        [],  // the defaults: nspawn's limits (the kernel's for PID 1), not the caller's
        ["--rlimit=NOFILE=512:1024"], ["--rlimit=RLIMIT_AS=2G"], ["--rlimit=LimitCPU=10:20"], ["--rlimit=NICE=-5"],
        ["--rlimit=RTTIME=2s:infinity"], ["--rlimit=NPROC=100", "--rlimit=CORE=infinity", "--rlimit=MEMLOCK=64K"],
        ["--oom-score-adjust=500"], ["--cpu-affinity=0"],
        ["-a"], ["--as-pid2"],
        ["--uuid=0123456789ABCDEF0123456789abcdef"], ["--uuid=01234567-89ab-cdef-0123-456789abcdef"],
        ["--register=no", "--keep-unit"], ["--register=false"],
    ])
    func anOptionGivesTheContainerNspawnGives(_ options: [String]) throws {
        let ours = try inBerth(options), theirs = try inNspawn(options)
        #expect(ours.status == 0 && theirs.status == 0, "berth: \(ours)\nnspawn: \(theirs)")
        #expect(ours.stdout == theirs.stdout, "berth:\n\(ours.stdout)\nnspawn:\n\(theirs.stdout)")
        #expect(!ours.stdout.isEmpty)
    }

    /// `berth shell`'s command has the machine's resource limits and OOM score adjustment (its
    /// PID 1's: nspawn's defaults, or what the run gave), not the caller's, as a shell systemd
    /// starts inside the machine for `machinectl shell` has the machine's own.
    /// Limits that would starve berth itself (a small address space, few files) hold for the
    /// command alone, which sets them just before its exec.
    @Test(arguments: [[String](), ["--rlimit=NOFILE=2048:4096", "--rlimit=STACK=4M", "--oom-score-adjust=300"],
                      ["--rlimit=AS=64M", "--rlimit=NOFILE=32"]])
    func aShellInTheMachineHasItsLimits(_ options: [String]) throws {
        let name = "nspawn-shell-limits-\(Hex.random(4))"
        let started = try berth(["run", "-d", "-q", "--read-only"] + options + ["-M", name, "-D", tree, "/bin/sleep", "60"], store: Self.shared)
        #expect(started.status == 0, "\(started)")
        defer { _ = try? berth(["terminate", name], store: Self.shared) }
        let machine = try berth(["shell", name, "/bin/sh", "-c", "cat /proc/1/limits /proc/1/oom_score_adj"], store: Self.shared)
        let shell = try berth(["shell", name, "/bin/sh", "-c", "cat /proc/self/limits /proc/self/oom_score_adj"], store: Self.shared)
        #expect(machine.status == 0 && shell.status == 0 && !machine.stdout.isEmpty, "\(machine)\n\(shell)")
        #expect(shell.stdout == machine.stdout, "the shell's:\n\(shell.stdout)\nthe machine's:\n\(machine.stdout)")
        if options.contains("--oom-score-adjust=300") {
            #expect(shell.stdout.contains("Max open files            2048                 4096") && shell.stdout.hasSuffix("300\n"))
        }
    }

    /// A realtime policy works inside as under nspawn, where the kernel schedules realtime
    /// groups (a new v1 cpu cgroup has no realtime budget: the machines share berth's, given the
    /// root's), and berth starts from a realtime process; with a user namespace neither gives
    /// one, since only the host's CAP_SYS_NICE does.
    @Test func realtimeSchedulingIsAsUnderNspawn() throws {
        let probe = "chrt -f 10 true && echo realtime"
        let ours = try inBerth(["--read-only", "--private-users=no"], probe, in: Self.debian)
        let theirs = try inNspawn(["--read-only"], probe, in: Self.debian)
        #expect(ours.status == 0 && ours.stdout == theirs.stdout && ours.stdout == "realtime\n", "berth: \(ours)\nnspawn: \(theirs)")
        let started = try run("/usr/bin/chrt", ["-f", "10", berthBinary, "--store", Self.shared.appending("store").string,
                                                "run", "-q", "--read-only", "-D", tree, "/bin/echo", "started"])
        #expect(started.status == 0 && started.stdout == "started\n", "\(started)")
    }

    /// `-M NAME` beside `-D DIR` names the machine, as nspawn's --machine does: its hostname,
    /// and what `berth ps` lists it as while it runs.
    @Test func aMachineNameBesideADirectoryNamesTheMachine() throws {
        let name = "nspawn-opt-\(Hex.random(4))"
        let ours = try inBerth(["-M", name], "hostname"), theirs = try inNspawn(["-M", name], "hostname")
        #expect(ours.status == 0 && ours.stdout == "\(name)\n" && ours.stdout == theirs.stdout, "berth: \(ours)\nnspawn: \(theirs)")
        let background = try berth(["run", "-d", "-q", "-M", name, "-D", tree, "/bin/sleep", "30"], store: Self.shared)
        #expect(background.status == 0, "\(background)")
        defer { _ = try? berth(["terminate", name], store: Self.shared) }
        let ps = try berth(["ps", "--json"], store: Self.shared)
        let machines = (try JSONSerialization.jsonObject(with: Data(ps.stdout.utf8)) as? [[String: Any]]) ?? []
        let entry = machines.first { $0["machine"] as? String == name }
        #expect(entry != nil && entry?["image"] == nil, "\(ps.stdout)")
        #expect((entry?["root"] as? String) == tree, "\(ps.stdout)")
    }

    /// Values nspawn refuses, berth refuses too: one line, a non-zero exit, nothing run.
    @Test(arguments: [
        ["--rlimit=NOFILE"], ["--rlimit=BOGUS=1"], ["--rlimit=NOFILE=10:5"], ["--rlimit=NOFILE=many"],
        ["--oom-score-adjust=2000"], ["--cpu-affinity=x"], ["--uuid=xyz"], ["--uuid=00000000000000000000000000000000"],
        ["--register=maybe"], ["-M", "bad_name"],
    ])
    func aValueNspawnRefusesIsRefused(_ options: [String]) throws {
        let ours = try inBerth(options, "echo ran"), theirs = try inNspawn(options, "echo ran")
        #expect(theirs.status != 0 && !theirs.stdout.contains("ran"), "nspawn took it: \(theirs)")
        #expect(ours.status != 0 && !ours.stdout.contains("ran"), "\(ours)")
        #expect(ours.stderr.hasPrefix("berth: error: ") && ours.stderr.split(separator: "\n").count == 1, "\(ours)")
    }

    /// What berth cannot honour it refuses, saying why: registering with machined (which it does
    /// without) and disk images (not yet).
    @Test func registeringAndDiskImagesAreRefusedWithTheReason() throws {
        let register = try inBerth(["--register=yes"], "echo ran")
        #expect(register.status == 64 && register.stderr.contains("systemd-machined") && register.stderr.contains("--register=no"), "\(register)")
        let image = try inBerth(["-i", "/var/tmp/disk.raw"], "echo ran")
        #expect(image.status == 64 && image.stderr.contains("disk image") && image.stderr.contains("not support"), "\(image)")
        for result in [register, image] {
            #expect(!result.stdout.contains("ran") && result.stderr.split(separator: "\n").count == 1, "\(result)")
        }
    }

    /// Every other nspawn option berth lacks is refused with its reason and what to do instead,
    /// in one line, and nothing runs; `--no-pager` (berth pages nothing) is taken.
    @Test(arguments: ["--bind-user=alice", "-S", "--slice=machine.slice", "--oci-bundle=/srv/b", "--pivot-root=/sysroot", "-Z", "--selinux-context=x",
                      "-L", "--selinux-apifs-context=x", "--root-hash=00ff", "--root-hash-sig=x", "--verity-data=/x", "--network-interface=eth9",
                      "--network-macvlan=eth9", "--network-ipvlan=eth9", "--network-veth-extra=a:b", "--network-namespace-path=/run/netns/x"])
    func anOptionBerthLacksIsRefusedWithTheReason(_ option: String) throws {
        // A short option takes its value as the next word.
        let given = option.count == 2 ? [option, "value"] : [option]
        let result = try inBerth(given, "echo ran")
        let long = option == "-S" ? "slice" : option == "-Z" ? "selinux-context" : option == "-L" ? "selinux-apifs-context" : String(option.dropFirst(2).prefix { $0 != "=" })
        #expect(result.status == 64 && !result.stdout.contains("ran"), "\(result)")
        #expect(result.stderr.hasPrefix("berth: error: --\(long) ") && result.stderr.contains(", which berth") && result.stderr.split(separator: "\n").count == 1, "\(result)")
        #expect(!result.stderr.contains("unknown option"), "\(result)")
    }

    @Test func noPagerIsTaken() throws {
        let result = try inBerth(["--no-pager"], "echo ran")
        #expect(result.status == 0 && result.stdout == "ran\n", "\(result)")
    }
}

extension NspawnOptionTests {
    /// `--kill-signal=`: a SIGTERM to berth (or nspawn) reaches the command as PID 1 as the
    /// signal named, which it traps and exits on; `poweroff` of a command in the background
    /// sends it too.
    @Test func theKillSignalIsWhatATerminatedRunSends() throws {
        let script = "trap 'echo got; exit 7' USR1; echo ready; while :; do sleep 0.1; done"
        for (tool, arguments) in [
            ("berth", [berthBinary, "--store", Self.shared.appending("store").string, "run", "-q", "--kill-signal=SIGUSR1", "-D", tree,
                       "/bin/sh", "-c", script]),
            ("nspawn", ["/usr/bin/systemd-nspawn", "--register=no", "--keep-unit", "-q", "--kill-signal=SIGUSR1", "-D", tree, "/bin/sh", "-c", script]),
        ] {
            let output = try TemporaryDirectory("kill-signal")
            let file = output.appending("out")
            FileManager.default.createFile(atPath: file.string, contents: nil)
            let process = Process()
            process.executableURL = URL(fileURLWithPath: arguments[0])
            process.arguments = Array(arguments.dropFirst())
            process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: file.string))
            process.standardError = FileHandle.nullDevice
            try process.run()
            let ready = waitUntil(timeout: 20) { String(decoding: (try? readFile(file)) ?? [], as: UTF8.self).contains("ready") }
            #expect(ready, "\(tool) did not start the command")
            kill(process.processIdentifier, SIGTERM)
            process.waitUntilExit()
            let text = String(decoding: try readFile(file), as: UTF8.self).replacingOccurrences(of: "\r", with: "")
            #expect(process.terminationStatus == 7 && text == "ready\ngot\n", "\(tool): status \(process.terminationStatus), \(text)")
        }
        let name = "nspawn-kill-\(Hex.random(4))"
        let background = try berth(["run", "-d", "-q", "--kill-signal=USR1", "-M", name, "-D", tree, "/bin/sh", "-c", script], store: Self.shared)
        #expect(background.status == 0, "\(background)")
        defer { _ = try? berth(["terminate", name], store: Self.shared) }
        #expect(waitUntil(timeout: 10) { ((try? berth(["logs", name], store: Self.shared))?.stdout ?? "").contains("ready") })
        #expect(try berth(["poweroff", "--timeout", "10", name], store: Self.shared).status == 0)
        #expect(try berth(["logs", name], store: Self.shared).stdout.contains("got"))
    }
}

extension NspawnOptionTests {
    /// The command's environment is nspawn's: PATH, HOME, USER, LOGNAME, the caller's TERM,
    /// LANG=C.UTF-8, the host's identity (container_host_id, container_host_version_id), -E's
    /// settings, NAME alone empty where the caller has none, NOTIFY_SOCKET. Left out of the
    /// comparison: container_uuid (random) and container= (berth names itself: a deliberate
    /// difference).
    @Test(arguments: [[String](), ["-E", "GIVEN=1", "-E", "BERTH_TEST_NOT_SET"], ["-E", "LANG=de_DE.UTF-8"]])
    func theEnvironmentIsNspawns(_ options: [String]) throws {
        func variables(_ result: CommandResult) -> [String] {
            result.stdout.split(separator: "\n").map(String.init)
                .filter { !$0.hasPrefix("container_uuid=") && !$0.hasPrefix("container=") }.sorted()
        }
        let ours = try inBerth(options, "env"), theirs = try inNspawn(options, "env")
        #expect(ours.status == 0 && theirs.status == 0, "berth: \(ours)\nnspawn: \(theirs)")
        #expect(variables(ours) == variables(theirs), "berth:\n\(ours.stdout)\nnspawn:\n\(theirs.stdout)")
        #expect(variables(ours).contains { $0.hasPrefix("container_host_id=") }, "\(ours.stdout)")
        #expect(ours.stdout.contains("container=berth\n") && ours.stdout.contains("NOTIFY_SOCKET=/run/host/notify\n"))
    }
}

/// A service manager's end of NOTIFY_SOCKET, as systemd listens for a service of Type=notify: a
/// datagram socket bound in a directory of its own, and what it heard.
final class ManagerSocket {
    let directory: TemporaryDirectory
    let path: String
    private let fd: Int32

    init() throws {
        directory = try TemporaryDirectory("manager")
        path = directory.appending("notify").string
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, byte) in path.utf8.enumerated() { raw[i] = byte }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard fd >= 0, bound == 0 else { throw LaunchFailure("cannot bind \(path): errno \(errno)") }
    }

    /// The lines of every message waiting.
    func heard() -> [String] {
        var buffer = [UInt8](repeating: 0, count: 4096), lines: [String] = []
        while case let n = recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT)), n > 0 {
            lines += String(decoding: buffer[..<n], as: UTF8.self).split(separator: "\n").map(String.init)
        }
        return lines
    }

    deinit { close(fd) }
}

extension NspawnOptionTests {
    /// A payload's NOTIFY_SOCKET always has a reader, as under nspawn, and berth tells its own
    /// manager what nspawn tells it, in the same order: the container running (STATUS=,
    /// X_NSPAWN_LEADER_PID=), READY=1 at once unless `--notify-ready=yes`, and whenever the
    /// payload's PID 1 says it, and STOPPING=1 at the end. Both run with
    /// NOTIFY_SOCKET set, as a service of Type=notify.
    @Test(arguments: ["yes", "no"], [true, false])
    func theManagerHearsWhatNspawnTellsIt(_ notifyReady: String, _ says: Bool) throws {
        var heard: [String: [String]] = [:]
        for tool in ["berth", "nspawn"] {
            let manager = try ManagerSocket()
            let script = says ? "echo saying; exec systemd-notify --ready" : "echo silent"
            let options = ["-q", "--read-only", "--notify-ready=\(notifyReady)", "-D", Self.debian, "/bin/sh", "-c", script]
            let result = tool == "berth"
                ? try run(berthBinary, ["--store", Self.shared.appending("store").string, "run"] + options, environment: ["NOTIFY_SOCKET": manager.path])
                : try run("/usr/bin/systemd-nspawn", ["--register=no", "--keep-unit"] + options, environment: ["NOTIFY_SOCKET": manager.path])
            #expect(result.status == 0 && result.stdout.contains(says ? "saying" : "silent"), "\(tool): \(result)")
            // The leader's pid differs from run to run: its name is compared.
            heard[tool] = manager.heard().map { $0.hasPrefix("X_NSPAWN_LEADER_PID=") ? "X_NSPAWN_LEADER_PID" : $0 }
        }
        #expect(heard["berth"] == heard["nspawn"], "berth: \(heard["berth"] ?? []), nspawn: \(heard["nspawn"] ?? [])")
        #expect(heard["berth"]?.contains("READY=1") == (notifyReady == "no" || says), "\(heard["berth"] ?? [])")
        #expect(heard["berth"]?.last == "STATUS=Terminating...", "\(heard["berth"] ?? [])")
    }
}

extension NspawnOptionTests {
    /// `--notify-ready=yes`: a machine in the background is up when its payload says READY=1 on
    /// $NOTIFY_SOCKET, not as soon as it runs: what it did just before saying so is done once
    /// the start returns; one that never says so is not up, and is stopped at the timeout.
    @Test func notifyReadyWaitsForTheMachinesWord() throws {
        let name = "nspawn-ready-\(Hex.random(4))"
        let script = "sleep 1; touch /run/said-ready; systemd-notify --ready; exec sleep 60"
        let started = try berth(["run", "-d", "-q", "--read-only", "--notify-ready=yes", "-M", name, "-D", Self.debian,
                                 "/bin/sh", "-c", script], store: Self.shared)
        #expect(started.status == 0, "\(started)")
        defer { _ = try? berth(["terminate", name], store: Self.shared) }
        let looked = try berth(["shell", name, "/bin/test", "-e", "/run/said-ready"], store: Self.shared)
        #expect(looked.status == 0, "it was taken for up before it said READY=1: \(looked)")
        let silent = try berth(["run", "-d", "-q", "--read-only", "--notify-ready=yes", "--timeout=2", "-M", "\(name)-silent",
                                "-D", Self.debian, "/bin/sleep", "60"], store: Self.shared)
        #expect(silent.status != 0 && silent.stderr.contains("not up within 2 s"), "\(silent)")
        #expect(!(try berth(["ps"], store: Self.shared).stdout.contains("\(name)-silent")))
    }
}

extension NspawnOptionTests {
    /// With --private-network, /sys is the container's own as nspawn shows it: a read-only tmpfs
    /// holding only block, bus, class, dev, devices and kernel of its network namespace's sysfs,
    /// and fs/cgroup, fs/selinux to mount on; the host's firmware, modules and power stay out.
    @Test(arguments: [["--private-network"], ["--private-network", "--private-users=no"]])
    func ownSysfsIsNspawns(_ options: [String]) throws {
        let probe = "ls /sys | tr '\\n' ' '; echo; ls /sys/fs | tr '\\n' ' '; echo; ls /sys/class/net; stat -c '%a' /sys; touch /sys/x 2>&1; true"
        let ours = try inBerth(options, probe), theirs = try inNspawn(["--private-network"], probe)
        #expect(ours.status == 0 && ours.stdout == theirs.stdout, "berth:\n\(ours)\nnspawn:\n\(theirs.stdout)")
        #expect(ours.stdout.hasPrefix("block bus class dev devices fs kernel \n"), "\(ours.stdout)")
    }
}

extension NspawnOptionTests {
    /// A command's cgroup tree is nspawn's: the same mounts at /sys/fs/cgroup, with the same
    /// options (on this v1 host a read-only tmpfs, each controller read-only, name=systemd
    /// writable, the unified hierarchy for an image whose systemd takes it; on a v2 host
    /// cgroup2). Unlike nspawn's here (with no systemd on the host to give it a scope), each
    /// hierarchy is rooted at the machine's own cgroup: nothing of the host's tree shows,
    /// another running machine's least of all, and nothing below the tree's root but what the
    /// container makes.
    @Test(arguments: [[String](), ["--private-users=no"]], ["busybox", "debian"])
    func theCgroupTreeIsNspawnsAndTheMachinesOwn(_ options: [String], _ image: String) throws {
        let name = "nspawn-cgroup-\(Hex.random(4))"
        let other = try berth(["run", "-d", "-q", "--read-only", "-M", name, "-D", tree, "/bin/sleep", "60"], store: Self.shared)
        #expect(other.status == 0, "\(other)")
        defer { _ = try? berth(["terminate", name], store: Self.shared) }
        let root = image == "busybox" ? tree : Self.debian
        // Mount point, its options, type and the file system's options; a user namespace's
        // tmpfs also names its owner.
        let mounts = """
            grep ' /sys/fs/cgroup' /proc/self/mountinfo | sed 's/,uid=[0-9]*,gid=[0-9]*//' \\
              | awk '{ i = 7; while ($i != "-") i++; print $5, $6, $(i + 1), $(i + 2), $(i + 3) }' | sort
            """
        let ours = try inBerth(["--read-only"] + options, mounts + "; echo; find /sys/fs/cgroup -mindepth 2 -type d | grep -c .; true", in: root)
        let theirs = try inNspawn(["--read-only"], mounts, in: root)
        #expect(ours.status == 0 && !theirs.stdout.isEmpty, "berth:\n\(ours)\nnspawn:\n\(theirs)")
        #expect(ours.stdout == theirs.stdout + "\n0\n", "berth:\n\(ours.stdout)\nnspawn:\n\(theirs.stdout)")
    }
}
