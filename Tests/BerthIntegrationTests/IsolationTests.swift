import BerthSystem
import BerthTestSupport
import Foundation
import Glibc
import SystemPackage
import Testing

/// Issue 11's host escapes (2, 3, 4, the masks of 5, 6 and 7), each performed as root inside a
/// container (or an unprivileged host user) does it, with its effect looked for on the host:
/// the host's state is read before and after, and a test fails only because the attack worked
/// or because berth did not run it at all. Seccomp's findings are tested elsewhere.
///
/// Nothing here may hurt the host: core_pattern is only ever set to a plain file name and put
/// back at once; power/state only gets a value the kernel rejects (EINVAL tells that the write
/// reached it); /proc/1/exe is opened for writing and closed, never written.
@Suite(.serialized) struct IsolationTests {
    /// A run that did not get as far as the attack proves nothing: it must have started.
    func expectRan(_ result: CommandResult, _ sign: String = "attack-ran", sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(result.stdout.contains(sign), "berth did not run the attack: \(result)", sourceLocation: sourceLocation)
    }

    // MARK: 2. Host sysctls (needs a user namespace: the default only)

    struct Attack: Sendable, CustomTestStringConvertible {
        var name: String
        /// The script; VALUE stands for what it writes.
        var script: String
        var testDescription: String { name }
    }

    static let sysctlAttacks = [
        Attack(name: "write /proc/sys as mounted", script: "/probe/trywrite /proc/sys/kernel/core_pattern VALUE"),
        Attack(name: "remount /proc/sys rw", script: """
            mount -o remount,bind,rw /proc/sys; echo remount=$?
            /probe/trywrite /proc/sys/kernel/core_pattern VALUE
            """),
        Attack(name: "fresh proc", script: """
            mkdir -p /mnt/proc && mount -t proc proc /mnt/proc; echo mount=$?
            /probe/trywrite /mnt/proc/sys/kernel/core_pattern VALUE
            """),
        Attack(name: "umount -l /proc/sys", script: """
            umount -l /proc/sys; echo umount=$?
            /probe/trywrite /proc/sys/kernel/core_pattern VALUE
            """),
    ]

    @Test(arguments: ImageKind.allCases, sysctlAttacks)
    func rootInsideCannotChangeTheHostsCorePattern(_ kind: ImageKind, _ attack: Attack) throws {
        let lab = try IsolationLab("sysctl")
        // The lab's directory goes when the lab does, which could be right after its last use.
        defer { withExtendedLifetime(lab) {} }
        let saved = try hostCorePattern()
        defer { restoreCorePattern(saved) }
        // A plain file name: were a process to dump core meanwhile, it would only write a file.
        let value = "berth-isolation-core-\(randomTag())"
        let result = try lab.inside(kind, [], "echo attack-ran\n" + attack.script.replacingOccurrences(of: "VALUE", with: value))
        expectRan(result)
        let after = try hostCorePattern()
        restoreCorePattern(saved)
        #expect(after == saved, "root inside set the host's kernel.core_pattern to \(after.trimmed): \(result)")
        #expect(!result.stdout.contains("write=ok"), "\(result)")
    }

    @Test(arguments: ImageKind.allCases)
    func aFreshSysfsDoesNotLetRootInsideSuspendTheHost(_ kind: ImageKind) throws {
        try #require(try FileStatus.of("/sys/power/state") != nil, "this host has no /sys/power/state to protect")
        let lab = try IsolationLab("sysfs")
        defer { withExtendedLifetime(lab) {} }
        // Not a sleep state: the handler reads it and does nothing but answer EINVAL (ENOSYS on a
        // kernel without suspend). Either answer means the write got through.
        let result = try lab.inside(kind, [], """
            echo attack-ran
            mkdir -p /mnt/sys && mount -t sysfs sysfs /mnt/sys; echo mount=$?
            /probe/trywrite /mnt/sys/power/state berth-not-a-sleep-state
            """)
        expectRan(result)
        let line = result.stdout.split(separator: "\n").first { $0.hasPrefix("/mnt/sys/power/state ") }.map(String.init) ?? ""
        #expect(!line.isEmpty, "the probe did not report: \(result)")
        let refused = !line.contains("open=ok") || ["write=EPERM", "write=EACCES", "write=EROFS"].contains { line.contains($0) }
        #expect(refused, "a write from inside reached the host's power/state (only EPERM, EACCES or EROFS come before its handler): \(result)")
    }

    /// The host's cgroup v1 `release_agent` files, by path: what the kernel runs as the host's
    /// root when a cgroup of the hierarchy with notify_on_release empties.
    static func hostReleaseAgents() -> [String: String] {
        var agents: [String: String] = [:]
        for entry in (try? Mount.entries()) ?? [] where entry.type == "cgroup" && entry.root == "/" {
            let path = entry.point.appending("release_agent").string
            if let value = try? readFile(FilePath(path)) { agents[path] = String(decoding: value, as: UTF8.self) }
        }
        return agents
    }

    /// CVE-2022-0492 and its kin: root inside mounts each cgroup v1 hierarchy it is in (a user
    /// namespace's root may) and sets the hierarchy's release_agent, written to the file or
    /// given as a mount option, to a program of its choosing, which the host's kernel would run
    /// as the host's root. Each hierarchy shows root inside only the machine's own cgroup, and
    /// release_agent is only in a hierarchy's root: it never finds one, and the host's stay.
    @Test(.enabled(if: !hostReleaseAgents().isEmpty, "this host has no cgroup v1 hierarchy"), arguments: isolationRunModes, ImageKind.allCases)
    func rootInsideCannotSetTheHostsReleaseAgent(_ options: [String], _ kind: ImageKind) throws {
        let lab = try IsolationLab("release-agent")
        defer { withExtendedLifetime(lab) {} }
        let saved = Self.hostReleaseAgents()
        defer {
            for (path, value) in saved where Self.hostReleaseAgents()[path] != value { try? writeFile(FilePath(path), Array(value.utf8)) }
        }
        let agent = "/berth-isolation-agent-\(randomTag())"
        let result = try lab.inside(kind, options, """
            echo attack-ran
            n=0
            for h in $(sed -n 's/^[0-9]*:\\([^:][^:]*\\):.*/\\1/p' /proc/self/cgroup); do
              n=$((n+1)); m=/tmp/cgroup$n; mkdir -p $m
              case $h in name=*) o=none,$h;; *) o=$h;; esac
              mount -t cgroup -o $o cgroup $m; echo "mount $h=$?"
              find $m -name release_agent | sed 's/^/found /'
              echo 1 > $m/notify_on_release
              /probe/trywrite $m/release_agent \(agent)
              umount $m
              mount -t cgroup -o $o,release_agent=\(agent) cgroup $m && umount $m
            done
            find /sys/fs/cgroup -name release_agent | sed 's/^/found /'
            for f in /sys/fs/cgroup/*/release_agent; do [ -e $f ] && /probe/trywrite $f \(agent); done
            true
            """)
        expectRan(result)
        let after = Self.hostReleaseAgents()
        #expect(after == saved, "root inside changed the host's release_agent: \(after.filter { saved[$0.key] != $0.value }): \(result)")
        // The attack got as far as it can: it mounted the hierarchies, and found no agent to set.
        #expect(result.stdout.contains("mount name=systemd=0") || !saved.keys.contains { $0.hasSuffix("/systemd/release_agent") }, "\(result)")
        #expect(!result.stdout.contains("found ") && !result.stdout.contains("write=ok"), "\(result)")
    }

    // MARK: 3. Device policy

    enum DevicePolicy: String, CaseIterable, Sendable {
        case bpf, legacy
        var environment: [String: String] { self == .legacy ? ["BERTH_LEGACY_DEVICES": "1"] : [:] }
    }

    /// An image kind with the way the device policy is enforced.
    struct DeviceCase: Sendable, CustomTestStringConvertible {
        var kind: ImageKind, policy: DevicePolicy
        var testDescription: String { "\(kind) with \(policy)" }
        static let all = ImageKind.allCases.flatMap { kind in DevicePolicy.allCases.map { DeviceCase(kind: kind, policy: $0) } }
    }

    @Test(arguments: isolationRunModes, DeviceCase.all)
    func noWayOutOfTheDevicePolicyReachesAHostDisk(_ options: [String], _ target: DeviceCase) throws {
        let (kind, policy) = (target.kind, target.policy)
        let scratch = try TemporaryDirectory("loop")
        let disk = try LoopDevice(in: scratch)
        defer { disk.detach(); withExtendedLifetime(scratch) {} }
        // A node of the host disk planted in each image's tree on the host, readable by all.
        let lab = try IsolationLab("devices") { (tree: FilePath) throws in
            #expect(try shell("mknod -m 0666 '\(tree.string)/planted-disk' b \(disk.major) \(disk.minor)").status == 0)
        }
        defer { withExtendedLifetime(lab) {} }
        let result = try lab.inside(kind, options, """
            peek() { printf '%s: ' "$1"; dd if="$2" bs=64 count=1 2>/dev/null | tr -cd 'A-Za-z0-9-'; echo; }
            echo attack-ran
            peek planted /planted-disk
            mknod /made-disk b \(disk.major) \(disk.minor); echo mknod=$?
            peek made /made-disk
            # Out of the container's cgroup, to the root of the unified hierarchy and of v1 devices.
            mkdir -p /mnt/cg2 /mnt/cgdev
            mount -t cgroup2 none /mnt/cg2 && echo $$ > /mnt/cg2/cgroup.procs && echo moved-v2
            mount -t cgroup -o devices none /mnt/cgdev && echo $$ > /mnt/cgdev/cgroup.procs && echo moved-v1
            cat /proc/self/cgroup
            peek planted-after-the-move /planted-disk
            rm -f /made-disk; mknod /made-disk b \(disk.major) \(disk.minor); echo mknod-after-the-move=$?
            peek made-after-the-move /made-disk
            exit 0
            """, environment: policy.environment)
        expectRan(result)
        #expect(result.status == 0, "\(result)")
        #expect(!result.stdout.contains(disk.marker), "root inside read the host's disk \(disk.path): \(result)")
    }

    // MARK: 4. TIOCSTI into the caller's shell

    enum Streams: String, CaseIterable, Sendable {
        case stdoutToAFile, stdoutAndStderrToFiles, stdoutToAFileAsNobody
        /// No standard stream is the terminal, but it is still the caller's controlling terminal,
        /// which /dev/tty inside would open were the container left in the caller's session.
        case noStreamATerminal
        var redirection: String {
            switch self {
            case .stdoutAndStderrToFiles: "> out.txt 2> err.txt"
            case .noStreamATerminal: "< /dev/null > out.txt 2> err.txt"
            default: "> out.txt"
            }
        }
        var options: [String] { self == .stdoutToAFileAsNobody ? ["-u", "nobody"] : [] }
    }

    @Test(arguments: isolationRunModes, Streams.allCases)
    func keystrokesPushedInsideNeverReachTheCallersShell(_ options: [String], _ streams: Streams) throws {
        let lab = try IsolationLab("tiocsti")
        defer { withExtendedLifetime(lab) {} }
        chmod(lab.tmp.string, 0o755)
        // The command to inject comes from a file, so the line typed on the host never names the
        // marker: the marker shows on the screen only if the injected keys reached it.
        let marker = lab.tmp.appending("MARKER-\(randomTag())")
        let payload = lab.tmp.appending("payload")
        try writeFile(payload, "touch \(marker.string)\n", mode: 0o644)
        let terminal = try HostTerminal(in: lab.tmp)
        defer { terminal.close() }
        let line = lab.runLine(.directory, options + streams.options + ["--bind-ro", "\(payload.string):/payload"],
                               ["/probe/tiocsti", "/payload"])
            .map { "'\($0)'" }.joined(separator: " ")
        try terminal.type("cd '\(lab.tmp.string)' && '\(berthBinary)' \(line) \(streams.redirection); echo berth-exit=$? > done.txt")
        let finished = waitUntil { (try? FileStatus.of(lab.tmp.appending("done.txt"))) != nil }
        // The host shell reads its terminal in order: once it has run a line typed now, it has
        // read and run whatever was pushed into the terminal before. (Only the line's output
        // holds the product; the typed line shows the sum.)
        let idle = "host-shell-idle-\(randomTag())"
        try terminal.type("echo \(idle)-$((6*7))")
        let settled = waitUntil { (try? terminal.screen())?.contains("\(idle)-42") == true }
        #expect(settled, "the host shell did not run a line typed after berth ended: \((try? terminal.screen()) ?? "")")
        let screen = try terminal.screen()
        let out = String(decoding: (try? readFile(lab.tmp.appending("out.txt"))) ?? [], as: UTF8.self)
        let done = String(decoding: (try? readFile(lab.tmp.appending("done.txt"))) ?? [], as: UTF8.self)
        #expect(finished, "berth did not finish: \(screen)")
        #expect(out.contains("tiocsti-probe ran"), "berth did not run the probe: exit \(done) out: \(out) screen: \(screen)")
        #expect(try FileStatus.of(marker) == nil, "the caller's shell ran the injected command: \(out)")
        // The container's own pty echoes what was pushed into it, and that output is shown on the
        // caller's terminal when one of berth's output streams is it; what must never happen is
        // the caller's shell reading it as typed at its prompt.
        #expect(!screen.contains("host-shell$ touch"), "the injected keys reached the caller's shell:\n\(screen)\nprobe: \(out)")
    }

    // MARK: 5 (part). Firmware tables and the kernel's configuration

    @Test(.enabled(if: ((try? Directory(opening: "/sys/firmware").entryNames()) ?? []).isEmpty == false,
                   "this host's /sys/firmware is empty or absent: nothing to mask"),
          arguments: isolationRunModes)
    func sysFirmwareShowsNothingInside(_ options: [String]) throws {
        let lab = try IsolationLab("firmware")
        defer { withExtendedLifetime(lab) {} }
        let result = try lab.inside(.directory, options, """
            echo attack-ran
            ls -A /sys/firmware 2>/dev/null | sed 's/^/firmware: /'
            find /sys/firmware -type f 2>/dev/null | head -n 3 | while read f; do head -c 1 "$f" >/dev/null 2>&1 && echo "read: $f"; done
            exit 0
            """)
        expectRan(result)
        #expect(!result.stdout.contains("firmware: ") && !result.stdout.contains("read: "), "\(result)")
    }

    @Test(.enabled(if: access("/proc/config.gz", R_OK) == 0, "this host has no readable /proc/config.gz: nothing to mask"),
          arguments: isolationRunModes)
    func theKernelsConfigurationCannotBeReadInside(_ options: [String]) throws {
        let lab = try IsolationLab("config")
        defer { withExtendedLifetime(lab) {} }
        let result = try lab.inside(.directory, options, """
            echo attack-ran
            head -c 2 /proc/config.gz 2>/dev/null | od -An -tx1
            exit 0
            """)
        expectRan(result)
        #expect(!result.stdout.contains("1f 8b"), "the container read the host kernel's configuration: \(result)")
    }

    // MARK: 6. --as-pid2: PID 1 is no host binary

    /// berth and berth-stage as the host has them: the real path, device and inode.
    func hostBinaries() throws -> [(path: String, device: UInt64, inode: UInt64)] {
        let directory = URL(fileURLWithPath: berthBinary).deletingLastPathComponent()
        return try ["berth", "berth-stage"].map {
            let path = directory.appendingPathComponent($0).resolvingSymlinksInPath().path
            let status = try #require(try FileStatus.of(FilePath(path)))
            return (path, UInt64(status.device), UInt64(status.inode))
        }
    }

    @Test(arguments: isolationRunModes, ImageKind.allCases)
    func theStubInitOfAsPID2IsNoHostBinary(_ options: [String], _ kind: ImageKind) throws {
        let lab = try IsolationLab("pid2")
        defer { withExtendedLifetime(lab) {} }
        let binaries = try hostBinaries()
        let sums = try shell("sha256sum " + binaries.map { "'\($0.path)'" }.joined(separator: " "))
        let result = try run(berthBinary, lab.runLine(kind, options + ["--as-pid2"], ["/probe/pid1"]))
        expectRan(result, "exe-id=")
        let exe = reported("exe", in: result.stdout) ?? ""
        let id = reported("exe-id", in: result.stdout) ?? ""
        for binary in binaries {
            let name = URL(fileURLWithPath: binary.path).lastPathComponent
            #expect(exe != binary.path, "PID 1 runs the host's \(name): \(result)")
            #expect(id != "\(binary.device) \(binary.inode)", "/proc/1/exe opens the host's \(name): \(result)")
            // The kernel shows a mapping's device as major:minor in hex, then its inode.
            let major = ((binary.device >> 8) & 0xfff) | ((binary.device >> 32) & ~0xfff)
            let minor = (binary.device & 0xff) | ((binary.device >> 12) & ~0xff)
            let device = String(format: "%02llx:%02llx", major, minor)
            let mapped = result.stdout.split(separator: "\n").filter { $0.hasPrefix("map: ") }.filter { line in
                let fields = line.split(separator: " ", omittingEmptySubsequences: true)
                return line.contains(binary.path) || (fields.count > 5 && fields[4] == device && fields[5] == "\(binary.inode)")
            }
            #expect(mapped.isEmpty, "PID 1 maps the host's \(name), readable through /proc/1/mem: \(mapped)")
        }
        #expect(reported("exe-write", in: result.stdout) != "ok", "/proc/1/exe opened for writing: \(result)")
        #expect(try shell("sha256sum --quiet -c - <<'EOF'\n\(sums.stdout)EOF").status == 0, "a host binary changed")
    }

    // MARK: 7. berth mount: nosuid, nodev

    @Test func aMountedImageGivesAHostUserNeitherRootNorTheHostsDisks() throws {
        let scratch = try TemporaryDirectory("loop")
        let disk = try LoopDevice(in: scratch)
        defer { disk.detach(); withExtendedLifetime(scratch) {} }
        let lab = try IsolationLab("mount") { (tree: FilePath) throws in
            let probe = tree.appending("suid-euid").string
            #expect(try shell("cp '\(Probes.path("euid"))' '\(probe)' && chown 0:0 '\(probe)' && chmod 4755 '\(probe)'").status == 0)
            #expect(try shell("mknod -m 0666 '\(tree.string)/disk' b \(disk.major) \(disk.minor)").status == 0)
        }
        defer { withExtendedLifetime(lab) {} }
        chmod(lab.tmp.string, 0o755)
        let dir = lab.tmp.appending("mnt")
        try Directory(opening: lab.tmp.path).makeDirectory("mnt", mode: 0o755)
        let mounted = try berth(["mount", ImageKind.clone.rawValue, dir.string], store: lab.tmp)
        defer {
            if mounts(under: dir.string).isEmpty == false, (try? berth(["umount", dir.string], store: lab.tmp))?.status != 0 {
                _ = try? shell("umount '\(dir.string)' || umount -l '\(dir.string)'")
            }
        }
        try #require(mounted.status == 0, "\(mounted)")
        let flags = try shell("findmnt -no OPTIONS '\(dir.string)'").stdout.trimmed

        let nobody = "setpriv --reuid=65534 --regid=65534 --clear-groups"
        let setuid = try shell("\(nobody) '\(dir.string)/suid-euid'")
        #expect(setuid.stdout.hasPrefix("euid="), "the image's setuid probe did not run: \(setuid)")
        #expect(setuid.stdout == "euid=65534 uid=65534\n", "a host user became root through the mounted image (\(flags)): \(setuid)")

        let read = try shell("\(nobody) dd if='\(dir.string)/disk' bs=64 count=1 2>&1 | tr -cd 'A-Za-z0-9 -'")
        #expect(!read.stdout.contains(disk.marker), "a host user read the host's disk \(disk.path) through the image (\(flags)): \(read)")
        #expect(try berth(["umount", dir.string], store: lab.tmp).status == 0)
        #expect(mounts(under: lab.tmp.string).isEmpty)
    }

    // MARK: Mount events

    /// On a host whose PID 1 is systemd every mount is shared, and the store's trees always are
    /// (so that an unmount reaches the copies other namespaces took): a copy of a shared mount
    /// handed to the container as it is would be the host's peer, and what root inside mounts
    /// on it would show on the host. Root inside, given CAP_SYS_ADMIN, mounts over a --bind of a
    /// shared host directory and over its root's /tmp: neither reaches the host, nor do the
    /// container's own /proc, /sys, /dev and /run.
    @Test(arguments: isolationRunModes, ImageKind.allCases)
    func mountsInsideNeverShowOnTheHost(_ options: [String], _ kind: ImageKind) throws {
        let lab = try IsolationLab("events")
        defer { withExtendedLifetime(lab) {} }
        let shared = try TemporaryDirectory("events-shared")
        try Directory(opening: shared.path).makeDirectory("x", mode: 0o755)
        try #require(try shell("mount --bind '\(shared.string)' '\(shared.string)' && mount --make-shared '\(shared.string)'").status == 0)
        defer { _ = try? shell("umount -R '\(shared.string)' || umount -lR '\(shared.string)'") }
        let result = try lab.inside(kind, options + ["--capability=CAP_SYS_ADMIN", "--bind", "\(shared.string):/shared"], """
            mount -t tmpfs planted /shared/x && echo mounted-on-bind
            mount -t tmpfs planted /tmp && echo mounted-on-root
            """)
        #expect(result.stdout.contains("mounted-on-bind") && result.stdout.contains("mounted-on-root"), "the attack did not run: \(result)")
        #expect(allMounts(under: shared.string).map(\.point) == [shared.string], "a mount made inside shows on the host")
        #expect(mounts(under: lab.tmp.string).isEmpty, "the container's mounts show on the host: \(mounts(under: lab.tmp.string))")
    }

    // MARK: Read-only mounts handed to the container

    /// Root inside tries to make the read-only mounts berth moves in writable (a `--bind-ro`,
    /// the `--read-only` root of a directory image) and write the host's files through them, and
    /// to unmount what hides the host's (the bind, the mask over /sys/firmware). Every mount is
    /// attached before the container's mount namespace is copied from the setup's, so the
    /// kernel locks each to its flags and its place, and refuses all of it.
    @Test(arguments: [ImageKind.directory, .clone])
    func readOnlyMountsCannotBeMadeWritableInside(_ kind: ImageKind) throws {
        let lab = try IsolationLab("robind")
        let shared = try TemporaryDirectory("robind-source")
        try writeFile(shared.appending("f"), "host\n")
        let result = try lab.inside(kind, ["--read-only", "--bind-ro", "\(shared.string):/root"], """
            echo x > /root/f 2>/dev/null && echo wrote-before
            mount -o remount,bind,rw /root 2>/dev/null && echo remounted-bind
            echo pwned > /root/f 2>/dev/null && echo wrote-bind
            mount -o remount,rw / 2>/dev/null && echo remounted-root
            touch /planted 2>/dev/null && echo wrote-root
            umount -l /root 2>/dev/null && echo unmounted-bind
            umount -l /sys/firmware 2>/dev/null && echo unmounted-mask
            grep -q ' /root ro,' /proc/self/mountinfo && echo still-read-only
            """)
        #expect(result.status == 0 && result.stdout.trimmed == "still-read-only", "\(result)")
        #expect(try readFile(shared.appending("f")) == Array("host\n".utf8))
        #expect(try FileStatus.of(FilePath(lab.store).appending("dir/planted")) == nil)
    }
}
