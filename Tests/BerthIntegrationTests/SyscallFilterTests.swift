import BerthSystem
import BerthTestSupport
import Foundation
import SystemPackage
import Testing

/// The system call filter every container gets, met from inside by a probe (Probes/syscalls.c)
/// that makes each call for real, on the Debian and busybox images, side by side with
/// systemd-nspawn and with the host, where no filter stands between the probe and the kernel.
@Suite(.serialized) struct SyscallFilterTests {
    /// A store with the Debian image as "deb" and busybox as "bb", and the probe built static.
    static let shared: TemporaryDirectory = {
        let tmp = try! TemporaryDirectory.forProcess("syscall-filter")
        for (fixture, name) in [(Fixtures.debianZstd, "deb"), (Fixtures.busybox, "bb")] {
            let imported = try! berth(["import", "-q", fixture, name], store: tmp)
            precondition(imported.status == 0, "\(imported)")
        }
        let source = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Probes/syscalls.c").path
        let built = try! run("/usr/bin/gcc", ["-static", "-O1", "-o", tmp.appending("probe").string, source])
        precondition(built.status == 0, "\(built)")
        return tmp
    }()

    var probe: String { Self.shared.appending("probe").string }

    /// What a root process in any container meets: each refused call fails with nspawn's errno,
    /// each allowed one reaches the kernel, which answers as it would anyway.
    static let expected: KeyValuePairs<String, String> = [
        "name_to_handle_at": "ok", "open_by_handle_at": "EPERM", "open_by_handle_at-forged": "EPERM",
        "add_key": "EPERM", "keyctl": "EPERM", "bpf": "EPERM", "perf_event_open": "EPERM", "swapon": "EPERM",
        "kexec_load": "EPERM", "init_module": "EPERM", "finit_module": "EPERM", "clock_settime": "EPERM",
        "keyctl-x32": "EPERM", "keyctl-i386": "EPERM", "getpid-i386": "ok",
        "socket-netlink-audit": "EAFNOSUPPORT", "socket-netlink-route": "ok",
        "mlock": "EPERM", "syslog": "EPERM", "reboot": "EINVAL", "ptrace": "ESRCH",
        // Unknown to systemd 252: the filter's default.
        "cachestat": "ENOSYS",
    ]

    /// The calls the filter lets through; for the others the host's kernel answers otherwise.
    static let allowed: Set<String> = ["name_to_handle_at", "getpid-i386", "socket-netlink-route", "reboot", "ptrace"]

    /// The probe's lines as label -> result, each label once.
    static func results(_ output: String) -> [String: String] {
        var results: [String: String] = [:]
        for line in output.replacingOccurrences(of: "\r", with: "").split(separator: "\n") {
            let fields = line.split(separator: " ")
            if fields.count == 2 { results[String(fields[0])] = String(fields[1]) }
        }
        return results
    }

    func inBerth(_ image: String, _ options: [String] = []) throws -> CommandResult {
        try berth(["run", "-q", "-M", image, "--bind-ro", "\(probe):/probe"] + options + ["/probe"], store: Self.shared)
    }

    func inNspawn(_ image: String, _ options: [String] = []) throws -> CommandResult {
        try run("/usr/bin/systemd-nspawn", ["--register=no", "--keep-unit", "-q", "-D", Self.shared.appending("store/\(image)").string,
                                            "--bind-ro=\(probe):/probe"] + options + ["/probe"])
    }

    /// Under the user namespace and without one: the filter is no less where root is the host's.
    @Test(arguments: [[String](), ["--private-users=no"]])
    func refusedCallsFailWithNspawnsErrnoInTheDebianImage(_ options: [String]) throws {
        let host = Self.results(try run(probe, []).stdout)
        let ours = try inBerth("deb", options), theirs = try inNspawn("deb")
        #expect(ours.status == 0 && theirs.status == 0, "\(ours)\n\(theirs)")
        let mine = Self.results(ours.stdout)
        for (label, errno) in Self.expected {
            #expect(mine[label] == errno, "\(label): berth gives \(mine[label] ?? "nothing"), nspawn's filter \(errno)")
            // The probe really makes the call: with no filter the kernel answers something else
            // (the shocker's forged handle opens the host's root directory, bpf lists programs).
            if Self.allowed.contains(label) {
                #expect(host[label] == errno, "\(label): on the host \(host[label] ?? "nothing")")
            } else {
                #expect(host[label] != nil && host[label] != errno, "\(label): on the host \(host[label] ?? "nothing") too")
            }
        }
        #expect(mine == Self.results(theirs.stdout), "berth:\n\(ours.stdout)\nnspawn:\n\(theirs.stdout)")
        #expect(mounts(under: Self.shared.string).isEmpty)
    }

    @Test func theBusyboxImageGetsTheSameFilter() throws {
        let ours = try inBerth("bb"), theirs = try inNspawn("bb")
        #expect(ours.status == 0 && theirs.status == 0, "\(ours)\n\(theirs)")
        let mine = Self.results(ours.stdout)
        #expect(mine == Dictionary(uniqueKeysWithValues: Self.expected.map { ($0.key, $0.value) }), "\(ours.stdout)")
        #expect(mine == Self.results(theirs.stdout), "berth:\n\(ours.stdout)\nnspawn:\n\(theirs.stdout)")
    }

    /// `berth shell` gives its command the machine's filter: the probe meets what it meets in a
    /// run. The program is made once and kept beside the machine's record; one kept for another
    /// leader (a killed supervisor's, here a planted one that allows every call) is not used.
    @Test func shellGetsTheMachinesFilterAndNoProgramKeptForAnother() throws {
        let name = "filter-\(Hex.random(6))"
        #expect(try berth(["clone", "bb", name], store: Self.shared).status == 0)
        defer { _ = try? berth(["remove", name], store: Self.shared) }
        // What a run meets on this image (a clone: its handles are an overlay's), before the machine holds it.
        let expected = Self.results(try inBerth(name).stdout)
        #expect(expected.count == Self.expected.count && expected["keyctl"] == "EPERM", "\(expected)")
        let started = try berth(["run", "-d", "-q", "-M", name, "--bind-ro", "\(probe):/probe", "/bin/sleep", "100000"], store: Self.shared)
        #expect(started.status == 0, "\(started)")
        defer { _ = try? berth(["terminate", name], store: Self.shared) }
        let kept = FilePath("/run/berth/machines/\(name).filter")
        // BPF_RET|BPF_K of SECCOMP_RET_ALLOW, under a header naming some other machine's leader.
        var planted = Array("berth-filter leader=1 start=1 capabilities=0\n".utf8)
        planted += [0x06, 0, 0, 0, 0x00, 0x00, 0xff, 0x7f]
        try writeFile(kept, planted, mode: 0o600)
        for attempt in ["made", "kept"] {
            let shell = try berth(["shell", name, "/probe"], store: Self.shared)
            #expect(shell.status == 0 && Self.results(shell.stdout) == expected, "\(attempt): \(shell)")
            let header = String(decoding: try readFile(kept).prefix { $0 != UInt8(ascii: "\n") }, as: UTF8.self)
            #expect(header.hasPrefix("berth-filter leader=") && !header.hasPrefix("berth-filter leader=1 "), "\(attempt): \(header)")
        }
        #expect(try berth(["terminate", name], store: Self.shared).status == 0)
        #expect((try? FileStatus.of(kept)) == nil, "the kept program goes with the machine")
    }

    /// The filter is loaded before the change of user (a user without CAP_SYS_ADMIN could load
    /// it only with NO_NEW_PRIVS, which would break setuid programs), and binds the user too.
    @Test func aContainerUserIsFilteredAsUnderNspawn() throws {
        let ours = try inBerth("deb", ["-u", "nobody"]), theirs = try inNspawn("deb", ["-u", "nobody"])
        #expect(ours.status == 0 && theirs.status == 0, "\(ours)\n\(theirs)")
        let mine = Self.results(ours.stdout)
        // Calls an unprivileged user may make where nothing filters them.
        for (label, errno) in ["keyctl": "EPERM", "keyctl-i386": "EPERM",
                               "socket-netlink-audit": "EAFNOSUPPORT", "cachestat": "ENOSYS", "socket-netlink-route": "ok"] {
            #expect(mine[label] == errno, "\(label): \(mine[label] ?? "nothing")")
        }
        #expect(mine.count == Self.expected.count && mine == Self.results(theirs.stdout),
                "berth:\n\(ours.stdout)\nnspawn:\n\(theirs.stdout)")
        let seccomp = try berth(["run", "-q", "-M", "deb", "-u", "nobody", "/bin/sh", "-c", "id -un; grep '^Seccomp:' /proc/self/status"], store: Self.shared)
        #expect(seccomp.stdout == "nobody\nSeccomp:\t2\n", "\(seccomp)")
    }
}
