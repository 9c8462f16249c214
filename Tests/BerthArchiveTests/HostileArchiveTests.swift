import BerthArchive
import BerthSystem
import BerthTestSupport
import Glibc
import SystemPackage
import Testing

/// Extracts `archive` into `root` the way an import does.
@discardableResult
func extract(_ archive: FilePath, into root: FilePath, limits: ExtractionLimits = .standard) throws -> Extractor {
    let stream = try DecompressedStream(input: Descriptor.open(archive, O_RDONLY), sourceName: archive.string, hashing: false)
    defer { stream.cancel() }
    let extractor = Extractor(into: try Directory(opening: root), limits: limits)
    try extractor.extract(from: ArchiveReader.tar(from: stream), input: stream)
    _ = try stream.finish()
    return extractor
}

/// One hostile or odd archive and what must come of it.
struct HostileCase: CustomStringConvertible, Sendable {
    enum Outcome: Sendable {
        case fails(String)
        /// Succeeds, and the check (given the image root) holds.
        case succeeds(@Sendable (FilePath) throws -> Bool)
    }

    var description: String
    /// Writes the archive (first argument); the second is the absolute path of a directory
    /// beside the image root, which must come out untouched.
    var build: @Sendable (FilePath, String) throws -> Void
    var outcome: Outcome

    init(description: String, build: @escaping @Sendable (FilePath, String) throws -> Void, outcome: Outcome) {
        self.description = description
        self.build = build
        self.outcome = outcome
    }

    /// A case whose archive holds `members`.
    init(description: String, members: @escaping @Sendable (String) -> [TarBuilder.Member], outcome: Outcome) {
        self.init(description: description, build: { archive, outside in
            let builder = TarBuilder()
            members(outside).forEach { builder.add($0) }
            try builder.write(to: archive)
        }, outcome: outcome)
    }
}

private func kind(_ path: FilePath) throws -> FileStatus.Kind? {
    let parent = try Directory(opening: path.removingLastComponent())
    return try parent.status(FilePath(root: nil, [path.lastComponent!]))?.kind
}

private func text(_ path: FilePath) throws -> String { String(decoding: try readFile(path), as: UTF8.self) }

let hostileCases: [HostileCase] = [
    HostileCase(description: "a '..' member", members: { _ in [.file("../outside/evil", "x")] },
                outcome: .fails("contains '..'")),
    HostileCase(description: "'..' inside a path", members: { _ in [.directory("a"), .file("a/../../outside/evil", "x")] },
                outcome: .fails("contains '..'")),
    HostileCase(description: "an absolute member lands inside", members: { outside in [.file(outside + "/evil", "x")] },
                outcome: .succeeds { root in
                    let inside = root.appending(String(root.removingLastComponent().appending("outside/evil").string.dropFirst()))
                    return try text(inside) == "x"
                }),
    HostileCase(description: "writing through a symlink to outside",
                members: { outside in [.symlink("link", target: outside), .file("link/evil", "x")] },
                outcome: .fails("'link' in its path is a symlink")),
    HostileCase(description: "writing through a relative symlink out",
                members: { _ in [.symlink("up", target: "../outside"), .file("up/evil", "x")] },
                outcome: .fails("is a symlink")),
    HostileCase(description: "a hard link to a file outside by '..'",
                members: { _ in [.hardLink("h", target: "../outside/secret")] },
                outcome: .fails("contains '..'")),
    HostileCase(description: "a hard link to an absolute host file",
                members: { outside in [.hardLink("h", target: outside + "/secret")] },
                outcome: .fails("cannot be reached: 'tmp' does not exist in the image")),
    HostileCase(description: "a hard link to a member not yet extracted",
                members: { _ in [.hardLink("h", target: "later"), .file("later", "x")] },
                outcome: .fails("is not in the archive before it")),
    HostileCase(description: "a hard link through a symlink",
                members: { outside in [.symlink("l", target: outside), .hardLink("h", target: "l/secret")] },
                outcome: .fails("cannot be reached: 'l' in its path is a symlink")),
    HostileCase(description: "a hard link inside the image",
                members: { _ in [.file("a", "data"), .hardLink("b", target: "a")] },
                outcome: .succeeds { root in
                    let dir = try Directory(opening: root)
                    return try dir.status("a")!.inode == dir.status("b")!.inode
                }),
    HostileCase(description: "a directory replaced by a file",
                members: { _ in [.directory("d"), .file("d/x", "1"), .file("d", "2")] },
                outcome: .fails("would replace the non-empty directory 'd'")),
    HostileCase(description: "an empty directory replaced by a file",
                members: { _ in [.directory("e"), .file("e", "2")] },
                outcome: .succeeds { root in try text(root.appending("e")) == "2" }),
    HostileCase(description: "a file replaced by a directory",
                members: { _ in [.file("f", "1"), .directory("f"), .file("f/x", "2")] },
                outcome: .succeeds { root in try text(root.appending("f/x")) == "2" }),
    HostileCase(description: "a symlink to outside replaced by a file",
                members: { outside in [.symlink("s", target: outside + "/secret"), .file("s", "mine")] },
                outcome: .succeeds { root in try kind(root.appending("s")) == .regular && text(root.appending("s")) == "mine" }),
    HostileCase(description: "a symlink loop written through",
                members: { _ in [.symlink("a", target: "b"), .symlink("b", target: "a"), .file("a/x", "1")] },
                outcome: .fails("is a symlink")),
    HostileCase(description: "symlinks are stored as they are",
                members: { _ in [.symlink("abs", target: "/etc/passwd"), .symlink("loop", target: "loop")] },
                outcome: .succeeds { root in
                    let dir = try Directory(opening: root)
                    return try dir.readLink("abs") == "/etc/passwd" && dir.readLink("loop") == "loop"
                }),
    HostileCase(description: "an over-long name",
                members: { _ in [.file(String(repeating: "n", count: 300), "x")] },
                outcome: .fails("name too long")),
    HostileCase(description: "a path longer than PATH_MAX is made one directory at a time",
                members: { _ in [.file(Array(repeating: String(repeating: "p", count: 200), count: 30).joined(separator: "/"), "deep")] },
                outcome: .succeeds { root in
                    var dir = try Directory(opening: root)
                    for _ in 0..<29 { dir = try dir.openDirectory(beneath: FilePath(String(repeating: "p", count: 200))) }
                    let file = try dir.openFile(FilePath(String(repeating: "p", count: 200)), O_RDONLY)
                    return try file.status().size == 4
                }),
    HostileCase(description: "overlayfs attributes are not applied",
                members: { _ in [.file("o", "x", xattrs: [("trusted.overlay.redirect", Array("/etc".utf8)), ("user.overlay.opaque", [0x79]), ("user.kept", [0x31])])] },
                outcome: .succeeds { root in
                    let names = try Directory(opening: root).extendedAttributeNames(of: "o")
                    return names == ["user.kept"]
                }),
    HostileCase(description: "device nodes and FIFOs",
                members: { _ in [.device("null", major: 1, minor: 3, block: false), .device("disk", major: 8, minor: 0, block: true), .fifo("pipe")] },
                outcome: .succeeds { root in
                    let dir = try Directory(opening: root)
                    let null = try dir.status("null")!
                    let disk = try dir.status("disk")!, pipe = try dir.status("pipe")!
                    return null.kind == .characterDevice && null.deviceMajor == 1 && null.deviceMinor == 3
                        && disk.kind == .blockDevice && pipe.kind == .fifo
                }),
    HostileCase(description: "a sparse entry claiming a huge size",
                build: { archive, _ in
                    // GNU tar writes a 1 TiB sparse file as a few bytes of map and data.
                    let dir = archive.removingLastComponent().string
                    let made = try shell("cd '\(dir)' && mkdir sparse && truncate -s 1T sparse/huge && echo end >> sparse/huge && tar --sparse -cf '\(archive.string)' -C sparse huge && rm -rf sparse")
                    guard made.status == 0 else { throw ArchiveBuildError.failed }
                },
                outcome: .fails("past its limit")),
    HostileCase(description: "data cut short",
                build: { archive, _ in
                    try TarBuilder().add(.file("short", String(repeating: "d", count: 8192))).write(to: archive)
                    try writeFile(archive, Array(try readFile(archive).prefix(4096)))
                },
                outcome: .fails("short")),
    HostileCase(description: "a member given twice keeps the last",
                members: { _ in [.file("twice", "first"), .file("twice", "second")] },
                outcome: .succeeds { root in try text(root.appending("twice")) == "second" }),
    HostileCase(description: "an archive that starts with a zero block holds no members",
                build: { archive, _ in try writeFile(archive, [UInt8](repeating: 0, count: 10240) + Array("not a tar".utf8)) },
                outcome: .fails("holds no tar members")),
    HostileCase(description: "a name with escape sequences and a newline is escaped in the error",
                members: { _ in [.file("\u{1B}]0;pwned\u{07}\u{9B}2J\n/../x", "x")] },
                outcome: .fails("'\\x1b]0;pwned\\x07\\u{9b}2J\\x0a/../x'")),
    HostileCase(description: "the root's own mode comes from '.'",
                members: { _ in [.directory(".", mode: 0o750), .file("x", "1")] },
                outcome: .succeeds { root in try Directory(opening: root).descriptor.status().permissions == 0o750 }),
]

@Suite struct HostileArchiveTests {
    @Test(arguments: hostileCases)
    func hostileArchive(_ c: HostileCase) throws {
        let tmp = try TemporaryDirectory("hostile")
        let root = tmp.appending("root"), outside = tmp.appending("outside")
        #expect(mkdir(root.string, 0o755) == 0 && mkdir(outside.string, 0o755) == 0)
        try writeFile(outside.appending("secret"), "secret")
        let archive = tmp.appending("a.tar")
        try c.build(archive, outside.string)

        switch c.outcome {
        case .fails(let expected):
            let error = #expect(throws: ArchiveError.self) { try extract(archive, into: root) }
            #expect(error?.message.contains(expected) == true, "\(error?.message ?? "no error")")
        case .succeeds(let check):
            try extract(archive, into: root)
            #expect(try check(root))
        }
        // Nothing outside the image changed, whatever happened inside it.
        #expect(try Directory(opening: outside).entryNames() == ["secret"])
        #expect(try text(outside.appending("secret")) == "secret")
        #expect(try Set(Directory(opening: tmp.path).entryNames()) == ["root", "outside", "a.tar"])
    }

    @Test func directoriesAndEntriesCountAgainstTheLimits() throws {
        let tmp = try TemporaryDirectory("dirbomb")
        let archive = tmp.appending("dirs.tar")
        let builder = TarBuilder()
        for i in 0..<1000 { builder.add(.directory("d\(i)")) }
        try builder.write(to: archive)
        for (limits, expected) in [(ExtractionLimits(maxBytes: 1 << 20), "past its limit of 1048576 bytes"),
                                   (ExtractionLimits(maxBytes: 1 << 30, maxEntries: 100), "limit of 100 entries")] {
            let root = tmp.appending("root")
            #expect(mkdir(root.string, 0o755) == 0)
            let error = #expect(throws: ArchiveError.self) { try extract(archive, into: root, limits: limits) }
            #expect(error?.message.contains(expected) == true, "\(error?.message ?? "")")
            #expect(try shell("rm -rf '\(root.string)'").status == 0)
        }
    }

    @Test func decompressionBombStopsAtTheLimit() throws {
        let tmp = try TemporaryDirectory("bomb")
        let archive = tmp.appending("bomb.tar.zst")
        try TarBuilder().add(.zeros("a", size: 96 << 20)).add(.zeros("b", size: 96 << 20)).write(to: archive, compression: .zstd)
        #expect(try FileStatus.of(archive)!.size < 1 << 20)
        let root = tmp.appending("root")
        #expect(mkdir(root.string, 0o755) == 0)
        let error = #expect(throws: ArchiveError.self) {
            try extract(archive, into: root, limits: ExtractionLimits(maxBytes: 128 << 20))
        }
        #expect(error?.message.contains("member 'b'") == true, "\(error?.message ?? "")")
    }
}
