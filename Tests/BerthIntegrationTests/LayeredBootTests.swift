import BerthSystem
import BerthTestSupport
import Foundation
import SystemPackage
import Testing

/// The real Debian image booted as a layered image: a clone, and the end of a long snapshot chain.
@Suite(.serialized) struct LayeredBootTests {
    @Test func aCloneOfDebianAndAHundredSnapshotsDeepChainBootToMultiUser() throws {
        let tmp = try TemporaryDirectory("layered-boot")
        let imported = try berth(["import", "-q", Fixtures.debianZstd, "deb"], store: tmp)
        #expect(imported.status == 0, "\(imported)")
        _ = try installBootProbe(in: tmp.appending("store/deb"), action: "poweroff")

        #expect(try berth(["clone", "deb", "c"], store: tmp).status == 0)
        try bootAndProbe(["run", "-q", "-b", "-M", "c"], store: tmp)

        // One machine, snapshotted a hundred times with a change between each.
        #expect(try berth(["clone", "c", "m"], store: tmp).status == 0)
        let depth = try layerCount("m", store: tmp)
        for i in 1...100 {
            let step = try berth(["run", "-q", "-M", "m", "/bin/sh", "-c", "echo \(i) > /etc/berth-step"], store: tmp)
            #expect(step.status == 0, "\(step)")
            #expect(try berth(["snapshot", "m", "m-\(i)"], store: tmp).status == 0)
        }
        #expect(try layerCount("m", store: tmp) == depth + 100)
        let out = try bootAndProbe(["run", "-q", "-b", "-M", "m"], store: tmp)
        #expect(try readFile(out.appending("step")) == Array("100\n".utf8))
        // A snapshot in the middle of the chain boots with its own content.
        let middle = try bootAndProbe(["run", "-q", "-b", "-x", "-M", "m-50"], store: tmp)
        #expect(try readFile(middle.appending("step")) == Array("50\n".utf8))
        #expect(mounts(under: tmp.string).isEmpty)
    }

    /// A clone starts as its parent's exact content, yet boots as a machine of its own: its own
    /// machine id, kept from its first boot on, and its own name as hostname; its parent keeps
    /// its own of both.
    @Test func eachCloneBootsAsAMachineOfItsOwn() throws {
        let tmp = try TemporaryDirectory("identity")
        #expect(try berth(["import", "-q", Fixtures.debianZstd, "deb"], store: tmp).status == 0)
        _ = try installBootProbe(in: tmp.appending("store/deb"), action: "poweroff")
        let hostname = String(decoding: try readFile(tmp.appending("store/deb/etc/hostname")), as: UTF8.self)
        func text(_ out: TemporaryDirectory, _ file: String) -> String {
            (try? readFile(out.appending(file))).map { String(decoding: $0, as: UTF8.self) } ?? "(none)"
        }
        let first = try bootAndProbe(["run", "-q", "-b", "-M", "deb"], store: tmp)
        let parentID = text(first, "machine-id")
        #expect(parentID.count == 33 && text(first, "hostname") == hostname, "\(parentID) \(text(first, "hostname"))")
        for name in ["c1", "c2"] { #expect(try berth(["clone", "deb", name], store: tmp).status == 0) }
        let copied = try berth(["run", "-q", "-M", "c1", "/bin/cat", "/etc/machine-id"], store: tmp)
        #expect(copied.stdout == parentID, "a clone's content is its parent's until it boots: \(copied)")

        var ids: [String: [String]] = [:]
        for name in ["deb", "c1", "c2", "c1"] {
            let out = try bootAndProbe(["run", "-q", "-b", "-M", name], store: tmp)
            ids[name, default: []].append(text(out, "machine-id"))
            #expect(text(out, "hostname") == (name == "deb" ? hostname : "\(name)\n"), "\(name)")
        }
        #expect(ids["deb"] == [parentID])
        let c1 = ids["c1"] ?? [], c2 = ids["c2"] ?? []
        #expect(c1.count == 2 && c1[0] == c1[1], "a clone keeps the machine id it got: \(c1)")
        #expect(Set([parentID, c1.first ?? "", c2.first ?? ""]).count == 3, "\(parentID) \(c1) \(c2)")
        #expect(c1.allSatisfy { $0.count == 33 } && c2.allSatisfy { $0.count == 33 })
    }

    func layerCount(_ name: String, store: TemporaryDirectory) throws -> Int {
        let show = try berth(["show", "--json", name], store: store)
        let record = try JSONSerialization.jsonObject(with: Data(show.stdout.utf8)) as? [String: Any]
        return (record?["layers"] as? [String])?.count ?? -1
    }
}
