import BerthSystem
import BerthTestSupport
import Foundation
import SystemPackage
import Testing

/// The store's commands on the small busybox root, as a user runs them.
@Suite struct StoreCommandTests {
    @Test func importListShowRenameReadOnlyRemove() throws {
        let tmp = try TemporaryDirectory("store")
        #expect(try berth(["import", "-q", Fixtures.busybox], store: tmp).status == 0)
        // The name comes from the file's base name less its suffixes.
        let derived = URL(fileURLWithPath: Fixtures.busybox).lastPathComponent.replacingOccurrences(of: ".tar", with: "")
        try expectStore(tmp, holds: [derived])
        #expect(try FileStatus.of(tmp.appending("store"))?.permissions == 0o700)

        #expect(try berth(["rename", derived, "bb"], store: tmp).status == 0)
        #expect(try berth(["read-only", "bb"], store: tmp).status == 0)
        let list = try berth(["list", "--json"], store: tmp)
        let images = try JSONSerialization.jsonObject(with: Data(list.stdout.utf8)) as? [[String: Any]]
        #expect(images?.count == 1)
        #expect(images?.first?["name"] as? String == "bb")
        #expect(images?.first?["ro"] as? Bool == true)
        #expect(images?.first?["type"] as? String == "directory")
        #expect((images?.first?["usage"] as? Int ?? 0) > 1_000_000)

        // A read-only image keeps others from adding to it, and can still be renamed and removed.
        #expect(try shell("touch '\(tmp.appending("store/bb/new").string)'").status != 0)
        #expect(try berth(["rename", "bb", "bb2"], store: tmp).status == 0)
        let show = try berth(["show", "bb2", "--json"], store: tmp)
        let shown = try JSONSerialization.jsonObject(with: Data(show.stdout.utf8)) as? [String: Any]
        #expect(shown?["ro"] as? Bool == true, "\(show)")
        #expect(try berth(["read-only", "bb2", "false"], store: tmp).status == 0)
        #expect(try shell("touch '\(tmp.appending("store/bb2/new").string)'").status == 0)
        #expect(try berth(["read-only", "bb2", "true"], store: tmp).status == 0)
        #expect(try berth(["remove", "bb2"], store: tmp).status == 0)
        try expectStore(tmp, holds: [])
    }

    @Test func readOnlyImportAndImagesOtherToolsLeft() throws {
        let tmp = try TemporaryDirectory("foreign")
        #expect(try berth(["import", "-q", "--read-only", Fixtures.busybox, "ro"], store: tmp).status == 0)
        // A tree machinectl or a user put in the store is an image like any other.
        #expect(try shell("mkdir -p '\(tmp.string)/store/foreign/etc' && echo 'PRETTY_NAME=\"Foreign\"' > '\(tmp.string)/store/foreign/etc/os-release'").status == 0)
        let list = try berth(["list", "--json"], store: tmp)
        let images = try JSONSerialization.jsonObject(with: Data(list.stdout.utf8)) as? [[String: Any]] ?? []
        #expect(images.map { $0["name"] as? String } == ["foreign", "ro"], "\(list)")
        #expect(images.map { $0["ro"] as? Bool } == [false, true])
        #expect(try berth(["show", "foreign"], store: tmp).stdout.contains("OS: Foreign"))
        #expect(try berth(["rename", "foreign", "adopted"], store: tmp).status == 0)
        #expect(try berth(["export", "adopted", tmp.appending("adopted.tar.gz").string], store: tmp).status == 0)
        #expect(try berth(["remove", "adopted", "ro"], store: tmp).status == 0)
        try expectStore(tmp, holds: [])
    }

    @Test func storeOptionBeforeAfterAndFromTheEnvironment() throws {
        let tmp = try TemporaryDirectory("placement")
        let store = tmp.appending("store").string
        #expect(try run(berthBinary, ["--store", store, "import", "-q", Fixtures.busybox, "a"]).status == 0)
        #expect(try run(berthBinary, ["import", "--store", store, "-q", Fixtures.busybox, "b"]).status == 0)
        #expect(try run(berthBinary, ["import", "-q", Fixtures.busybox, "c"], environment: ["BERTH_STORE": store]).status == 0)
        #expect(try run(berthBinary, ["import", "-q", Fixtures.busybox, "--store=\(store)", "d"]).status == 0)
        let list = try run(berthBinary, ["list"], environment: ["BERTH_STORE": store])
        #expect(["a", "b", "c", "d"].allSatisfy { name in list.stdout.split(separator: "\n").contains { $0.hasPrefix(name + " ") } }, "\(list)")
        // Anywhere among a subcommand's options, but not among the container's command's arguments.
        #expect(try run(berthBinary, ["list", "--json", "--store", store]).stdout.contains("\"name\" : \"d\""))
        let echoed = try run(berthBinary, ["-qM", "a", "--store", store, "/bin/echo", "--store", "x"])
        #expect(echoed.stdout == "--store x\n", "\(echoed)")
    }

    @Test func directoryImportCopiesEverything() throws {
        let tmp = try TemporaryDirectory("dir")
        let src = tmp.appending("src").string
        let made = try shell("""
            set -e
            mkdir -p '\(src)/etc' '\(src)/usr/bin' '\(src)/shared'
            echo 'PRETTY_NAME="Test OS"' > '\(src)/etc/os-release'
            echo hello > '\(src)/usr/bin/tool' && chmod 4755 '\(src)/usr/bin/tool'
            ln '\(src)/usr/bin/tool' '\(src)/usr/bin/tool-link'
            ln -s /usr/bin/tool '\(src)/abs-link'
            ln -s dangling '\(src)/dangling'
            mkfifo '\(src)/fifo'
            mknod '\(src)/null' c 1 3
            chown 1234:5678 '\(src)/etc/os-release'
            setfattr -n user.note -v berth '\(src)/etc/os-release'
            setcap cap_net_raw+ep '\(src)/usr/bin/tool' 2>/dev/null || setfattr -n security.capability -v 0sAQAAAgAgAAAAAAAAAAAAAAAAAAA= '\(src)/usr/bin/tool'
            setfacl -m u:1000:rwx,u:4242:r '\(src)/shared' && setfacl -d -m g:100:rx '\(src)/shared'
            truncate -s 64M '\(src)/sparse' && echo tail >> '\(src)/sparse'
            chmod 1777 '\(src)/shared'
            echo latin1 > "\(src)/$(printf 'caf\\351')"
            touch -h -d '2001-02-03 04:05:06.789' '\(src)/abs-link' '\(src)/usr/bin'
            """)
        #expect(made.status == 0, "\(made)")
        let result = try berth(["import", "-q", src, "copy"], store: tmp)
        #expect(result.status == 0, "\(result)")
        try expectSameTree(tmp.appending("store/copy"), FilePath(src))
        let acl = try shell("getfacl -pn '\(tmp.appending("store/copy/shared").string)'").stdout
        #expect(acl.contains("user:1000:rwx") && acl.contains("default:group:100:r-x"), "\(acl)")
        // The sparse file stays sparse.
        #expect(try FileStatus.of(tmp.appending("store/copy/sparse"))!.blocks < 1024)

        // A tarball from `tar --acls` carries ACLs as text, not attributes: they arrive all the same.
        let aclTar = tmp.appending("acls.tar").string
        #expect(try shell("tar --acls --xattrs --xattrs-include='*' -cf '\(aclTar)' -C '\(src)' .").status == 0)
        #expect(try shell("tar --acls -tvvf '\(aclTar)' | grep -q 'user:4242:r--'").status == 0)
        #expect(try berth(["import", "-q", aclTar, "from-tar"], store: tmp).status == 0)
        try expectSameTree(tmp.appending("store/from-tar"), FilePath(src))

        // Export and import again: ACLs and capabilities travel through the tarball.
        let file = tmp.appending("copy.tar.xz").string
        #expect(try berth(["export", "copy", file], store: tmp).status == 0)
        #expect(try berth(["import", "-q", file, "again"], store: tmp).status == 0)
        try expectSameTree(tmp.appending("store/again"), FilePath(src))
        // A name that is not UTF-8 keeps its bytes all the way.
        #expect(try shell("test \"$(cat '\(tmp.string)/store/again/'\"$(printf 'caf\\351')\")\" = latin1").status == 0)
    }

    @Test func unwrapsATarballOfOneDirectory() throws {
        let tmp = try TemporaryDirectory("unwrap")
        let archive = tmp.appending("wrapped.tar.gz")
        try TarBuilder().add(.directory("rootfs")).add(.directory("rootfs/etc"))
            .add(.file("rootfs/etc/os-release", "ID=test\n")).add(.directory("rootfs/usr"))
            .write(to: archive, compression: .gzip)
        let result = try berth(["import", archive.string], store: tmp)
        #expect(result.status == 0, "\(result)")
        #expect(result.stdout.contains("unwrapped"), "\(result)")
        #expect(try readFile(tmp.appending("store/wrapped/etc/os-release")) == Array("ID=test\n".utf8))
        try expectStore(tmp, holds: ["wrapped"])
    }

    @Test func verifyChecksTheTarballsBytes() throws {
        let tmp = try TemporaryDirectory("verify")
        let digest = try shell("sha256sum '\(Fixtures.busybox)' | cut -d' ' -f1").stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(try berth(["import", "-q", "--verify", "sha256:\(digest)", Fixtures.busybox, "good"], store: tmp).status == 0)
        let wrong = String(digest.reversed())
        expectCleanFailure(try berth(["import", "-q", "--verify", "sha256:\(wrong)", Fixtures.busybox, "bad"], store: tmp),
                           "not the \(wrong) that --verify expects")
        try expectStore(tmp, holds: ["good"])
    }

    @Test func forceReplacesOnlyAFinishedImage() throws {
        let tmp = try TemporaryDirectory("force")
        #expect(try berth(["import", "-q", Fixtures.busybox, "bb"], store: tmp).status == 0)
        let before = try manifest(tmp.appending("store/bb"))
        let garbage = tmp.appending("garbage.tar")
        try writeFile(garbage, (0..<10000).map { _ in UInt8.random(in: 0...255) })
        expectCleanFailure(try berth(["import", "-q", "--force", garbage.string, "bb"], store: tmp), "not a valid tar archive")
        #expect(try manifest(tmp.appending("store/bb")) == before)
        expectCleanFailure(try berth(["import", "-q", Fixtures.busybox, "bb"], store: tmp), "already exists; pass --force")

        let other = tmp.appending("other.tar")
        try TarBuilder().add(.directory("etc")).add(.file("etc/os-release", "ID=other\n")).write(to: other)
        #expect(try berth(["import", "-q", "--force", other.string, "bb"], store: tmp).status == 0)
        #expect(try readFile(tmp.appending("store/bb/etc/os-release")) == Array("ID=other\n".utf8))
        try expectStore(tmp, holds: ["bb"])
    }

    @Test func concurrentImportsToOneNameLetOneWin() throws {
        for round in 0..<4 {
            let tmp = try TemporaryDirectory("race\(round)")
            // A store that does not exist is an error, not an empty listing (issue 13).
            expectCleanFailure(try berth(["list"], store: tmp), "no store at")
            let processes = (0..<2).map { _ in
                let p = Process()
                p.executableURL = URL(fileURLWithPath: berthBinary)
                p.arguments = ["--store", tmp.appending("store").string, "import", "-q", Fixtures.busybox, "same"]
                p.standardError = FileHandle.nullDevice
                return p
            }
            try processes.forEach { try $0.run() }
            processes.forEach { $0.waitUntilExit() }
            #expect(processes.filter { $0.terminationStatus == 0 }.count == 1)
            try expectStore(tmp, holds: ["same"])
        }
    }

    @Test(arguments: [
        (["import", "-q", "/nonexistent/x.tar", "x"], "does not exist"),
        (["import", "-q", "/etc/hostname", ".hidden"], "cannot start with '.'"),
        (["import", "-q", "/etc/hostname", "a/b"], "may hold only letters"),
        (["import", "-q", "/etc/hostname", String(repeating: "n", count: 65)], "longer than 64"),
        (["import", "-q", "-"], "give a NAME"),
        (["import", "-q", "--verify", "md5:abc", "/etc/hostname", "x"], "--verify takes sha256:"),
        (["import", "-q", "/etc/hostname", "x"], "not a valid tar archive"),
        (["import", "-q", "/dev/null", "x"], "it is empty"),
        (["export", "nothing", "/tmp/x.tar"], "no image 'nothing'"),
        (["remove", "nothing"], "no image 'nothing'"),
        (["rename", "nothing", "other"], "no image 'nothing'"),
        (["show", "nothing"], "no image 'nothing'"),
        (["read-only", "nothing", "maybe"], "true or false"),
        // run is the default subcommand with its options first (`berth -D DIR ls`); a leading
        // word that is no subcommand is named as an unknown command (issue 13).
        (["frobnicate"], "unknown command 'frobnicate'"),
        (["import", "--bogus"], "berth --help"),
    ] as [([String], String)])
    func badInputGetsOneLine(_ arguments: [String], _ expected: String) throws {
        let tmp = try TemporaryDirectory("bad")
        #expect(try berth(["import", "-q", Fixtures.busybox, "keep"], store: tmp).status == 0)
        let before = try manifest(tmp.appending("store/keep"))
        expectCleanFailure(try berth(arguments, store: tmp), expected)
        try expectStore(tmp, holds: ["keep"])
        #expect(try manifest(tmp.appending("store/keep")) == before)
    }

    @Test func badNameIsRefusedBeforeAnyWork() throws {
        let tmp = try TemporaryDirectory("early")
        expectCleanFailure(try berth(["import", "-q", Fixtures.debianZstd, "-x"], store: tmp), "Unknown option '-x'")
        expectCleanFailure(try berth(["import", "-q", Fixtures.debianZstd, "bad name"], store: tmp), "may hold only")
        // Not even the store was made.
        #expect(try FileStatus.of(tmp.appending("store")) == nil)
    }

    @Test func exportNeedsAKnownSuffixAndLeavesNoPartialFile() throws {
        let tmp = try TemporaryDirectory("export")
        #expect(try berth(["import", "-q", Fixtures.busybox, "bb"], store: tmp).status == 0)
        expectCleanFailure(try berth(["export", "bb", tmp.appending("bb.zip").string], store: tmp), "cannot tell the compression")
        expectCleanFailure(try berth(["export", "bb", "/nonexistent-dir/bb.tar"], store: tmp), "cannot export")
        #expect(try Directory(opening: tmp.path).entryNames().map(\.string) == ["store"])
        let out = tmp.appending("bb.tar.bz2").string
        #expect(try berth(["export", "bb", out], store: tmp).status == 0)
        let listed = try shell("tar -tjf '\(out)' | head -3").stdout
        #expect(listed.hasPrefix("./\n"), "\(listed)")
    }

    @Test func progressShowsOnATerminalOnly() throws {
        let tmp = try TemporaryDirectory("progress")
        let store = tmp.appending("store").string
        let onTerminal = try shell("script -qec \"'\(berthBinary)' --store '\(store)' import '\(Fixtures.debianZstd)' deb\" /dev/null")
        #expect(onTerminal.status == 0, "\(onTerminal)")
        #expect(onTerminal.stdout.contains("entries") && onTerminal.stdout.contains("%"), "\(onTerminal)")
        let piped = try berth(["import", Fixtures.busybox, "bb"], store: tmp)
        #expect(piped.status == 0)
        #expect(!piped.stdout.contains("\r") && piped.stdout.split(separator: "\n").count == 1, "\(piped)")
    }
}
