import BerthArchive
import BerthSystem
import BerthTestSupport
import Foundation
import Glibc
import SystemPackage
import Testing

/// An archive of `depth` directories, each inside the last, and a file at the bottom.
private func deepArchive(_ path: FilePath, depth: Int) throws {
    let builder = TarBuilder()
    var name = ""
    for _ in 0..<depth {
        name += name.isEmpty ? "d" : "/d"
        builder.add(.directory(name))
    }
    builder.add(.file(name + "/leaf", "bottom"))
    try builder.write(to: path, compression: .gzip)
}

/// Makes `depth` nested directories `d` below `path`, one level at a time (deeper than PATH_MAX).
private func nest(_ path: FilePath, depth: Int) throws {
    var dir = try Directory(opening: path)
    for _ in 0..<depth {
        try dir.makeDirectory("d", mode: 0o755)
        dir = try dir.openDirectory(beneath: "d")
    }
}

/// Findings 11, 12 and 13: deep trees, limits, and names that reach the terminal.
@Suite struct StoreLimitTests {
    @Test func aDeepTreeDoesNotCrashTheStore() throws {
        let tmp = try TemporaryDirectory("deep")
        let archive = tmp.appending("deep.tar.gz")
        try deepArchive(archive, depth: 17_500)
        #expect(try FileStatus.of(archive)!.size < 2 << 20)
        #expect(try berth(["import", "-q", Fixtures.busybox, "bb"], store: tmp).status == 0)
        let imported = try berth(["import", "-q", archive.string, "deep"], store: tmp)
        #expect(imported.status == 0, "\(imported)")

        for command in [["list"], ["show", "deep"], ["gc"], ["clone", "deep", "deep2"], ["list", "--json"],
                        ["export", "deep2", tmp.appending("out.tar").string]] {
            let result = try berth(command, store: tmp)
            #expect(result.status == 0, "\(command): \(result)")
        }
        #expect(try listedNames(tmp) == ["bb", "deep", "deep2"])
        // The export holds the whole depth: its last member is the file at the bottom.
        let members = try shell("tar -tf '\(tmp.appending("out.tar").string)' | tail -1")
        #expect(members.stdout.hasSuffix("/d/leaf\n") && members.stdout.count > 2 * 17_500, "\(members.stdout.prefix(80))")

        // A container's own layer nested as deep (20,000 mkdirs) leaves the store usable too.
        let record = String(decoding: try readFile(tmp.appending("store/.berth/images/deep2/image")), as: UTF8.self)
        let upper = record.split(separator: "\n").first { $0.hasPrefix("upper=") }!.dropFirst(6)
        try nest(tmp.appending("store/.berth/layers/\(upper)"), depth: 20_000)
        for command in [["list"], ["gc"], ["remove", "deep", "deep2"], ["gc"]] {
            let result = try berth(command, store: tmp)
            #expect(result.status == 0, "\(command): \(result)")
        }
        #expect(try listedNames(tmp) == ["bb"])
        #expect(try inImage("bb", "echo alive", store: tmp).stdout == "alive\n")
        try expectConsistentAfterGC(tmp)
    }

    @Test func aContainerNestingDirectoriesDoesNotCrashTheStore() throws {
        let tmp = try TemporaryDirectory("nest")
        #expect(try berth(["import", "-q", Fixtures.busybox, "bb"], store: tmp).status == 0)
        #expect(try berth(["clone", "bb", "c"], store: tmp).status == 0)
        // 20,000 nested directories inside the container, in its own writable layer. (busybox's cd
        // stops at PATH_MAX, so the chain grows at its top: each round moves it one level down.)
        let script = "cd / && mkdir d && i=1; while [ $i -lt 20000 ]; do mkdir t && mv d t/d && mv t d || exit 1; i=$((i+1)); done; echo done"
        let made = try inImage("c", script, store: tmp)
        #expect(made.stdout == "done\n", "\(made)")
        for command in [["list"], ["show", "c"], ["snapshot", "c", "s"], ["gc"], ["remove", "c", "s"], ["gc"]] {
            let result = try berth(command, store: tmp)
            #expect(result.status == 0, "\(command): \(result)")
        }
        #expect(try listedNames(tmp) == ["bb"])
        try expectConsistentAfterGC(tmp)
    }

    @Test func entriesAreLimitedAndDirectoriesCountAgainstMaxSize() throws {
        let tmp = try TemporaryDirectory("limits")
        let archive = tmp.appending("dirs.tar")
        let builder = TarBuilder()
        for i in 0..<3000 { builder.add(.directory("dir\(i)")) }
        try builder.write(to: archive)

        let entries = try berth(["import", "-q", "--max-entries", "1000", archive.string, "many"], store: tmp)
        expectCleanFailure(entries, "past the import's limit of 1000 entries; --max-entries raises it")
        try expectStore(tmp, holds: [])
        // 3,000 empty directories are 12 MB on disk: past --max-size 10M, though they hold no data.
        let size = try berth(["import", "-q", "--max-size", "10M", archive.string, "many"], store: tmp)
        expectCleanFailure(size, "past its limit of 10485760 bytes")
        try expectStore(tmp, holds: [])
        #expect(try berth(["import", "-q", "--max-size", "20M", archive.string, "many"], store: tmp).status == 0)
        try expectStore(tmp, holds: ["many"])
    }

    @Test func whatIsNoTarballIsRefusedAtOnce() throws {
        let tmp = try TemporaryDirectory("notar")
        // An ISO image starts with 32 KiB of zeros; an empty tarball is all zeros.
        let iso = tmp.appending("disk.iso")
        #expect(try shell("{ head -c 32768 /dev/zero; head -c 65536 /dev/urandom; } > '\(iso.string)'").status == 0)
        expectCleanFailure(try berth(["import", iso.string, "iso"], store: tmp), "holds no tar members")
        let empty = tmp.appending("empty.tar")
        #expect(try shell("tar -cf '\(empty.string)' -T /dev/null").status == 0)
        expectCleanFailure(try berth(["import", empty.string, "empty"], store: tmp), "holds no tar members")
        // /dev/zero never ends: refused at its first block, named or as standard input.
        let started = monotonicSeconds()
        let device = try shell("timeout 60 '\(berthBinary)' --store '\(tmp.appending("store").string)' import /dev/zero zero")
        expectCleanFailure(device, "holds no tar members")
        // A disk is no stream of members at all.
        if let disk = try shell("ls /dev/loop0 /dev/sda /dev/vda 2>/dev/null | head -1").stdout.split(separator: "\n").first {
            expectCleanFailure(try berth(["import", String(disk), "disk"], store: tmp), "is a block device")
        }
        expectCleanFailure(try berth(["import", "-", "zero"], store: tmp, input: "/dev/zero"), "holds no tar members")
        #expect(monotonicSeconds() - started < 30)
        try expectStore(tmp, holds: [])
    }

    @Test func namesReachTheTerminalEscaped() throws {
        let tmp = try TemporaryDirectory("names")
        // An archive whose member name retitles and clears the terminal, and breaks the line.
        let archive = tmp.appending("evil.tar")
        try TarBuilder().add(.file("\u{1B}]0;pwned\u{07}\u{1B}[2J\nline/../x", "x")).write(to: archive)
        let failed = try berth(["import", archive.string, "evil"], store: tmp)
        expectCleanFailure(failed, "\\x1b]0;pwned\\x07\\x1b[2J\\x0aline/../x")
        #expect(!failed.stderr.utf8.contains(0x1B) && !failed.stderr.utf8.contains(0x07))

        // Directories another tool left in the store, with a control sequence, C1 and a byte that is not UTF-8.
        #expect(try berth(["import", "-q", Fixtures.busybox, "bb"], store: tmp).status == 0)
        let hostile = "e\u{1B}[31mvil\u{9B}2J"
        #expect(mkdir(tmp.appending("store").appending(hostile).string, 0o755) == 0)
        #expect(try shell("mkdir \"\(tmp.appending("store").string)/$(printf 'bad\\377name')\"").status == 0)
        let table = try berth(["list"], store: tmp)
        #expect(table.status == 0, "\(table)")
        #expect(table.stdout.contains("e\\x1b[31mvil\\u{9b}2J") && table.stdout.contains("bad\\xffname"), "\(table)")
        #expect(!table.stdout.unicodeScalars.contains { $0.value < 0x20 && $0 != "\n" || (0x7F...0x9F).contains($0.value) })
        let json = try berth(["list", "--json"], store: tmp)
        #expect(!json.stdout.unicodeScalars.contains { $0.value < 0x20 && $0 != "\n" || (0x7F...0x9F).contains($0.value) })
        let records = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [[String: Any]] ?? []
        #expect(Set(records.compactMap { $0["name"] as? String }) == ["bb", hostile, "bad\\xffname"], "\(json.stdout)")

        // A name on the command line with a newline and an escape: one line back.
        expectCleanFailure(try berth(["show", "a\nb\u{1B}[2J"], store: tmp), "'a\\x0ab\\x1b[2J'")
    }
}
