import BerthStore
import Testing

@Suite struct ImageNameTests {
    @Test(arguments: ["debian", "deb-12", "a.b_c", "X", String(repeating: "n", count: 64), "0day"])
    func valid(_ name: String) throws {
        #expect(try ImageName(name).rawValue == name)
    }

    @Test(arguments: ["", ".hidden", "..", ".", "-flag", "a/b", "a b", "ünï", "a:b", String(repeating: "n", count: 65), "name\n"])
    func invalid(_ name: String) {
        #expect(throws: StoreError.self) { try ImageName(name) }
    }

    @Test(arguments: [
        ("debian.tar.zst", "debian"), ("/srv/images/bookworm.tar.gz", "bookworm"), ("rootfs.tgz", "rootfs"),
        ("a.tar.xz", "a"), ("b.txz", "b"), ("c.tar.bz2", "c"), ("d.tar", "d"), ("plain", "plain"),
        ("/some/dir/", "dir"), ("arch.tar.zst.tar", "arch"), ("debian-12.1.tar", "debian-12.1"),
    ])
    func derivedFromTheSource(_ source: String, _ expected: String) throws {
        #expect(try ImageName.derived(fromSource: source).rawValue == expected)
    }

    @Test func underivableNameAsksForOne() {
        let error = #expect(throws: StoreError.self) { try ImageName.derived(fromSource: "/tmp/my image.tar") }
        #expect(error?.message.contains("give a NAME") == true)
    }
}
