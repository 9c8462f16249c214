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

    func layerCount(_ name: String, store: TemporaryDirectory) throws -> Int {
        let show = try berth(["show", "--json", name], store: store)
        let record = try JSONSerialization.jsonObject(with: Data(show.stdout.utf8)) as? [String: Any]
        return (record?["layers"] as? [String])?.count ?? -1
    }
}
