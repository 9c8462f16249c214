import BerthSystem
import BerthTestSupport
import Foundation
import SystemPackage
import Testing

/// clone, snapshot, restore, gc, mount, umount and ephemeral runs through the command line,
/// on the busybox root; crashes forced between the steps of each change.
@Suite struct LayeredCommandTests {
    /// A store holding the busybox root as directory image "bb".
    func storeWithBusybox(_ label: String) throws -> TemporaryDirectory {
        let tmp = try TemporaryDirectory(label)
        let result = try berth(["import", "-q", Fixtures.busybox, "bb"], store: tmp)
        #expect(result.status == 0, "\(result)")
        return tmp
    }

    @Test func aCloneRunsWhileItsSourceStaysItsOwn() throws {
        let tmp = try storeWithBusybox("clone-cli")
        #expect(try berth(["clone", "bb", "c"], store: tmp).status == 0)
        #expect(try inImage("c", "echo from-c > /etc/mark", store: tmp).status == 0)
        #expect(try inImage("bb", "cat /etc/mark", store: tmp).status != 0)
        #expect(try inImage("c", "cat /etc/mark", store: tmp).stdout == "from-c\n")
        let show = try berth(["show", "--json", "c"], store: tmp)
        let record = try JSONSerialization.jsonObject(with: Data(show.stdout.utf8)) as? [String: Any]
        #expect(record?["type"] as? String == "layered" && record?["parent"] as? String == "bb", "\(show)")
        let list = try berth(["list"], store: tmp)
        #expect(list.stdout.contains("layered"), "\(list)")
        // Nothing of the overlay is ever mounted on the host: it lives in the container's namespace.
        #expect(mounts(under: tmp.string).isEmpty)
        try expectConsistentAfterGC(tmp)
    }

    @Test func ephemeralRunsLeaveNoTrace() throws {
        let tmp = try storeWithBusybox("ephemeral")
        let tree = tmp.appending("store/bb")
        let before = try TreeManifest(of: tree)
        let run = try berth(["run", "-q", "-x", "-D", tree.string, "/bin/sh", "-c", "echo x > /new; rm -r /usr; hostname"], store: tmp)
        #expect(run.status == 0, "\(run)")
        // The machine name gets a random suffix, as nspawn's ephemeral machines do.
        #expect(run.stdout.range(of: #"^bb-[0-9a-f]{16}\n$"#, options: .regularExpression) != nil, "\(run)")
        #expect(try TreeManifest(of: tree) == before)
        #expect(mounts(under: tmp.string).isEmpty)

        // The same on a layered image: its own writable layer stays as it was.
        #expect(try berth(["clone", "bb", "c"], store: tmp).status == 0)
        #expect(try inImage("c", "echo kept > /kept", store: tmp).status == 0)
        #expect(try inImage("c", "echo gone > /gone; cat /kept", store: tmp, options: ["-x"]).stdout == "kept\n")
        #expect(try inImage("c", "cat /kept; test ! -e /gone", store: tmp).stdout == "kept\n")
        // Ephemeral runs share the image with readers, not with a writer.
        #expect(try inImage("c", "touch /x", store: tmp, options: ["--read-only"]).status != 0)
    }

    @Test func exportOfALayeredImageIsItsMergedTree() throws {
        let tmp = try storeWithBusybox("export-layered")
        #expect(try berth(["clone", "bb", "c"], store: tmp).status == 0)
        #expect(try inImage("c", "echo added > /added; rm /bin/ls", store: tmp).status == 0)
        let out = tmp.appending("c.tar.zst")
        #expect(try berth(["export", "c", out.string], store: tmp).status == 0)
        let listing = try shell("tar -tf '\(out.string)'").stdout.split(separator: "\n")
        #expect(listing.contains("./added") && !listing.contains("./bin/ls") && listing.contains("./bin/sh"))
        #expect(mounts(under: tmp.string).isEmpty)
        #expect(try Directory(opening: tmp.appending("store/.berth/staging")).entryNames().isEmpty)
    }

    @Test func mountAndUmountShowTheMergedTreeToOtherTools() throws {
        let tmp = try storeWithBusybox("mount")
        #expect(try berth(["clone", "bb", "c"], store: tmp).status == 0)
        let dir = tmp.appending("mnt")
        try Directory(opening: tmp.path).makeDirectory("mnt", mode: 0o755)
        #expect(try berth(["mount", "c", dir.string], store: tmp).status == 0)
        defer { _ = try? shell("umount '\(dir.string)' 2>/dev/null") }
        try writeFile(dir.appending("written-outside"), "hello\n")
        expectCleanFailure(try inImage("c", "true", store: tmp), "mounted at")
        expectCleanFailure(try berth(["remove", "c"], store: tmp), "mounted at")
        #expect(try berth(["umount", dir.string], store: tmp).status == 0)
        #expect(mounts(under: tmp.string).isEmpty)
        #expect(try inImage("c", "cat /written-outside", store: tmp).stdout == "hello\n")
    }

    @Test(arguments: [
        (["clone", "missing", "x"], "no image 'missing'"),
        (["clone", "bb", "bb"], "onto itself"),
        (["clone", "bb", "c"], "already exists"),
        (["snapshot", "bb", "a/b"], "image name 'a/b' may hold only"),
        (["restore", "c", "c"], "from itself"),
        (["restore", "c", "missing"], "no image 'missing'"),
        (["mount", "c", "/nonexistent/dir"], "not a directory"),
        (["umount", "/tmp"], "no image of"),
    ])
    func badInputGetsOneLineAndChangesNothing(_ arguments: [String], _ expected: String) throws {
        let tmp = try storeWithBusybox("bad-layered")
        #expect(try berth(["clone", "bb", "c"], store: tmp).status == 0)
        let before = try listedNames(tmp)
        let layers = try namedLayers(tmp)
        expectCleanFailure(try berth(arguments, store: tmp), expected)
        #expect(try listedNames(tmp) == before)
        #expect(try namedLayers(tmp) == layers)
    }

    @Test func aForcedImportReplacesALayeredImageAndItsWritableLayer() throws {
        let tmp = try storeWithBusybox("force-layered")
        #expect(try berth(["clone", "bb", "c"], store: tmp).status == 0)
        #expect(try inImage("c", "echo mine > /mine", store: tmp).status == 0)
        expectCleanFailure(try berth(["import", "-q", Fixtures.busybox, "c"], store: tmp), "already exists")
        let forced = try berth(["import", "-q", "--force", Fixtures.busybox, "c"], store: tmp)
        #expect(forced.status == 0, "\(forced)")
        #expect(try inImage("c", "test ! -e /mine", store: tmp).status == 0)
        let show = try berth(["show", "c"], store: tmp)
        #expect(show.stdout.contains("Kind: directory"), "\(show)")
        #expect(try inImage("bb", "test -x /bin/busybox", store: tmp).status == 0)
        try expectConsistentAfterGC(tmp)
    }

    @Test func aDirectoryImageMountsNowhereButAtItsOwnPath() throws {
        let tmp = try storeWithBusybox("mount-dir")
        expectCleanFailure(try berth(["mount", "bb", tmp.string], store: tmp), "is a directory image")
    }

    /// Each change, killed (SIGKILL) at its crash point, leaves the store as before or as after,
    /// and the next commands tidy what was left.
    @Test(arguments: [
        // command, crash point, images after, whether the change happened
        (["clone", "bb", "c"], "convert", ["bb"], false),
        (["clone", "bb", "c"], "clone", ["bb"], false),
        (["snapshot", "c", "s"], "freeze", ["bb", "c", "s0"], false),
        (["restore", "c", "s0"], "restore", ["bb", "c", "s0"], true),
        (["remove", "c"], "remove", ["bb", "s0"], true),
        (["gc"], "gc", ["bb", "c", "s0"], true),
    ])
    func aKilledChangeHappenedOrDidNot(_ arguments: [String], _ point: String, _ after: [String], _ happened: Bool) throws {
        let tmp = try storeWithBusybox("crash")
        if arguments.dropFirst().first != "bb" {
            // A layered image "c" with a snapshot "s0", a layer for gc, and a change in "c" since.
            #expect(try berth(["clone", "bb", "c"], store: tmp).status == 0)
            #expect(try berth(["snapshot", "c", "s0"], store: tmp).status == 0)
            // A layer no image needs any more: the writable layer of a clone killed before its
            // record was published (remove frees a removed image's layers itself since issue 13).
            let doomed = try run(berthBinary, ["--store", tmp.appending("store").string, "clone", "c", "doomed"],
                                 environment: ["BERTH_CRASH_AT": "clone"])
            #expect(doomed.status == 128 + SIGKILL, "\(doomed)")
            #expect(try inImage("c", "echo changed > /etc/mark", store: tmp).status == 0)

        }
        let killed = try run(berthBinary, ["--store", tmp.appending("store").string] + arguments, environment: ["BERTH_CRASH_AT": point])
        #expect(killed.status == 128 + SIGKILL, "\(killed)")

        #expect(try listedNames(tmp) == Set(after))
        // The content is whole: the old one, or the new one where the change had happened.
        #expect(try inImage("bb", "test -x /bin/busybox", store: tmp).status == 0)
        if after.contains("c") {
            let mark = try inImage("c", "cat /etc/mark 2>/dev/null || echo none", store: tmp).stdout
            #expect(mark == (arguments[0] == "restore" ? "none\n" : "changed\n"))
        }
        try expectConsistentAfterGC(tmp)
        // And the store takes the same change again.
        if !happened { #expect(try berth(arguments, store: tmp).status == 0) }
        try expectConsistentAfterGC(tmp)
    }

    @Test func killingTheSupervisorOfALayeredRunLeavesNoMountAndFreesTheImage() throws {
        let tmp = try storeWithBusybox("kill-layered")
        #expect(try berth(["clone", "bb", "c"], store: tmp).status == 0)
        let first = Process()
        first.executableURL = URL(fileURLWithPath: berthBinary)
        first.arguments = ["--store", tmp.appending("store").string, "run", "-q", "-M", "c", "/bin/sleep", "41"]
        try first.run()
        defer { if first.isRunning { kill(first.processIdentifier, SIGKILL); first.waitUntilExit() } }
        // Its command runs once the run holds the image (a snapshot tried meanwhile, in a loop,
        // would hold the image's lock at the moment the run takes it, and the run would end).
        #expect(waitUntil(timeout: 30) { processRuns("/bin/sleep 41") })
        let busy = try berth(["snapshot", "c", "s"], store: tmp)
        expectCleanFailure(busy, "running writable")
        #expect(mounts(under: tmp.string).isEmpty)
        kill(first.processIdentifier, SIGKILL)
        first.waitUntilExit()
        var again = CommandResult(status: 1, stdout: "", stderr: "")
        try waitUntil(timeout: 30) {
            again = try inImage("c", "true", store: tmp)
            return again.status == 0
        }
        #expect(again.status == 0, "\(again)")
        #expect(try berth(["snapshot", "c", "s"], store: tmp).status == 0)
    }
}
