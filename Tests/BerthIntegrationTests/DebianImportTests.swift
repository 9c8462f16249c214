import BerthSystem
import BerthTestSupport
import Foundation
import SystemPackage
import Testing

/// The proof of import: a real Debian bookworm root made by mmdebstrap comes out of berth
/// exactly as GNU tar extracts it, and export and re-import keep it so.
@Suite(.serialized) struct DebianImportTests {
    @Test func importMatchesGNUTarEntryByEntry() throws {
        let tmp = try TemporaryDirectory("debian")
        let reference = tmp.appending("reference")
        try FileManager.default.createDirectory(atPath: reference.string, withIntermediateDirectories: false)
        let tar = try shell("tar --zstd --xattrs --xattrs-include='*' -xpf '\(Fixtures.debianZstd)' -C '\(reference.string)'")
        #expect(tar.status == 0, "\(tar)")

        let imported = try berth(["import", "-q", Fixtures.debianZstd, "deb"], store: tmp)
        #expect(imported.status == 0, "\(imported)")
        let image = tmp.appending("store/deb")
        try expectSameTree(image, reference)

        // What makes the comparison meaningful: the tree has what a root file system needs.
        let m = try manifest(image)
        #expect(m.entries["usr/bin/ping"]?.attributes["security.capability"] != nil)
        #expect(m.entries["usr/bin/passwd"].map { $0.permissions & 0o4000 != 0 } == true)
        #expect(m.entries["dev/null"]?.kind == .characterDevice)
        #expect(m.entries["tmp"]?.permissions == 0o1777)
        #expect(m.entries["bin"]?.linkTarget == "usr/bin")
        #expect(m.entries.values.contains { $0.inodeGroup != nil })
        #expect(m.entries.count > 5000)

        // A directory image is what machinectl keeps: systemd-nspawn runs it as it is.
        let nspawn = try shell("systemd-nspawn --register=no --keep-unit -q -D '\(image.string)' /usr/bin/cat /etc/os-release")
        #expect(nspawn.status == 0 && nspawn.stdout.contains("bookworm"), "\(nspawn)")
    }

    @Test func exportAndReimportKeepTheTree() throws {
        let tmp = try TemporaryDirectory("export")
        #expect(try berth(["import", "-q", Fixtures.debianZstd, "deb"], store: tmp).status == 0)
        // xz is left to the busybox tests: at its default level it takes a minute on this tree.
        let magic: [String: [UInt8]] = ["tar": [], "tar.gz": [0x1f, 0x8b], "tar.zst": [0x28, 0xb5, 0x2f, 0xfd]]
        for suffix in ["tar", "tar.gz", "tar.zst"] {
            let file = tmp.appending("deb.\(suffix)").string
            let exported = try berth(["export", "deb", file], store: tmp)
            #expect(exported.status == 0, "\(exported)")
            let head = try readFile(FilePath(file)).prefix(4)
            #expect(head.starts(with: magic[suffix]!), "\(suffix): \(Array(head))")
            let again = try berth(["import", "-q", file, "again"], store: tmp)
            #expect(again.status == 0, "\(again)")
            try expectSameTree(tmp.appending("store/again"), tmp.appending("store/deb"))
            #expect(try berth(["remove", "again"], store: tmp).status == 0)
            if suffix == "tar" {
                // GNU tar reads berth's export to the same tree too.
                let out = tmp.appending("by-tar")
                try FileManager.default.createDirectory(atPath: out.string, withIntermediateDirectories: false)
                let tar = try shell("tar --xattrs --xattrs-include='*' -xpf '\(file)' -C '\(out.string)'")
                #expect(tar.status == 0, "\(tar)")
                try expectSameTree(out, tmp.appending("store/deb"))
            }
        }
        try expectStore(tmp, holds: ["deb"])
    }

    @Test func gzipTarballFromStandardInput() throws {
        let tmp = try TemporaryDirectory("stdin")
        let result = try berth(["import", "-q", "-", "deb"], store: tmp, input: Fixtures.debianGzip)
        #expect(result.status == 0, "\(result)")
        #expect(try manifest(tmp.appending("store/deb")).entries.count > 5000)
        let show = try berth(["show", "deb"], store: tmp)
        #expect(show.stdout.contains("Debian GNU/Linux 12 (bookworm)"), "\(show)")
    }

    @Test func killedImportLeavesNothingBehind() throws {
        let tmp = try TemporaryDirectory("kill")
        // Killed once its work in progress holds this many paths: as it starts staging, early in
        // the extraction, and late in it (or, on a fast machine, whenever it ended first).
        let staging = tmp.appending("store/.berth/staging").string
        for paths in [1, 500, 5000] {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: berthBinary)
            process.arguments = ["--store", tmp.appending("store").string, "import", "-q", Fixtures.debianZstd, "deb"]
            try process.run()
            waitUntil(timeout: 60) {
                guard process.isRunning else { return true }
                let count = try? shell("find '\(staging)' -mindepth 1 2>/dev/null | head -n \(paths) | wc -l")
                return Int(count?.stdout.trimmingCharacters(in: .whitespacesAndNewlines) ?? "") ?? 0 >= paths
            }
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            // Whatever the moment, the next command tidies up: no image, or the whole image.
            let list = try berth(["list", "--json"], store: tmp)
            #expect(list.status == 0, "\(list)")
            // list writes nothing since issue 13; a command that changes the store tidies.
            #expect(try berth(["gc", "-q"], store: tmp).status == 0)
            let images = try Directory(opening: tmp.appending("store")).entryNames().map(\.string).filter { !$0.hasPrefix(".") }
            if images == ["deb"] {
                let whole = try TemporaryDirectory("whole")
                #expect(try berth(["import", "-q", Fixtures.debianZstd, "deb"], store: whole).status == 0)
                try expectSameTree(tmp.appending("store/deb"), whole.appending("store/deb"))
                #expect(try berth(["remove", "deb"], store: tmp).status == 0)
            }
            try expectStore(tmp, holds: [])
        }
    }

    @Test func fullFileSystemFailsCleanly() throws {
        let tmp = try TemporaryDirectory("full")
        let store = tmp.appending("store").string
        try FileManager.default.createDirectory(atPath: store, withIntermediateDirectories: false)
        let mounted = try shell("mount -t tmpfs -o size=48m berth-test-full '\(store)'")
        #expect(mounted.status == 0, "\(mounted)")
        defer { _ = try? shell("umount '\(store)'") }
        let result = try berth(["import", "-q", Fixtures.debianZstd, "deb"], store: tmp)
        expectCleanFailure(result, "file system is full")
        try expectStore(tmp, holds: [])
        // The partial tree is gone: what is left is the store's own few directories.
        let used = Int(try shell("df --output=used -B1 '\(store)' | tail -1").stdout.trimmingCharacters(in: .whitespacesAndNewlines))
        #expect(used != nil && used! < 1 << 20, "\(String(describing: used)) bytes still used")
    }
}
