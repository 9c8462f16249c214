import BerthSystem
import BerthTestSupport
import Glibc
import SystemPackage
import Testing

/// The run line read by hand in Sources/berth/RunCommandLine.swift, by nspawn's getopt rules
/// (`+` mode): clusters such as `-bD DIR`, values attached (`-Mbb`, `--bind=SRC`) or not, a
/// value taken even when it starts with '-', `--` and the first non-option ending the options,
/// `--store` anywhere before the command. The executable target cannot be imported by a unit
/// test (its fully static link settings would apply to the test bundle, which must link Swift
/// Testing's shared libraries), so the built binary is driven, and what each line meant is read
/// from what the container prints. TREE, STORE and HOST stand for the paths of this suite.
@Suite(.serialized) struct RunLineTests {
    static let shared: TemporaryDirectory = {
        let tmp = try! TemporaryDirectory.forProcess("run-line")
        let result = try! run(berthBinary, ["--store", tmp.appending("store").string, "import", "-q", Fixtures.busybox, "bb"])
        precondition(result.status == 0, "\(result)")
        precondition(mkdir(tmp.appending("host").string, 0o755) == 0)
        try! writeFile(tmp.appending("host/marker"), "from the host\n")
        return tmp
    }()

    static func expand(_ arguments: [String]) -> [String] {
        arguments.map {
            $0.replacingAll("TREE", with: shared.appending("store/bb").string)
                .replacingAll("STORE", with: shared.appending("store").string)
                .replacingAll("HOST", with: shared.appending("host").string)
        }
    }

    static let printArguments = ["/bin/sh", "-c", "printf '%s|' \"$@\"", "sh"]

    /// Lines that run, and what their container prints.
    @Test(arguments: [
        (["-qD", "TREE", "/bin/echo", "a"], "a\n"),
        (["-q", "-DTREE", "/bin/echo", "a"], "a\n"),
        (["--directory=TREE", "-q", "/bin/echo", "a"], "a\n"),
        (["--directory", "TREE", "--quiet", "/bin/echo", "a"], "a\n"),
        (["run", "-qD", "TREE", "/bin/echo", "a"], "a\n"),
        (["--store", "STORE", "-qMbb", "/bin/cat", "/etc/hostname"], "busybox\n"),
        (["--store=STORE", "-q", "-M", "bb", "/bin/cat", "/etc/hostname"], "busybox\n"),
        (["-qMbb", "--store", "STORE", "/bin/cat", "/etc/hostname"], "busybox\n"),     // --store after the options
        (["run", "-q", "--store=STORE", "--machine=bb", "/bin/cat", "/etc/hostname"], "busybox\n"),
        (["--store", "STORE", "run", "-qMbb", "/bin/cat", "/etc/hostname"], "busybox\n"),
        // The first argument that is no option starts the command, whose options they then are.
        (["-qD", "TREE"] + printArguments + ["-q", "--store", "STORE", "-D", "/x", "--"], "-q|--store|STORE|-D|/x|--|"),
        (["-qD", "TREE", "--"] + printArguments + ["--bogus", "-Z"], "--bogus|-Z|"),
        // Values of options in each form.
        (["-qD", "TREE", "-EA=1", "-E", "B=2", "--setenv=C=3", "--setenv", "D=4", "/bin/sh", "-c", "echo $A$B$C$D"], "1234\n"),
        (["-qE", "A=x y", "-D", "TREE", "/bin/sh", "-c", "echo \"$A\""], "x y\n"),
        (["-qD", "TREE", "--hostname=h1", "/bin/hostname"], "h1\n"),
        (["-qD", "TREE", "--hostname", "h2", "/bin/hostname"], "h2\n"),
        (["-qD", "TREE", "--chdir=/etc", "/bin/pwd"], "/etc\n"),
        (["-qD", "TREE", "--bind=HOST", "/bin/cat", "HOST/marker"], "from the host\n"),
        (["-qD", "TREE", "--bind", "HOST:/mnt", "/bin/cat", "/mnt/marker"], "from the host\n"),
        (["-qD", "TREE", "--bind-ro=HOST:/mnt", "/bin/sh", "-c", "cat /mnt/marker; touch /mnt/new 2>/dev/null || echo refused"],
         "from the host\nrefused\n"),
        (["-qD", "TREE", "--read-only", "/bin/sh", "-c", "touch /new 2>/dev/null || echo read-only"], "read-only\n"),
        (["-qxD", "TREE", "/bin/sh", "-c", "touch /new && echo ephemeral"], "ephemeral\n"),
        (["-qD", "TREE", "--private-users=no", "/bin/cat", "/proc/self/uid_map"], "         0          0 4294967295\n"),
        (["-qUD", "TREE", "/bin/sh", "-c", "test \"$(cat /proc/self/uid_map)\" != \"         0          0 4294967295\" && echo mapped"], "mapped\n"),
        (["-qPD", "TREE", "/bin/echo", "piped"], "piped\n"),
    ] as [([String], String)])
    func linesThatRun(_ arguments: [String], _ expected: String) throws {
        let result = try run(berthBinary, Self.expand(arguments))
        #expect(result.status == 0 && result.stderr.isEmpty, "\(arguments): \(result)")
        #expect(result.stdout == Self.expand([expected])[0], "\(arguments): \(result)")
    }

    /// Lines that are usage errors: one line, status 64, nothing run.
    @Test(arguments: [
        (["-D"], "-D needs a value"),
        (["-qD"], "-D needs a value"),
        (["--directory"], "--directory needs a value"),
        (["-q", "--", "-D"], "give the tree to run"),  // after --, -D is the command
        (["-qY", "-D", "TREE"], "unknown option '-Y'"),
        (["-Y"], "unknown option '-Y'"),
        (["-q=1", "-D", "TREE"], "unknown option '-='"),
        (["--bogus=1", "-D", "TREE"], "unknown option '--bogus'"),
        (["--read-only=yes", "-D", "TREE"], "--read-only takes no value"),
        (["--quiet=", "-D", "TREE"], "--quiet takes no value"),
        (["-bD", "TREE", "--as-pid2"], "exclude each other"),
        (["-qbD", "TREE", "--as-pid2"], "exclude each other"),
        (["--boot", "--as-pid2", "-D", "TREE"], "exclude each other"),
        // Beside -D, -M names the machine (nspawn's --machine), which must be a valid name.
        (["-D", "TREE", "-M", "bb_1"], "not a valid machine name"),
        (["-DTREE", "-M-bb"], "not a valid machine name"),
        (["-qD", "TREE", "--console=sideways"], "--console takes interactive, read-only, passive or pipe, not 'sideways'"),
        (["-qD", "TREE", "--private-users-ownership=chown"], "--private-users-ownership=chown is not supported"),
        (["-qD", "TREE", "--private-users", "sideways"], "--private-users takes no, pick, identity or BASE[:COUNT], not 'sideways'"),
        (["boot", "-D", "TREE"], "boot takes the image's name, not -D or -M"),
        (["boot", "-q"], "boot needs the name of an image"),
        (["--store", "STORE", "frobnicate"], "unknown command 'frobnicate'"),
    ] as [([String], String)])
    func linesThatAreUsageErrors(_ arguments: [String], _ expected: String) throws {
        let result = try run(berthBinary, Self.expand(arguments))
        expectCleanFailure(result, expected)
        #expect(result.status == 64, "\(arguments): \(result)")
        #expect(result.stdout.isEmpty, "\(arguments): \(result)")
    }

    /// A value is the next argument whatever it looks like, as getopt takes it: `-D -q` runs the
    /// tree "-q", which is no tree (and not a usage error: the line is well formed).
    @Test func aValueIsTakenEvenWhenItLooksLikeAnOption() throws {
        let result = try run(berthBinary, ["-D", "-q", "/bin/true"])
        expectCleanFailure(result, "cannot use -q as the container's root")
        #expect(result.status != 64, "\(result)")
    }

    /// (`berth -h` alone is berth's own help, from swift-argument-parser.)
    @Test func helpIsReadInAnyPlaceOfTheOptions() throws {
        for arguments in [["-qh"], ["-qhD", "/x"], ["run", "--help"], ["-D", "/nonexistent", "--help"], ["help", "run"]] {
            let result = try run(berthBinary, arguments)
            #expect(result.status == 0 && result.stdout.hasPrefix("USAGE: berth [run] [OPTIONS]"), "\(arguments): \(result)")
        }
    }
}

private extension String {
    func replacingAll(_ target: String, with replacement: String) -> String {
        split(separator: target, omittingEmptySubsequences: false).joined(separator: replacement)
    }
}
