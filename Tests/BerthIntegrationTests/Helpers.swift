import BerthSystem
import BerthTestSupport
import Foundation
import SystemPackage
import Testing

/// Runs the built berth on `store`, as a user types it.
@discardableResult
func berth(_ arguments: [String], store: TemporaryDirectory, input: String? = nil) throws -> CommandResult {
    try run(berthBinary, ["--store", store.appending("store").string] + arguments, input: input)
}

/// Runs `script` with /bin/sh in a container of image `name`, with run's `options`.
func inImage(_ name: String, _ script: String, store: TemporaryDirectory, options: [String] = []) throws -> CommandResult {
    try berth(["run", "-q", "-M", name] + options + ["/bin/sh", "-c", script], store: store)
}

/// A command that failed as berth must fail: non-zero, one line `berth: error: ...` saying `expected`.
func expectCleanFailure(_ result: CommandResult, _ expected: String, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(result.status != 0, "\(result)", sourceLocation: sourceLocation)
    let lines = result.stderr.split(separator: "\n")
    #expect(lines.count == 1, "\(result)", sourceLocation: sourceLocation)
    #expect(result.stderr.hasPrefix("berth: error: "), "\(result)", sourceLocation: sourceLocation)
    #expect(result.stderr.contains(expected), "\(result)", sourceLocation: sourceLocation)
}

/// The store holds no work in progress, and exactly `images`.
func expectStore(_ tmp: TemporaryDirectory, holds images: Set<String>, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let root = tmp.appending("store")
    guard try FileStatus.of(root) != nil else {
        #expect(images.isEmpty, sourceLocation: sourceLocation)
        return
    }
    let staging = root.appending(".berth/staging")
    if try FileStatus.of(staging) != nil {
        #expect(try Directory(opening: staging).entryNames().isEmpty, "leftovers in staging", sourceLocation: sourceLocation)
    }
    let names = try Directory(opening: root).entryNames().map(\.string).filter { !$0.hasPrefix(".") }
    #expect(Set(names) == images, sourceLocation: sourceLocation)
}

/// The layers each record names, read from the store's own files.
func namedLayers(_ tmp: TemporaryDirectory) throws -> (all: Set<String>, uppers: Set<String>) {
    var all = Set<String>(), uppers = Set<String>()
    let images = tmp.appending("store/.berth/images")
    for name in try Directory(opening: images).entryNames() {
        let text = String(decoding: try readFile(images.appending(name.components).appending("image")), as: UTF8.self)
        for line in text.split(separator: "\n") {
            if line.hasPrefix("layers=") { all.formUnion(line.dropFirst(7).split(separator: " ").map(String.init)) }
            if line.hasPrefix("upper=") {
                all.insert(String(line.dropFirst(6)))
                uppers.insert(String(line.dropFirst(6)))
            }
        }
    }
    return (all, uppers)
}

/// After `gc`, the store holds exactly what its records name: no staging leftovers, no
/// unnamed layer, no work directory of a frozen one, and every named layer present.
func expectConsistentAfterGC(_ tmp: TemporaryDirectory, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let gc = try berth(["gc"], store: tmp)
    #expect(gc.status == 0, "\(gc)", sourceLocation: sourceLocation)
    let named = try namedLayers(tmp)
    let layers = Set(try Directory(opening: tmp.appending("store/.berth/layers")).entryNames().map(\.string))
    let work = Set(try Directory(opening: tmp.appending("store/.berth/work")).entryNames().map(\.string))
    #expect(layers == named.all, sourceLocation: sourceLocation)
    #expect(work == named.uppers, sourceLocation: sourceLocation)
    #expect(try Directory(opening: tmp.appending("store/.berth/staging")).entryNames().isEmpty, sourceLocation: sourceLocation)
}

/// The names `berth list` shows.
func listedNames(_ tmp: TemporaryDirectory) throws -> Set<String> {
    let list = try berth(["list", "--json"], store: tmp)
    let records = try JSONSerialization.jsonObject(with: Data(list.stdout.utf8)) as? [[String: Any]] ?? []
    return Set(records.compactMap { $0["name"] as? String })
}

func manifest(_ path: FilePath) throws -> TreeManifest { try TreeManifest(of: path) }

func expectSameTree(_ a: FilePath, _ b: FilePath, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let (ma, mb) = (try manifest(a), try manifest(b))
    #expect(ma.entries.count == mb.entries.count, sourceLocation: sourceLocation)
    let differences = ma.differences(from: mb)
    #expect(differences.isEmpty, "\(differences.joined(separator: "\n"))", sourceLocation: sourceLocation)
}

/// Installs in the OS tree at `tree` a unit that, once multi-user.target is reached, records the
/// state, the failed units and /etc/berth-step (when there is one) in /out (bind a host directory
/// there), then runs `systemctl ACTION`; returns a function that removes it.
func installBootProbe(in tree: FilePath, action: String) throws -> () -> Void {
    let unit = """
        [Unit]
        After=multi-user.target
        [Service]
        Type=oneshot
        ExecStart=/bin/sh -c 'systemctl is-active multi-user.target > /out/state; systemctl --failed --no-legend --plain > /out/failed; cat /etc/berth-step > /out/step 2>/dev/null; hostname > /out/hostname; cat /etc/machine-id > /out/machine-id; systemctl \(action)'
        [Install]
        WantedBy=multi-user.target
        """
    try writeFile(tree.appending("etc/systemd/system/berth-probe.service"), unit)
    let wants = tree.appending("etc/systemd/system/multi-user.target.wants")
    #expect(try shell("mkdir -p '\(wants.string)' && ln -sf ../berth-probe.service '\(wants.string)/berth-probe.service'").status == 0)
    return { _ = try? shell("rm -f '\(tree.string)/etc/systemd/system/berth-probe.service' '\(wants.string)/berth-probe.service'; rmdir '\(tree.string)/out' 2>/dev/null") }
}

/// Boots `arguments` (a berth run -b command line) with a fresh directory bound at /out, and
/// checks that the probe saw multi-user.target with no failed unit; returns the probe's /out.
@discardableResult
func bootAndProbe(_ arguments: [String], store: TemporaryDirectory, sourceLocation: SourceLocation = #_sourceLocation) throws -> TemporaryDirectory {
    let out = try TemporaryDirectory("probe")
    let result = try berth(arguments + ["--bind", "\(out.string):/out"], store: store)
    #expect(result.status == 0, "\(result)", sourceLocation: sourceLocation)
    #expect((try? readFile(out.appending("state"))) == Array("active\n".utf8), sourceLocation: sourceLocation)
    let failed = (try? readFile(out.appending("failed"))).map { String(decoding: $0, as: UTF8.self) }
    #expect(failed == "", "failed units: \(failed ?? "none recorded")", sourceLocation: sourceLocation)
    return out
}
