import BerthSystem
import BerthTestSupport
import Foundation
import SystemPackage
import Testing

/// User namespaces, on by default: root inside is an unprivileged range of host ids, while the
/// images stay 0-based on disk through idmapped mounts.
@Suite(.serialized) struct UserNamespaceTests {
    /// A store with the busybox root imported as "bb" and cloned as "bb-clone", made once.
    static let shared: TemporaryDirectory = {
        let tmp = try! TemporaryDirectory.forProcess("userns")
        precondition(try! berth(["import", "-q", Fixtures.busybox, "bb"], store: tmp).status == 0)
        precondition(try! berth(["clone", "bb", "bb-clone"], store: tmp).status == 0)
        return tmp
    }()

    var store: TemporaryDirectory { Self.shared }

    /// The first line of /proc/self/uid_map inside, as its three numbers.
    func uidMap(_ options: [String], image: String = "bb") throws -> [UInt64] {
        let result = try inImage(image, "cat /proc/self/uid_map", store: store, options: options)
        #expect(result.status == 0, "\(result)")
        return result.stdout.split(whereSeparator: { $0 == " " || $0 == "\n" }).compactMap { UInt64($0) }
    }

    @Test func theDefaultIsARangeOf65536IdsPickedForTheMachine() throws {
        let map = try uidMap([])
        #expect(map.count == 3 && map[0] == 0 && map[2] == 65536, "\(map)")
        // nspawn's range: 64K-aligned, from 0x80000 below 0x6FFF0000.
        #expect(map[1] >= 0x80000 && map[1] < 0x6FFF_0000 && map[1] % 0x10000 == 0, "\(map)")
        // The same name gets the same range (a hash of it), and -U says the same as the default.
        #expect(try uidMap([]) == map)
        #expect(try uidMap(["-U"]) == map)
        #expect(try uidMap(["--private-users=pick"]) == map)
        // Another machine's name gets its own.
        #expect(try uidMap([], image: "bb-clone")[1] != map[1])
    }

    @Test func theOtherModesAreNspawns() throws {
        #expect(try uidMap(["--private-users=no"]) == [0, 0, 4_294_967_295])
        #expect(try uidMap(["--private-users=identity"]) == [0, 0, 65536])
        #expect(try uidMap(["--private-users=1048576:65536"]) == [0, 1_048_576, 65536])
        #expect(try uidMap(["--private-users-ownership=map"]).count == 3)
    }

    @Test(arguments: [
        (["--private-users=maybe"], "--private-users takes no, pick, identity or BASE[:COUNT]"),
        (["--private-users=12:0"], "--private-users takes"),
        (["--private-users-ownership=chown"], "berth keeps images 0-based on disk"),
        (["--private-users-ownership=sideways"], "--private-users-ownership takes map or auto"),
        (["--bind", "/tmp:/mnt:frobnicate"], "--bind takes the options rbind, norbind, idmap and noidmap"),
    ])
    func badUserNamespaceOptionsGetOneLine(_ options: [String], _ expected: String) throws {
        expectCleanFailure(try inImage("bb", "true", store: store, options: options), expected)
    }

    @Test func twoMachinesRunningAtOnceNeverShareARange() throws {
        // The same range, explicitly, for a second machine while the first holds it.
        let first = Process()
        first.executableURL = URL(fileURLWithPath: berthBinary)
        first.arguments = ["--store", store.appending("store").string, "run", "-q", "-x", "--private-users=2097152", "-M", "bb", "/bin/sleep", "5"]
        first.standardInput = FileHandle.nullDevice
        try first.run()
        defer { first.terminate(); first.waitUntilExit() }
        // It is up once a process maps the range.
        let taken = try waitUntil(timeout: 30) { try shell("grep -ls ' 2097152 ' /proc/[0-9]*/uid_map").status == 0 }
        #expect(taken, "the first machine did not start")
        let second = try inImage("bb", "true", store: store, options: ["-x", "--private-users=2097152"])
        expectCleanFailure(second, "are in use by another running machine")
        // pick steps past a range that another machine holds: both run at once with distinct ones.
        let picked = try uidMap(["-x"])
        #expect(picked.count == 3 && picked[1] != 2_097_152)
    }

    @Test(arguments: [["-M", "bb"], ["-M", "bb-clone"], ["-x", "-M", "bb-clone"], ["-x", "-M", "bb"]])
    func whatRootWritesInsideIsRootsOnDisk(_ target: [String]) throws {
        let name = "written-\(target.joined().filter(\.isLetter))"
        let result = try berth(["run", "-q"] + target + ["/bin/sh", "-c", """
            echo x > /\(name) && chown 1000:1000 /\(name) && mkdir /\(name).d && ls -ln /\(name) /bin/busybox | while read mode links user group rest; do echo "$user:$group"; done
            """], store: store)
        #expect(result.status == 0, "\(result)")
        // Inside, root's files are root's and the new file is 1000's.
        #expect(result.stdout == "0:0\n1000:1000\n", "\(result)")
        let merged = try berth(["run", "-q", "--private-users=no"] + target.filter { $0 != "-x" } + ["/bin/sh", "-c", "ls -ln /\(name) 2>/dev/null | while read mode links user group rest; do echo \"$user:$group\"; done; rm -rf /\(name) /\(name).d"], store: store)
        if target.contains("-x") {
            #expect(merged.stdout == "", "an ephemeral run's change stayed: \(merged)")
        } else {
            // On disk (read without any mapping) the owner is 1000 too, not 1000 plus the range's base.
            #expect(merged.stdout == "1000:1000\n", "\(merged)")
        }
    }

    @Test func bindsKeepTheirOwnersUnlessNoidmap() throws {
        let tmp = try TemporaryDirectory("userns-bind")
        try writeFile(tmp.appending("mine"), "x")
        #expect(chown(tmp.appending("mine").string, 1234, 1234) == 0)
        #expect(chmod(tmp.string, 0o755) == 0)
        let script = "stat -c %u:%g /host/mine; touch /host/made && stat -c %u /host/made"
        let mapped = try inImage("bb", script, store: store, options: ["--bind", "\(tmp.string):/host"])
        #expect(mapped.stdout == "1234:1234\n0\n", "\(mapped)")
        #expect(try FileStatus.of(tmp.appending("made"))?.uid == 0, "root's file is the host's root's")
        let unmapped = try inImage("bb", "stat -c %u:%g /host/mine; touch /host/other 2>/dev/null || echo refused", store: store,
                                   options: ["--bind", "\(tmp.string):/host:noidmap"])
        // Without the mapping the host's ids are outside the namespace: nobody, and not root's to write.
        #expect(unmapped.stdout == "65534:65534\nrefused\n", "\(unmapped)")
        _ = try shell("rmdir '\(store.appending("store/bb/host").string)' 2>/dev/null")
    }

    @Test func aTreeThatCannotBeIdmappedIsRefusedNotShownAsNobodys() throws {
        // An overlay on the host (berth mount of the clone) cannot be idmapped.
        let at = try TemporaryDirectory("userns-overlay")
        let mounted = try berth(["mount", "bb-clone", at.string], store: store)
        #expect(mounted.status == 0, "\(mounted)")
        defer { _ = try? berth(["umount", at.string], store: store) }
        let result = try inImage("bb", "ls /host", store: store, options: ["-x", "--bind-ro", "\(at.string):/host"])
        expectCleanFailure(result, "does not support idmapped mounts")
        #expect(result.stderr.contains("--private-users=no") && result.stderr.contains(":noidmap"), "\(result)")
        // As the error says, :noidmap works, the host's owners shown unmapped.
        let unmapped = try inImage("bb", "stat -c %u /host", store: store, options: ["-x", "--bind-ro", "\(at.string):/host:noidmap"])
        #expect(unmapped.stdout == "65534\n", "\(unmapped)")
        #expect(mounts(under: store.appending("store/bb").string).isEmpty)
    }

    @Test func rootInsideIsNotRootOnTheHost() throws {
        // With the namespace's capabilities only, root inside cannot touch what the host's root
        // owns: a root-owned file bound in without the mapping, the kernel's settings.
        let tmp = try TemporaryDirectory("userns-root")
        try writeFile(tmp.appending("secret"), "host secret\n", mode: 0o600)
        let result = try inImage("bb", """
            cat /host/secret 2>/dev/null || echo cannot-read
            echo 1 > /proc/sys/kernel/printk 2>/dev/null || echo cannot-write-sysctl
            """, store: store, options: ["--bind-ro", "\(tmp.string):/host:noidmap"])
        #expect(result.stdout == "cannot-read\ncannot-write-sysctl\n", "\(result)")
        _ = try shell("rmdir '\(store.appending("store/bb/host").string)' 2>/dev/null")
    }

    @Test func debianBootsUnderAUserNamespaceAsWithout() throws {
        let tmp = try TemporaryDirectory("userns-boot")
        #expect(try berth(["import", "-q", Fixtures.debianZstd, "deb"], store: tmp).status == 0)
        _ = try installBootProbe(in: tmp.appending("store/deb"), action: "poweroff")
        #expect(try berth(["clone", "deb", "c"], store: tmp).status == 0)
        // bootAndProbe checks multi-user.target and no failed unit, for each.
        for options in [[], ["--private-users=no"], ["-x"]] {
            try bootAndProbe(["run", "-q", "-b"] + options + ["-M", "c"], store: tmp)
        }
        #expect(mounts(under: tmp.string).isEmpty)
        // Every container's cgroup goes with it; other suites' running containers have theirs, in
        // use (populated), so what must not stay is a cgroup nothing runs in.
        let unused = "for c in /sys/fs/cgroup/unified/berth/*-*; do grep -q 'populated 0' $c/cgroup.events 2>/dev/null && echo $c; done; true"
        var leftover = try shell(unused).stdout
        for _ in 0..<50 where !leftover.isEmpty {
            usleep(100_000)
            leftover = try shell(unused).stdout
        }
        #expect(leftover.isEmpty, "cgroups left: \(leftover)")
    }
}
