import BerthSystem
import BerthTestSupport
import Foundation
import SystemPackage
import Testing

/// Streams as tar, pv and podman keep them: data (a tarball) or the result on standard output,
/// progress and status on standard error; progress on a terminal only, checked in tmux while the
/// command runs.
extension CommandLineTests {
    /// formatSize's figure for `bytes` in MiB, as the bar prints a total: "61.7M".
    static func mebibytes(_ bytes: Int64) -> String {
        let tenths = Int((Double(bytes) / 1048576 * 10).rounded())
        return "\(tenths / 10).\(tenths % 10)M"
    }

    /// Whether the pane shows the line `NAME=STATUS` that the typed `echo NAME=$?` prints.
    static func ended(_ name: String, _ pane: String) -> Bool {
        pane.range(of: "(?m)^\(name)=[0-9]+$", options: .regularExpression) != nil
    }

    @Test func importShowsProgressOnStandardErrorWithItsTotalAndTheSync() throws {
        let tmp = try TemporaryDirectory("cli-import-bar")
        let store = tmp.appending("store").string
        let out = tmp.appending("stdout").string
        let size = try #require(try FileStatus.of(FilePath(Fixtures.debianZstd))).size
        let total = Self.mebibytes(size)
        let session = try TerminalSession(label: "import")
        defer { session.kill() }
        // Standard output goes to a file: what the pane shows came on standard error.
        try session.type("\(shellQuoted(berthBinary)) --store \(shellQuoted(store)) import \(shellQuoted(Fixtures.debianZstd)) deb > \(shellQuoted(out)); echo status=$?")
        let bar = #"\] +([0-9]+)% deb: [0-9.]+[BKM] of "# + NSRegularExpression.escapedPattern(for: total) + ", [0-9]+ entries"
        let midway = try session.wait(seconds: 60) { pane in
            pane.range(of: bar, options: .regularExpression).map { (1...99).contains(Int(pane[$0].split(separator: "%")[0].dropFirst().trimmingCharacters(in: .whitespaces))!) } ?? false
        }
        #expect(midway != nil, "no bar short of 100% with the total \(total): \((try? session.pane()) ?? "")")
        #expect(!Self.ended("status", midway ?? ""), "the bar shows while the import runs")
        let done = try #require(try session.wait(seconds: 120) { Self.ended("status", $0) }, "\((try? session.pane()) ?? "")")
        let lines = session.output(after: "echo status=", in: done)
        let full = lines.firstIndex { $0.contains("100% deb: \(total) of \(total)") }
        let sync = lines.firstIndex { $0 == "Syncing 'deb' to disk before publishing it..." }
        let status = lines.firstIndex { $0 == "status=0" }
        #expect(full != nil && sync != nil && status != nil, "\(done)")
        if let full, let sync, let status { #expect(full < sync && sync < status, "\(done)") }
        // Standard output has the result alone: no bar, no control characters.
        let result = String(decoding: try readFile(FilePath(out)), as: UTF8.self)
        #expect(result.hasPrefix("Imported 'deb': ") && result.split(separator: "\n").count == 1 && !result.contains("\r"), "\(result)")
        try expectStore(tmp, holds: ["deb"])
    }

    @Test func exportShowsProgressAndASummaryOnStandardError() throws {
        let tmp = try TemporaryDirectory("cli-export-bar")
        let store = tmp.appending("store").string
        #expect(try berth(["import", "-q", Fixtures.debianZstd, "deb"], store: tmp).status == 0)
        let tarball = tmp.appending("deb.tar.gz").string
        let out = tmp.appending("stdout").string
        let session = try TerminalSession(label: "export")
        defer { session.kill() }
        try session.type("\(shellQuoted(berthBinary)) --store \(shellQuoted(store)) export deb \(shellQuoted(tarball)) > \(shellQuoted(out)); echo status=$?")
        let bar = #"\] +([0-9]+)% deb: [0-9.]+[BKM] of 1[0-9]{2}\.[0-9]M, [0-9]+ entries, [0-9.]+[BKM]/s, [0-9]+s left"#
        let midway = try session.wait(seconds: 60) { pane in
            pane.range(of: bar, options: .regularExpression).map { (1...99).contains(Int(pane[$0].split(separator: "%")[0].dropFirst().trimmingCharacters(in: .whitespaces))!) } ?? false
        }
        #expect(midway != nil, "no export progress short of 100%: \((try? session.pane()) ?? "")")
        let done = try #require(try session.wait(seconds: 180) { Self.ended("status", $0) }, "\((try? session.pane()) ?? "")")
        let lines = session.output(after: "echo status=", in: done)
        #expect(lines.contains { $0.hasPrefix("Syncing \(tarball) to disk") }, "\(done)")
        let summary = lines.first { $0.hasPrefix("Exported 'deb' to \(tarball): ") }
        #expect(summary?.range(of: #": [0-9]+ entries, 1[0-9]{2}\.[0-9]M of data, [0-9.]+M written in [0-9]+\.[0-9]s\.$"#, options: .regularExpression) != nil, "\(done)")
        #expect(lines.contains("status=0"), "\(done)")
        #expect(try readFile(FilePath(out)).isEmpty, "nothing on standard output")
        let listed = try shell("tar -tzf \(shellQuoted(tarball)) | grep -c .").stdout
        #expect((Int(listed.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0) > 5000, "\(listed)")
    }

    /// A tarball is never written to a terminal, nor read from one (the user would type it).
    @Test func tarballsNeverGoToOrComeFromATerminal() throws {
        let store = Self.shared.appending("store").string
        let session = try TerminalSession(label: "tty")
        defer { session.kill() }
        let berthLine = "\(shellQuoted(berthBinary)) --store \(shellQuoted(store))"
        try session.type("\(berthLine) export bb -; echo first=$?")
        let exported = try #require(try session.wait(seconds: 30) { Self.ended("first", $0) }, "\((try? session.pane()) ?? "")")
        #expect(session.output(after: "echo first=", in: exported).filter { !$0.isEmpty && !$0.hasPrefix("$") }.map(String.init) == [
            "berth: error: export - writes a tarball to standard output, which is a terminal; redirect it to a file or a pipe",
            "first=65",
        ], "\(exported)")
        try session.type("\(berthLine) import - other; echo second=$?")
        let imported = try #require(try session.wait(seconds: 30) { Self.ended("second", $0) }, "\((try? session.pane()) ?? "")")
        #expect(session.output(after: "echo second=", in: imported).filter { !$0.isEmpty && !$0.hasPrefix("$") }.map(String.init) == [
            "berth: error: import - reads a tarball from standard input, which is a terminal; pipe or redirect one in (berth import - NAME < FILE)",
            "second=65",
        ], "\(imported)")
        #expect(try listedNames(Self.shared).contains("bb") && !(try listedNames(Self.shared)).contains("other"))
        // Off a terminal both work.
        let tmp = try TemporaryDirectory("cli-pipe")
        let piped = try shell("\(berthLine) export bb - | \(shellQuoted(berthBinary)) --store \(shellQuoted(tmp.appending("store").string)) import -q - copy")
        #expect(piped.status == 0, "\(piped)")
        #expect(piped.stderr.hasPrefix("Exported 'bb' to standard output: ") && piped.stderr.split(separator: "\n").count == 1, "\(piped)")
        try expectSameTree(Self.shared.appending("store/bb"), tmp.appending("store/copy"))
    }

    @Test func exportReplacesAFileOnlyWithForce() throws {
        let tmp = try TemporaryDirectory("cli-export")
        let file = tmp.appending("bb.tar")
        try writeFile(file, "precious\n")
        let refused = try berth(["export", "bb", file.string], store: Self.shared)
        expectCleanFailure(refused, "\(file.string) exists; pass --force to replace it")
        #expect(try readFile(file) == Array("precious\n".utf8))
        try Directory(opening: tmp.path).makeDirectory("dir.tar", mode: 0o755)
        expectCleanFailure(try berth(["export", "bb", tmp.appending("dir.tar").string], store: Self.shared), "exists and is not a regular file")
        #expect(Set(try Directory(opening: tmp.path).entryNames().map(\.string)) == ["bb.tar", "dir.tar"], "no partial file left")

        let forced = try berth(["export", "--force", "bb", file.string], store: Self.shared)
        #expect(forced.status == 0 && forced.stdout.isEmpty, "\(forced)")
        #expect(forced.stderr.hasPrefix("Exported 'bb' to \(file.string): ") && forced.stderr.split(separator: "\n").count == 1, "\(forced)")
        #expect(try shell("tar -tf \(shellQuoted(file.string)) | head -1").stdout == "./\n")
        let quiet = try berth(["export", "-q", "bb", tmp.appending("quiet.tar.zst").string], store: Self.shared)
        #expect(quiet.status == 0 && quiet.stdout.isEmpty && quiet.stderr.isEmpty, "\(quiet)")
    }
}
