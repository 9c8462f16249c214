import BerthSystem
import BerthTestSupport
import Foundation
import Glibc
import SystemPackage
import Testing

/// Runs berth on `store` with `environment` (BERTH_FAIL_AT) set.
@discardableResult
private func berth(_ arguments: [String], store: TemporaryDirectory, environment: [String: String], input: String? = nil) throws -> CommandResult {
    try run(berthBinary, ["--store", store.appending("store").string] + arguments, input: input, environment: environment)
}

/// The layers in the store, as its files say.
private func layersOnDisk(_ tmp: TemporaryDirectory) throws -> Set<String> {
    Set(try Directory(opening: tmp.appending("store/.berth/layers")).entryNames().map(\.string))
}

/// A store with busybox as `bb` (layered), its clones `c1` (with a file of its own) and `c2`.
private func layeredStore() throws -> TemporaryDirectory {
    let tmp = try TemporaryDirectory("faults")
    #expect(try berth(["import", "-q", Fixtures.busybox, "bb"], store: tmp).status == 0)
    #expect(try berth(["clone", "bb", "c1"], store: tmp).status == 0)
    #expect(try berth(["clone", "bb", "c2"], store: tmp).status == 0)
    #expect(try inImage("c1", "echo mine > /own", store: tmp).status == 0)
    return tmp
}

private func record(_ tmp: TemporaryDirectory, _ name: String) -> FilePath { tmp.appending("store/.berth/images/\(name)") }

/// Finding 9: what gc cannot read, it keeps. Each case damages c1's record as the review did.
struct Damage: CustomStringConvertible, Sendable {
    var description: String
    var apply: @Sendable (TemporaryDirectory) throws -> Void
    /// BERTH_FAIL_AT for the commands that meet the damage (an I/O error cannot be made by hand).
    var environment: [String: String] = [:]
}

let damages: [Damage] = [
    Damage(description: "an empty record") { try writeFile(record($0, "c1").appending("image"), "") },
    Damage(description: "a record with one bad line") { tmp in
        let path = record(tmp, "c1").appending("image")
        try writeFile(path, String(decoding: try readFile(path), as: UTF8.self) + "garbage\n")
    },
    Damage(description: "a record that is a directory") { tmp in
        let path = record(tmp, "c1").appending("image")
        #expect(unlink(path.string) == 0 && mkdir(path.string, 0o700) == 0)
    },
    Damage(description: "a record entry that is a file") { tmp in
        let replaced = try shell("rm -r '\(record(tmp, "c1").string)' && echo x > '\(record(tmp, "c1").string)'")
        #expect(replaced.status == 0)
    },
    Damage(description: "a record naming ../../etc as a layer") { tmp in
        let path = record(tmp, "c1").appending("image")
        let text = String(decoding: try readFile(path), as: UTF8.self)
        try writeFile(path, text.split(separator: "\n").map { $0.hasPrefix("layers=") ? "layers=../../etc" : String($0) }.joined(separator: "\n") + "\n")
    },
    Damage(description: "an I/O error reading records", apply: { _ in }, environment: ["BERTH_FAIL_AT": "record-read:EIO"]),
    Damage(description: "no space reading records", apply: { _ in }, environment: ["BERTH_FAIL_AT": "record-read:ENOSPC"]),
]

/// Where a fault is injected, the command, and the images there after it.
let commitFaults: [(String, [String], Set<String>)] = [
    ("clone-sync", ["clone", "c1", "c3"], ["bb", "c1", "c2", "c3"]),
    ("record-sync", ["snapshot", "c1", "s1"], ["bb", "c1", "c2", "s1"]),
    ("rename-sync", ["rename", "c1", "c4"], ["bb", "c4", "c2"]),
    ("remove-sync", ["remove", "c1"], ["bb", "c2"]),
    ("remove-cleanup", ["remove", "c1"], ["bb", "c2"]),
    ("restore-cleanup", ["restore", "c1", "bb"], ["bb", "c1", "c2"]),
    ("convert-sync", ["clone", "dir", "c5"], ["bb", "c1", "c2", "dir", "c5"]),
    ("import-sync", ["import", "-q", "--force", Fixtures.busybox, "dir"], ["bb", "c1", "c2", "dir"]),
]

@Suite struct StoreFaultTests {
    @Test(arguments: damages)
    func gcKeepsWhatADamagedRecordMayNeed(_ damage: Damage) throws {
        let tmp = try layeredStore()
        let before = try layersOnDisk(tmp)
        try damage.apply(tmp)
        let env = damage.environment

        // list names the damaged record on stderr and still lists the others.
        let list = try berth(["list", "--json"], store: tmp, environment: env)
        #expect(list.status == 0, "\(list)")
        #expect(list.stderr.contains("berth: warning: the record of image 'c1'"), "\(list)")
        #expect(list.stderr.split(separator: "\n").allSatisfy { $0.hasPrefix("berth: warning: ") }, "\(list)")
        #expect(list.stderr.contains("damaged"), "\(list)")
        let listed = try JSONSerialization.jsonObject(with: Data(list.stdout.utf8)) as? [[String: Any]] ?? []
        if env.isEmpty { #expect(Set(listed.compactMap { $0["name"] as? String }) == ["bb", "c2"]) }

        // gc frees nothing, and says which record stops it.
        let gc = try berth(["gc"], store: tmp, environment: env)
        expectCleanFailure(gc, "gc freed nothing")
        #expect(gc.stderr.contains("'c1'"), "\(gc)")
        #expect(try layersOnDisk(tmp) == before)
        expectCleanFailure(try berth(["show", "c1"], store: tmp, environment: env), "damaged")
        expectCleanFailure(try berth(["run", "-q", "-M", "c1", "/bin/true"], store: tmp, environment: env), "damaged")

        if env.isEmpty {
            // remove takes the damaged record away; then gc frees its writable layer, and the rest lives.
            let remove = try berth(["remove", "c1"], store: tmp)
            #expect(remove.status == 0, "\(remove)")
            try expectConsistentAfterGC(tmp)
            #expect(try listedNames(tmp) == ["bb", "c2"])
        } else {
            // The disk recovers: every image is there, with its own file.
            #expect(try listedNames(tmp) == ["bb", "c1", "c2"])
            #expect(try inImage("c1", "cat /own", store: tmp).stdout == "mine\n")
        }
        #expect(try inImage("c2", "cat /bin/busybox > /dev/null && echo ok", store: tmp).stdout == "ok\n")
    }

    /// Finding 10: a failure after the commit rename does not make a change that took effect
    /// report failure. `setup` runs first; then `command` under `BERTH_FAIL_AT=point:ENOSPC`.
    @Test(arguments: commitFaults)
    func committedChangesAreReportedAsDone(_ point: String, _ command: [String], _ images: Set<String>) throws {
        let tmp = try layeredStore()
        #expect(try berth(["import", "-q", Fixtures.busybox, "dir"], store: tmp).status == 0)
        if !images.contains("dir") {
            #expect(try berth(["remove", "dir"], store: tmp).status == 0)
        }
        let result = try berth(command, store: tmp, environment: ["BERTH_FAIL_AT": "\(point):ENOSPC"])
        #expect(result.status == 0, "\(result)")
        let lines = result.stderr.split(separator: "\n")
        #expect(lines.count >= 1 && lines.allSatisfy { $0.hasPrefix("berth: warning: ") && $0.contains(", but ") }, "\(result)")
        #expect(result.stderr.contains("No space left on device"), "\(result)")
        #expect(try listedNames(tmp) == images)
        if command[0] == "restore" {
            #expect(try inImage("c1", "test -e /own || echo restored", store: tmp).stdout == "restored\n")
        }
        try expectConsistentAfterGC(tmp)
    }

    /// Without a fault the same commands print nothing on stderr (the warning is not noise).
    @Test func noWarningWithoutAFault() throws {
        let tmp = try layeredStore()
        let result = try berth(["clone", "c1", "c3"], store: tmp)
        #expect(result.status == 0 && result.stderr.isEmpty, "\(result)")
    }
}
