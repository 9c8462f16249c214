import BerthSystem
import BerthTestSupport
import Foundation
import Testing

/// Settings files (`NAME.nspawn`) beside nspawn's: each case writes one file next to a fresh
/// busybox tree of each tool's (`DIR/../NAME.nspawn`, untrusted unless `--settings=trusted`),
/// runs the same line under both, and compares what the container shows and the status.
extension NspawnOptionTests {
    static let settingsProbe = """
        echo "env $FOO|$BAZ"; hostname; cat /proc/self/oom_score_adj; ls /mnt 2>&1 | head -n 2; ls /sys/class/net | grep -c .; grep CapBnd /proc/self/status
        """

    static let settingsFile = """
        # what an admin keeps beside the tree
        [Exec]
        Environment=FOO=file "BAZ=two words"
        Hostname=from-file
        OOMScoreAdjust=300
        Capability=CAP_NET_ADMIN
        DropCapability=CAP_MKNOD
        Bogus=1
        [Files]
        Bind=HOSTDIR:/mnt
        [Network]
        Private=yes
        [Unknown]
        x=y
        """

    /// Runs `options` with `file` as the tree's settings under both tools: (berth, nspawn).
    func withSettings(_ file: String, _ options: [String], _ script: String = settingsProbe,
                      command: Bool = true) throws -> (CommandResult, CommandResult) {
        let scratch = try TemporaryDirectory("settings")
        let host = scratch.appending("hostdir").string
        try FileManager.default.createDirectory(atPath: host, withIntermediateDirectories: false)
        try Data("f\n".utf8).write(to: URL(fileURLWithPath: "\(host)/from-host"))
        var results: [CommandResult] = []
        for tool in ["berth", "nspawn"] {
            let place = scratch.appending(tool).string
            try FileManager.default.createDirectory(atPath: place, withIntermediateDirectories: false)
            let root = try freshTree("\(tool)/my_box", in: scratch)
            // nspawn's name for my_box is mybox: its settings file is mybox.nspawn.
            try Data(file.replacingOccurrences(of: "HOSTDIR", with: host).utf8).write(to: URL(fileURLWithPath: "\(place)/mybox.nspawn"))
            let line = command ? ["/bin/sh", "-c", script] : []
            if tool == "berth" {
                results.append(try berth(["run", "-q"] + options + ["-D", root] + line, store: Self.shared))
            } else {
                var result = try run("/usr/bin/systemd-nspawn", ["--register=no", "--keep-unit", "-q"] + options + ["-D", root] + line)
                result.stdout = result.stdout.replacingOccurrences(of: "\r\n", with: "\n")
                results.append(result)
            }
        }
        return (results[0], results[1])
    }

    /// An untrusted file sets what it may (the environment, the hostname, a dropped capability)
    /// and not what it may not (a limit, a capability added, a bind, a network), with a warning
    /// for each; trusted, it sets everything; a group the command line sets keeps the command
    /// line's values, unless --settings=override; --settings=no reads nothing.
    @Test(arguments: [[], ["--settings=trusted"], ["-E", "FOO=line"], ["--settings=override", "-E", "FOO=line"],
                      ["--settings=no"], ["--settings=trusted", "--bind=/etc:/mnt"], ["--settings=yes"]])
    func aSettingsFileGivesWhatNspawnGives(_ options: [String]) throws {
        let (ours, theirs) = try withSettings(Self.settingsFile, options)
        #expect(ours.status == 0 && theirs.status == 0, "berth: \(ours)\nnspawn: \(theirs)")
        #expect(ours.stdout == theirs.stdout, "berth:\n\(ours.stdout)\nnspawn:\n\(theirs.stdout)")
        #expect(ours.stdout.hasPrefix(options == ["--settings=no"] ? "env |\nmybox\n" : "env "), "\(ours.stdout)")
        let untrusted = !options.contains("--settings=trusted") && options != ["--settings=no"]
        #expect(ours.stderr.contains("OOMScoreAdjust= ignored") == untrusted, "\(ours.stderr)")
        #expect(ours.stderr.contains("Bind= ignored") == (untrusted && !options.contains("--bind=/etc:/mnt")), "\(ours.stderr)")
    }

    /// Parameters= is the command beside Boot= or ProcessTwo= (only then, as nspawn reads it: a
    /// file without either starts the login shell, which waits for a terminal, so that is not run here).
    @Test(arguments: ["ProcessTwo=no\n", "ProcessTwo=yes\n"])
    func parametersNeedAStartMode(_ start: String) throws {
        let file = "[Exec]\n\(start)Parameters=/bin/sh -c \"echo pid $$\"\nEnvironment=A=1\n"
        let (ours, theirs) = try withSettings(file, [], command: false)
        #expect(ours.stdout == theirs.stdout, "berth:\n\(ours)\nnspawn:\n\(theirs)")
        #expect(ours.stdout == (start.hasSuffix("yes\n") ? "pid 2\n" : "pid 1\n"), "\(ours)")
    }

    /// A file in /etc/systemd/nspawn is trusted, and wins over one beside the tree.
    @Test func aFileInEtcIsTrustedAndWins() throws {
        let name = "settings-\(Hex.random(6))"
        let etc = "/etc/systemd/nspawn/\(name).nspawn"
        let madeDirectory = !FileManager.default.fileExists(atPath: "/etc/systemd/nspawn")
        try FileManager.default.createDirectory(atPath: "/etc/systemd/nspawn", withIntermediateDirectories: true)
        defer {
            try? FileManager.default.removeItem(atPath: etc)
            if madeDirectory { try? FileManager.default.removeItem(atPath: "/etc/systemd/nspawn") }
        }
        try Data("[Exec]\nOOMScoreAdjust=123\nHostname=from-etc\n".utf8).write(to: URL(fileURLWithPath: etc))
        let scratch = try TemporaryDirectory("settings-etc")
        let root = try freshTree(name, in: scratch)
        try Data("[Exec]\nHostname=beside\n".utf8).write(to: URL(fileURLWithPath: scratch.appending("\(name).nspawn").string))
        let probe = "hostname; cat /proc/self/oom_score_adj"
        let ours = try inBerth([], probe, in: root), theirs = try inNspawn([], probe, in: root)
        #expect(ours.status == 0 && ours.stdout == "from-etc\n123\n" && ours.stdout == theirs.stdout, "berth: \(ours)\nnspawn: \(theirs)")
    }

    /// An image of the store has its file in the store, as nspawn's /var/lib/machines/NAME.nspawn.
    @Test func anImageHasItsFileInTheStore() throws {
        let store = Self.shared.appending("store").string
        try Data("[Exec]\nHostname=stored\n".utf8).write(to: URL(fileURLWithPath: "\(store)/bb.nspawn"))
        defer { try? FileManager.default.removeItem(atPath: "\(store)/bb.nspawn") }
        let result = try berth(["run", "-q", "-M", "bb", "/bin/hostname"], store: Self.shared)
        #expect(result.status == 0 && result.stdout == "stored\n", "\(result)")
    }

    /// A file nspawn cannot read (a broken section header) stops the run, in one line that names
    /// it; so does a --settings= value neither takes.
    @Test(arguments: ["[Exec\nHostname=x\n", "BAD"])
    func anUnreadableFileIsAnError(_ file: String) throws {
        let (ours, theirs) = try withSettings(file == "BAD" ? "[Exec]\n" : file, file == "BAD" ? ["--settings=sometimes"] : [], "echo ran")
        #expect(theirs.status != 0 && !theirs.stdout.contains("ran"), "nspawn ran it: \(theirs)")
        #expect(ours.status == 64 && !ours.stdout.contains("ran") && ours.stderr.hasPrefix("berth: error: ")
                && ours.stderr.split(separator: "\n").count == 1, "\(ours)")
    }
}

extension NspawnOptionTests {
    /// What nspawn passes over in a file berth passes over too, with a warning, and runs: a
    /// hostname that is none, a bare name in Environment= (which would copy berth's own
    /// environment in), a key continued onto the end of the file; lines may end in CR LF.
    @Test func aBadValueInAFileIsAWarningNotTheRunsEnd() throws {
        let file = "[Exec]\r\nHostname=bad_name\r\nEnvironment=A=1 PATH\r\nEnvironment=B=2\r\nUser=\\\r\n"
        let (ours, theirs) = try withSettings(file, [], "echo \"A=$A B=$B\"; hostname")
        #expect(ours.status == 0 && ours.stdout == "A=1 B=2\nmybox\n", "\(ours)")
        #expect(theirs.stdout.hasPrefix("A=1 B=2\nmybox\n") || theirs.status != 0, "nspawn: \(theirs)")
        #expect(ours.stderr.contains("Hostname=bad_name ignored") && ours.stderr.contains("'PATH' in Environment= ignored"), "\(ours.stderr)")
    }

    /// Without --uuid, the machine's id is the image's own /etc/machine-id, as nspawn reads it.
    @Test func theMachinesIDIsTheImagesOwn() throws {
        let scratch = try TemporaryDirectory("machine-id")
        let root = try freshTree("tree", in: scratch)
        try Data("0123456789abcdef0123456789ABCDEF\n".utf8).write(to: URL(fileURLWithPath: "\(root)/etc/machine-id"))
        let ours = try inBerth([], "echo $container_uuid", in: root), theirs = try inNspawn([], "echo $container_uuid", in: root)
        #expect(ours.stdout == "01234567-89ab-cdef-0123-456789abcdef\n" && ours.stdout == theirs.stdout, "berth: \(ours)\nnspawn: \(theirs)")
    }
}
