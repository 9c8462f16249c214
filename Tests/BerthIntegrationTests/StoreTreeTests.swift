import BerthSystem
import BerthTestSupport
import Foundation
import Glibc
import SystemPackage
import Testing

/// Every image is a directory at STORE/NAME (issue 13): a layered image's tree is mounted there,
/// other tools share it, a missing one comes back, a change is refused while anything uses it,
/// and a running machine's tree is its own.
@Suite struct StoreTreeTests {
    /// A store holding busybox as "bb" and a clone "c" with a change of its own.
    func storeWithClone(_ label: String) throws -> TemporaryDirectory {
        let tmp = try TemporaryDirectory(label)
        #expect(try berth(["import", "-q", Fixtures.busybox, "bb"], store: tmp).status == 0)
        #expect(try berth(["clone", "bb", "c"], store: tmp).status == 0)
        #expect(try inImage("c", "echo berth > /from-berth", store: tmp).status == 0)
        return tmp
    }

    func tree(_ tmp: TemporaryDirectory, _ name: String) -> FilePath { tmp.appending("store/\(name)") }

    func isMounted(_ tmp: TemporaryDirectory, _ name: String) -> Bool {
        keptTrees(under: tmp.string).contains(tree(tmp, name).string)
    }

    /// The id of image `name`'s writable layer, from its record.
    func upperLayer(_ tmp: TemporaryDirectory, _ name: String) throws -> FilePath {
        let record = String(decoding: try readFile(tmp.appending("store/.berth/images/\(name)/image")), as: UTF8.self)
        let id = try #require(record.split(separator: "\n").first { $0.hasPrefix("upper=") }).dropFirst("upper=".count)
        return tmp.appending("store/.berth/layers/\(id)")
    }

    /// A process started in the background, ended by its pid when the test is done with it.
    final class Background {
        let process = Process()
        init(_ executable: String, _ arguments: [String]) throws {
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = arguments
            process.standardInput = FileHandle.nullDevice
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
        }
        var pid: pid_t { process.processIdentifier }
        func end(_ signal: Int32 = SIGKILL) {
            if process.isRunning { kill(pid, signal) }
            process.waitUntilExit()
        }
        deinit { end() }
    }

    @Test func aCloneLeavesBothTreesWhereOtherToolsFindAndShareThem() throws {
        let tmp = try storeWithClone("tree-share")
        // Cloning a directory image leaves it at its place, now as the overlay of its layer.
        #expect(keptTrees(under: tmp.string) == [tree(tmp, "bb").string, tree(tmp, "c").string])
        let show = try berth(["show", "c"], store: tmp)
        #expect(show.stdout.contains("Path: \(tree(tmp, "c").string)\n"), "\(show)")

        // nspawn sees what berth wrote, and what it writes lands in the clone's own layer.
        let nspawn = try run("/usr/bin/systemd-nspawn", ["--register=no", "--keep-unit", "-q", "-D", tree(tmp, "c").string,
                                                         "/bin/sh", "-c", "cat /from-berth; echo nspawn > /from-nspawn"])
        #expect(nspawn.status == 0 && nspawn.stdout.hasPrefix("berth"), "\(nspawn)")
        // Another suite's nspawn, copying every host mount as it starts, may hold a tree for a
        // moment (and is named as the holder): tried again while it says so.
        func whileHeld(_ body: () throws -> CommandResult) throws -> CommandResult {
            var result = try body()
            _ = try waitUntil(timeout: 20, polling: 0.2) {
                if result.status != 0 && result.stderr.contains("is in use") { result = try body() }
                return !(result.status != 0 && result.stderr.contains("is in use"))
            }
            return result
        }
        let seen = try whileHeld { try inImage("c", "cat /from-nspawn", store: tmp) }
        #expect(seen.stdout == "nspawn\n", "\(seen)")
        #expect(try readFile(upperLayer(tmp, "c").appending("from-nspawn")) == Array("nspawn\n".utf8))
        let parent = try whileHeld { try inImage("bb", "test ! -e /from-nspawn && test ! -e /from-berth", store: tmp) }
        #expect(parent.status == 0, "\(parent)")
        #expect(try readFile(tree(tmp, "c").appending("from-berth")) == Array("berth\n".utf8))
        #expect(mounts(under: tmp.string).isEmpty, "\(mounts(under: tmp.string))")
    }

    @Test func aTreeThatIsMissingIsMountedAgainByTheNextCommand() throws {
        let tmp = try storeWithClone("tree-again")
        // As after a reboot: the mounts are gone, the records stay.
        for name in ["c", "bb"] { #expect(umount2(tree(tmp, name).string, 0) == 0) }
        let listed = try berth(["list"], store: tmp)
        #expect(listed.status == 0, "\(listed)")
        #expect(isMounted(tmp, "c") && isMounted(tmp, "bb"))
        #expect(try readFile(tree(tmp, "c").appending("from-berth")) == Array("berth\n".utf8))

        // list makes no directory; mount --all, for the host's boot, does.
        #expect(umount2(tree(tmp, "c").string, 0) == 0)
        #expect(rmdir(tree(tmp, "c").string) == 0)
        _ = try berth(["list"], store: tmp)
        #expect(!isMounted(tmp, "c"))
        let all = try berth(["mount", "--all"], store: tmp)
        #expect(all.status == 0 && all.stdout == "Mounted 'c'.\n", "\(all)")
        #expect(isMounted(tmp, "c"))
        let again = try berth(["mount", "--all"], store: tmp)
        #expect(again.stdout == "Every image's tree was mounted already.\n", "\(again)")
        expectCleanFailure(try berth(["mount", "--all", "c"], store: tmp), "takes no image")
    }

    /// A process holds the clone's tree: with an open file, as its working directory, or as
    /// nspawn does, in a mount namespace of its own where the host's unmount would succeed; or
    /// it holds a copy of it in a namespace that no longer receives the host's mount events,
    /// from a root elsewhere (its own mountinfo does not show the copy).
    @Test(arguments: ["an open file", "a working directory", "a mount namespace of its own", "a private copy, chrooted away"])
    func changesToATreeInUseAreRefusedAndChangeNothing(_ holder: String) throws {
        let tmp = try storeWithClone("tree-busy")
        let c = tree(tmp, "c").string
        let holding: Background
        switch holder {
        case "an open file": holding = try Background("/bin/sh", ["-c", "exec sleep 74 < '\(c)/from-berth'"])
        case "a working directory": holding = try Background("/bin/sh", ["-c", "cd '\(c)' && exec sleep 74"])
        case "a private copy, chrooted away":
            try shell("mkdir '\(tmp.string)/other' && tar -xf '\(Fixtures.busybox)' -C '\(tmp.string)/other'")
            holding = try Background("/usr/bin/unshare", ["-m", "--propagation", "private", "chroot", "\(tmp.string)/other", "/bin/sleep", "76"])
        default:
            holding = try Background("/usr/bin/systemd-nspawn", ["--register=no", "--keep-unit", "-q", "-D", c, "/bin/sleep", "75"])
        }
        func link(_ name: String) -> String? {
            var buffer = [CChar](repeating: 0, count: 4096)
            let n = readlink("/proc/\(holding.pid)/\(name)", &buffer, buffer.count - 1)
            return n > 0 ? String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : nil
        }
        let held = waitUntil {
            switch holder {
            case "an open file": return link("fd/0") == "\(c)/from-berth"
            case "a working directory": return link("cwd") == c
            // Chrooted, its namespace made private before: not the other case's sleep, which
            // runs beside this one.
            case "a private copy, chrooted away": return link("root") == "\(tmp.string)/other"
            default: return processRuns("/bin/sleep 75")
            }
        }
        try #require(held, "the holder did not start")
        let layers = try namedLayers(tmp)
        for command in [["clone", "c", "d"], ["snapshot", "c", "s"], ["rename", "c", "e"], ["remove", "c"], ["read-only", "c"],
                        ["run", "-q", "-M", "c", "/bin/true"]] {
            let result = try berth(command, store: tmp)
            #expect(result.status == 75 && result.stderr.contains("image 'c' is in use"), "\(command): \(result)")
            #expect(result.stderr.split(separator: "\n").count == 1, "\(result)")
        }
        #expect(try listedNames(tmp) == ["bb", "c"])
        #expect(try namedLayers(tmp) == layers)
        #expect(isMounted(tmp, "c"))
        // nspawn waits for its container's command (PID 1 there, which SIGTERM does not end):
        // that ends first, by its pid.
        if holder == "a mount namespace of its own" {
            for pid in (try shell("pgrep -fx '/bin/sleep 75' || true")).stdout.split(separator: "\n").compactMap({ pid_t($0) }) {
                kill(pid, SIGKILL)
            }
        }
        // nspawn ends on SIGTERM; the others inherit the test runner's blocked SIGTERM.
        holding.end(holder == "a mount namespace of its own" ? SIGTERM : SIGKILL)
        #expect(waitUntil { !processRuns(holder == "a private copy, chrooted away" ? "/bin/sleep 76" : "/bin/sleep 75") })
        // Another suite's nspawn, which copies every host mount while it starts, may hold the
        // tree a moment longer (and is named as the holder): the clone goes through once it lets go.
        var clone = try berth(["clone", "c", "d"], store: tmp)
        _ = try waitUntil(timeout: 20, polling: 0.2) {
            if clone.status != 0 && clone.stderr.contains("is in use") { clone = try berth(["clone", "c", "d"], store: tmp) }
            return clone.status == 0 || !clone.stderr.contains("is in use")
        }
        #expect(clone.status == 0, "\(clone)")
        #expect(try berth(["rename", "d", "e"], store: tmp).status == 0)
        #expect(isMounted(tmp, "e") && !FileManager.default.fileExists(atPath: tree(tmp, "d").string))
        #expect(try berth(["remove", "e"], store: tmp).status == 0)
        #expect(!FileManager.default.fileExists(atPath: tree(tmp, "e").string))
        #expect(mounts(under: tmp.string).isEmpty, "\(mounts(under: tmp.string))")
    }

    /// systemd-nspawn running any directory, and a service with PrivateTmp=, copy the host's
    /// mounts, every tree among them, into a namespace of their own that still receives the
    /// host's mount events. Those copies do not hold a tree: berth's unmount takes them away
    /// too (no overlay is left alive on the writable layer there), and its mount brings them
    /// back; while a process works in such a copy, the change is refused.
    @Test func copiesThatFollowTheHostDoNotHoldATree() throws {
        let tmp = try storeWithClone("tree-copies")
        let other = tmp.appending("other").string
        try shell("mkdir '\(other)' && tar -xf '\(Fixtures.busybox)' -C '\(other)'")
        let nspawn = try Background("/usr/bin/systemd-nspawn", ["--register=no", "--keep-unit", "-q", "-D", other, "/bin/sleep", "77"])
        let follower = try Background("/usr/bin/unshare", ["-m", "--propagation", "slave", "chroot", other, "/bin/sleep", "78"])
        defer {
            for pid in (try? shell("pgrep -fx '/bin/sleep 77' || true"))?.stdout.split(separator: "\n").compactMap({ pid_t($0) }) ?? [] {
                kill(pid, SIGKILL)
            }
            nspawn.end(SIGTERM)
            follower.end(SIGKILL)
        }
        try #require(waitUntil { processRuns("/bin/sleep 77") && processRuns("/bin/sleep 78") }, "the copies were not made")
        /// The trees the namespace of `pid` holds copies of, read from its root. (nspawn's
        /// namespace has its container's /proc at its root: only the follower's is read; it
        /// takes the host's mount events as nspawn's does, as a slave.)
        func copies(_ pid: pid_t) throws -> [String] {
            try shell("nsenter -m -t \(pid) cat /proc/self/mountinfo").stdout.split(separator: "\n").compactMap { line in
                let fields = line.split(separator: " ")
                return fields.count > 4 && fields[4].hasPrefix(tmp.appending("store/").string) ? String(fields[4]) : nil
            }
        }
        #expect(try copies(follower.pid).contains(tree(tmp, "c").string))

        for command in [["clone", "c", "d"], ["snapshot", "c", "s"], ["run", "-q", "-M", "c", "/bin/true"], ["rename", "c", "e"],
                        ["read-only", "e"], ["remove", "e"]] {
            let result = try berth(command, store: tmp)
            #expect(result.status == 0, "\(command): \(result)")
        }
        #expect(try listedNames(tmp) == ["bb", "d", "s"])
        let held = try copies(follower.pid)
        #expect(held.filter { $0.hasSuffix("/c") || $0.hasSuffix("/e") }.isEmpty, "\(held)")
        #expect(held.contains(tree(tmp, "d").string), "a new tree reaches the copy too: \(held)")

        // A process working in the copy of d uses it: the unmount would fail busy, so berth says so.
        let worker = try Background("/usr/bin/nsenter", ["-m", "-t", "\(follower.pid)", "/bin/sh", "-c", "cd '\(tree(tmp, "d").string)' && exec sleep 79"])
        defer { worker.end(SIGKILL) }
        try #require(waitUntil { processRuns("sleep 79") })
        let refused = try berth(["remove", "d"], store: tmp)
        #expect(refused.status == 75 && refused.stderr.contains("image 'd' is in use"), "\(refused)")
        #expect(isMounted(tmp, "d"))
        #expect(try listedNames(tmp) == ["bb", "d", "s"])
    }

    /// In a user namespace a writable run has an overlay of its own: the tree is away while it
    /// runs and back when it ends, even after its supervisor is killed. Without one, the run
    /// shares the tree, which shows the machine's writes as they happen.
    @Test func whileAMachineRunsItsTreeIsItsOwn() throws {
        let tmp = try storeWithClone("tree-run")
        let c = tree(tmp, "c")
        let store = tmp.appending("store").string
        var machine = try Background(berthBinary, ["--store", store, "run", "-q", "-M", "c", "/bin/sh", "-c", "echo 1 > /live; sleep 71"])
        #expect(waitUntil { processRuns("sleep 71") && !isMounted(tmp, "c") })
        #expect(try FileManager.default.contentsOfDirectory(atPath: c.string).isEmpty)
        machine.end(SIGTERM)
        #expect(isMounted(tmp, "c"))
        #expect(try readFile(c.appending("live")) == Array("1\n".utf8))

        // A supervisor killed outright cannot mount it again: the next command does.
        machine = try Background(berthBinary, ["--store", store, "run", "-q", "-M", "c", "/bin/sh", "-c", "echo 2 > /live; sleep 72"])
        #expect(waitUntil { processRuns("sleep 72") && !isMounted(tmp, "c") })
        machine.end(SIGKILL)
        #expect(waitUntil { !processRuns("sleep 72") })
        #expect(try berth(["list"], store: tmp).status == 0)
        #expect(isMounted(tmp, "c"))
        #expect(try readFile(c.appending("live")) == Array("2\n".utf8))

        machine = try Background(berthBinary, ["--store", store, "run", "-q", "--private-users=no", "-M", "c",
                                               "/bin/sh", "-c", "echo 3 > /live; sleep 73"])
        #expect(waitUntil { (try? readFile(c.appending("live"))) == Array("3\n".utf8) }, "the machine's write shows at STORE/NAME")
        #expect(isMounted(tmp, "c"))
        machine.end(SIGTERM)
        #expect(isMounted(tmp, "c"))
        #expect(mounts(under: tmp.string).isEmpty, "\(mounts(under: tmp.string))")
    }
}
