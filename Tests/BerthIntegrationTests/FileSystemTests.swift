import BerthSystem
import BerthTestSupport
import Foundation
import SystemPackage
import Testing

/// Layered images on each file system overlayfs stacks on: the store is put on a fresh ext4,
/// xfs or btrfs made on a loop device, so what issue 4 promises "on any filesystem" is shown on
/// each, whatever file system /tmp happens to be.
@Suite(.serialized) struct FileSystemTests {
    @Test(arguments: ["ext4", "xfs", "btrfs"])
    func clonesSnapshotsAndBootsWorkOn(_ type: String) throws {
        let host = try TemporaryDirectory("fs-\(type)")
        let mountPoint = host.appending("fs")
        let made = try shell("""
            truncate -s 1G '\(host.string)/disk.img' && \(Self.mkfs[type]!) '\(host.string)/disk.img' >/dev/null && \
            mkdir '\(mountPoint.string)' && mount -o loop '\(host.string)/disk.img' '\(mountPoint.string)'
            """)
        try #require(made.status == 0, "\(made)")
        // mount(8) set the loop device to detach itself when this is unmounted.
        defer { _ = try? shell("umount '\(mountPoint.string)' || umount -l '\(mountPoint.string)'") }
        let mounted = try shell("findmnt -n -o FSTYPE '\(mountPoint.string)'")
        try #require(mounted.stdout == "\(type)\n", "\(mounted)")

        try exercise(TemporaryDirectory("store", base: mountPoint.string), on: mountPoint)
        // Nothing berth mounted is left below the file system, and the test's store is gone.
        #expect(mounts(under: host.string) == [mountPoint.string])
    }

    static let mkfs = ["ext4": "mkfs.ext4 -q -F", "xfs": "mkfs.xfs -q -f", "btrfs": "mkfs.btrfs -q -f"]

    /// The store at `tmp`/store, on the file system mounted at `mountPoint`.
    func exercise(_ tmp: TemporaryDirectory, on mountPoint: FilePath) throws {
        let imported = try berth(["import", "-q", Fixtures.debianZstd, "deb"], store: tmp)
        try #require(imported.status == 0, "\(imported)")
        _ = try installBootProbe(in: tmp.appending("store/deb"), action: "poweroff")

        // Constant size: ten clones of the 200 MB image take what the file system says they take.
        let before = try usedKiB(mountPoint)
        for i in 0..<10 { #expect(try berth(["clone", "deb", "c\(i)"], store: tmp).status == 0) }
        let perClone = (try usedKiB(mountPoint) - before) / 10
        #expect(perClone < 1024, "a clone took \(perClone) KiB")
        #expect(try berth(["remove"] + (1..<10).map { "c\($0)" }, store: tmp).status == 0)

        // Isolation both ways: the source was turned into a layer, and each has its own upper.
        #expect(try inImage("c0", "echo c > /etc/from-c", store: tmp).status == 0)
        #expect(try inImage("deb", "echo deb > /etc/from-deb; test ! -e /etc/from-c", store: tmp).status == 0)
        #expect(try inImage("c0", "test ! -e /etc/from-deb && cat /etc/from-c", store: tmp).stdout == "c\n")

        // A snapshot keeps its content; restore brings it back exactly, across a file added,
        // one removed, a directory tree removed (an opaque whiteout) and a mode changed.
        #expect(try berth(["snapshot", "c0", "s"], store: tmp).status == 0)
        let atSnapshot = try listing("c0", store: tmp)
        let change = "rm /etc/from-c && echo later > /etc/later && rm -r /usr/share/doc && chmod 600 /etc/hostname"
        #expect(try inImage("c0", change, store: tmp).status == 0)
        #expect(try listing("c0", store: tmp) != atSnapshot)
        #expect(try listing("s", store: tmp) == atSnapshot)
        #expect(try berth(["restore", "c0", "s"], store: tmp).status == 0)
        #expect(try listing("c0", store: tmp) == atSnapshot)

        try bootAndProbe(["run", "-q", "-b", "-M", "c0"], store: tmp)

        #expect(try berth(["remove", "c0", "s"], store: tmp).status == 0)
        try expectConsistentAfterGC(tmp)
        #expect(try listedNames(tmp) == ["deb"])
    }

    /// Every entry of the image's tree with its type, mode, owner, size and link target, as the
    /// container sees it, digested.
    func listing(_ name: String, store: TemporaryDirectory) throws -> String {
        let script = #"find / -xdev -printf '%p %y %m %U %G %s %l\n' | LC_ALL=C sort | sha256sum"#
        let result = try inImage(name, script, store: store)
        #expect(result.status == 0 && result.stdout.count == 68, "\(result)")
        return result.stdout
    }

    /// What the file system holds in all, once everything written is on it.
    func usedKiB(_ mountPoint: FilePath) throws -> Int {
        let result = try shell("sync -f '\(mountPoint.string)' && df --output=used -k '\(mountPoint.string)' | tail -1")
        return Int(result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? Int.max
    }
}
