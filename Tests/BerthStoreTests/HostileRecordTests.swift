import BerthStore
import BerthSystem
import BerthTestSupport
import Glibc
import SystemPackage
import Testing

/// Records and build cache entries that berth did not write, each refused: a record becomes
/// paths under `.berth/layers` and tells gc what to keep, a cache entry becomes a stack of
/// layers under a build. Through the store's own API, on a store in a temporary directory.
@Suite struct HostileRecordTests {
    /// A store with directory image `bb` and its clone `c`, and `c`'s record as berth wrote it.
    private func storeWithClone(_ tmp: TemporaryDirectory) throws -> (ImageStore, String) {
        let archive = tmp.appending("bb.tar")
        try TarBuilder().add(.directory("etc")).add(.file("etc/os-release", "PRETTY_NAME=\"Hostile\"\n"))
            .add(.directory("usr")).write(to: archive)
        let store = try ImageStore(root: tmp.appending("store"), create: true)
        _ = try store.importImage(from: .tarball(archive), as: ImageName("bb"), options: ImportOptions())
        try store.clone(ImageName("bb"), to: ImageName("c"), readOnly: false)
        return (store, String(decoding: try readFile(recordPath(tmp)), as: UTF8.self))
    }

    private func recordPath(_ tmp: TemporaryDirectory) -> FilePath { tmp.appending("store/.berth/images/c/image") }

    /// `field` of a record's text.
    private static func field(_ record: String, _ key: String) -> String {
        record.split(separator: "\n").first { $0.hasPrefix("\(key)=") }.map { String($0.dropFirst(key.count + 1)) } ?? ""
    }

    /// Each turns c's good record into one berth never writes.
    static let hostileRecords: [(String, (String) -> [UInt8])] = [
        ("a layer naming ../../etc", { r in Array(r.replacingOccurrences(of: "layers=", with: "layers=../../etc ").utf8) }),
        ("an upper layer naming ../../etc", { r in Array(r.replacingOccurrences(of: "upper=\(field(r, "upper"))", with: "upper=../../etc").utf8) }),
        ("an absolute layer", { r in Array(r.replacingOccurrences(of: "layers=", with: "layers=/etc ").utf8) }),
        ("a non-hex id", { r in Array(r.replacingOccurrences(of: "id=\(field(r, "id"))", with: "id=ZZZZZZZZZZZZ").utf8) }),
        ("an upper-case hex layer", { r in Array(r.replacingOccurrences(of: "layers=\(field(r, "layers"))", with: "layers=\(field(r, "layers").uppercased())").utf8) }),
        ("a non-hex parent", { r in Array(r.replacingOccurrences(of: "parent=\(field(r, "parent"))", with: "parent=../bb").utf8) }),
        ("a duplicate layers key", { r in Array((r + "layers=\(field(r, "layers"))\n").utf8) }),
        ("a duplicate upper key", { r in Array((r + "upper=\(field(r, "layers"))\n").utf8) }),
        ("a layer named twice", { r in Array(r.replacingOccurrences(of: "layers=\(field(r, "layers"))", with: "layers=\(field(r, "layers")) \(field(r, "layers"))").utf8) }),
        ("the upper also a frozen layer", { r in Array(r.replacingOccurrences(of: "layers=\(field(r, "layers"))", with: "layers=\(field(r, "layers")) \(field(r, "upper"))").utf8) }),
        ("an empty layer list", { r in Array(r.replacingOccurrences(of: "layers=\(field(r, "layers"))", with: "layers=").utf8) }),
        ("two spaces between layers", { r in Array(r.replacingOccurrences(of: "layers=\(field(r, "layers"))", with: "layers=\(field(r, "layers"))  \(field(r, "layers"))").utf8) }),
        ("a key berth does not write", { r in Array((r + "lower=/etc\n").utf8) }),
        ("a line without '='", { r in Array((r + "layers\n").utf8) }),
        ("a created that is not a number", { r in Array(r.replacingOccurrences(of: "created=", with: "created=x").utf8) }),
        ("a read-only that is neither 0 nor 1", { r in Array(r.replacingOccurrences(of: "read-only=0", with: "read-only=yes").utf8) }),
        ("a missing upper", { r in Array(r.split(separator: "\n").filter { !$0.hasPrefix("upper=") }.joined(separator: "\n").utf8) }),
        ("a NUL in a line", { r in Array(r.utf8) + [0] + Array("description=x\n".utf8) }),
        ("a NUL inside the layer list", { r in Array(r.replacingOccurrences(of: "layers=", with: "layers=\u{0}").utf8) }),
        ("a huge line", { r in Array((r + "description=" + String(repeating: "x", count: 2 << 20) + "\n").utf8) }),
        ("nothing at all", { _ in [] }),
    ]

    @Test(arguments: hostileRecords.indices)
    func aHostileRecordIsRefused(_ index: Int) throws {
        let (description, damage) = Self.hostileRecords[index]
        let tmp = try TemporaryDirectory("hostile-record")
        let (store, good) = try storeWithClone(tmp)
        // The good record is read: the damage is what is refused, not the image.
        #expect(try store.image(ImageName("c")).kind == .layered, "\(description)")
        try writeFile(recordPath(tmp), damage(good))
        #expect(try readFile(recordPath(tmp)) != Array(good.utf8), "\(description): the damage changed nothing")

        let shown = #expect(throws: StoreError.self, "\(description)") { try store.image(ImageName("c")) }
        #expect(shown?.kind == .systemFailure && shown?.message.contains("is damaged") == true, "\(description): \(String(describing: shown))")
        #expect(throws: StoreError.self, "\(description)") { try store.use(ImageName("c"), .readOnly) }
        #expect(throws: StoreError.self, "\(description)") { try store.clone(ImageName("c"), to: ImageName("d"), readOnly: false) }
        var warnings: [String] = []
        store.onWarning = { warnings.append($0) }
        #expect(try store.images().map(\.name) == ["bb"], "\(description)")
        #expect(warnings.count == 1 && warnings[0].contains("'c'"), "\(description): \(warnings)")
        // gc keeps everything, and remove takes only the record.
        let gc = #expect(throws: StoreError.self, "\(description)") { try store.collectGarbage() }
        #expect(gc?.message.contains("gc freed nothing") == true)
        let layers = try Directory(opening: tmp.appending("store/.berth/layers")).entryNames()
        try store.remove([ImageName("c")])
        #expect(try Directory(opening: tmp.appending("store/.berth/layers")).entryNames() == layers, "\(description)")
        #expect(try store.images().map(\.name) == ["bb"])
    }

    /// Each makes an entry's bytes from two real layers' names, or none.
    static let hostileEntries: [(String, (String, String) -> [UInt8])] = [
        ("a layer naming ../../etc", { _, _ in Array("../../etc\n".utf8) }),
        ("a real layer, then ../../etc", { a, _ in Array("\(a) ../../etc\n".utf8) }),
        ("an absolute path", { _, _ in Array("/etc\n".utf8) }),
        ("a missing layer", { _, _ in Array("0123456789ab\n".utf8) }),
        ("a real layer and a missing one", { a, _ in Array("\(a) 0123456789ab\n".utf8) }),
        ("a layer named twice", { a, _ in Array("\(a) \(a)\n".utf8) }),
        ("a NUL", { a, b in Array("\(a)".utf8) + [0] + Array(" \(b)\n".utf8) }),
        ("two spaces", { a, b in Array("\(a)  \(b)\n".utf8) }),
        ("two lines", { a, b in Array("\(a)\n\(b)\n".utf8) }),
        ("no newline", { a, _ in Array(a.utf8) }),
        ("an upper-case name", { a, _ in Array("\(a.uppercased())\n".utf8) }),
        ("nothing", { _, _ in [] }),
        ("a huge line", { a, _ in Array((Array(repeating: a, count: 4000).joined(separator: " ") + "\n").utf8) }),
    ]

    @Test(arguments: hostileEntries.indices)
    func aHostileCacheEntryIsAMiss(_ index: Int) throws {
        let (description, entry) = Self.hostileEntries[index]
        let tmp = try TemporaryDirectory("hostile-cache")
        let store = try ImageStore(root: tmp.appending("store"), create: true)
        let a = try store.makeBaseLayer { _ in }
        let b = try store.makeBaseLayer { _ in }
        let key = String(repeating: "ab", count: 32)
        // The entry as berth writes it is believed: the damage is what is refused.
        try store.cacheStack(key, [a, b])
        #expect(try store.cachedStack(key) == [a, b])
        try writeFile(tmp.appending("store/.berth/cache/\(key)"), entry(a, b))
        #expect(try store.cachedStack(key) == nil, "\(description)")
    }

    @Test func aCacheEntryNamingAFileOrThroughASymlinkIsAMiss() throws {
        let tmp = try TemporaryDirectory("hostile-cache-kinds")
        let store = try ImageStore(root: tmp.appending("store"), create: true)
        let key = String(repeating: "cd", count: 32)
        let real = try store.makeBaseLayer { _ in }
        try store.cacheStack(key, [real])
        #expect(try store.cachedStack(key) == [real])
        // A "layer" that is a file, not a tree.
        try writeFile(tmp.appending("store/.berth/layers/0123456789ab"), "not a layer\n")
        try writeFile(tmp.appending("store/.berth/cache/\(key)"), "0123456789ab\n")
        #expect(try store.cachedStack(key) == nil)
        // An entry that is a symlink to a file holding a real layer's name.
        try writeFile(tmp.appending("elsewhere"), "\(real)\n")
        let other = String(repeating: "ef", count: 32)
        #expect(symlink(tmp.appending("elsewhere").string, tmp.appending("store/.berth/cache/\(other)").string) == 0)
        #expect(try store.cachedStack(other) == nil)
        // A key that is not a digest is never looked up.
        #expect(try store.cachedStack("../images") == nil)
        #expect(throws: StoreError.self) { try store.cacheStack("../images", [real]) }
        #expect(throws: StoreError.self) { try store.cacheStack(key, ["../../etc"]) }
    }
}
