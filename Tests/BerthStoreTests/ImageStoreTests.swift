import BerthArchive
import BerthStore
import BerthSystem
import BerthTestSupport
import Glibc
import SystemPackage
import Testing

@Suite struct ImageStoreTests {
    private func storeWithImage(_ tmp: TemporaryDirectory, _ name: String = "img") throws -> ImageStore {
        let archive = tmp.appending("img.tar")
        try TarBuilder().add(.directory("etc")).add(.file("etc/os-release", "PRETTY_NAME=\"Test\"\n")).write(to: archive)
        let store = try ImageStore(root: tmp.appending("store"), create: true)
        var options = ImportOptions()
        options.expectedSHA256 = nil
        _ = try store.importImage(from: .tarball(archive), as: ImageName(name), options: options)
        return store
    }

    @Test func leftoversOfDeadCommandsAreTidiedAndLiveOnesKept() throws {
        let tmp = try TemporaryDirectory("tidy")
        _ = try storeWithImage(tmp)
        let staging = tmp.appending("store/.berth/staging")
        #expect(try shell("mkdir -p '\(staging.string)/import-dead-1/tree/usr/bin' && touch '\(staging.string)/import-dead-1/tree/usr/bin/x' && mkdir '\(staging.string)/import-live-2'").status == 0)
        // A live command holds its staging directory's lock.
        let live = try Descriptor.open(staging.appending("import-live-2"), O_RDONLY | O_DIRECTORY)
        #expect(try live.lock(.exclusive, wait: false))
        _ = try ImageStore(root: tmp.appending("store"), create: false)
        #expect(try Directory(opening: staging).entryNames() == ["import-live-2"])
        live.unlock()
        _ = try ImageStore(root: tmp.appending("store"), create: false)
        #expect(try Directory(opening: staging).entryNames().isEmpty)
        #expect(try FileStatus.of(tmp.appending("store/img/etc/os-release")) != nil)
    }

    @Test func anImageInUseCannotBeRemovedOrRenamed() throws {
        let tmp = try TemporaryDirectory("busy")
        let store = try storeWithImage(tmp)
        let holder = try Descriptor.open(tmp.appending("store/img"), O_RDONLY | O_DIRECTORY)
        #expect(try holder.lock(.shared, wait: false))
        let removal = #expect(throws: StoreError.self) { try store.remove([ImageName("img")]) }
        #expect(removal?.message.contains("in use") == true)
        let rename = #expect(throws: StoreError.self) { try store.rename(ImageName("img"), to: ImageName("other")) }
        #expect(rename?.message.contains("in use") == true)
        holder.unlock()
        try store.rename(ImageName("img"), to: ImageName("other"))
        try store.remove([ImageName("other")])
        #expect(try store.images().isEmpty)
    }

    @Test func listAndShowDescribeTheImage() throws {
        let tmp = try TemporaryDirectory("info")
        let store = try storeWithImage(tmp)
        let image = try store.image(ImageName("img"))
        #expect(image.operatingSystem == "Test")
        #expect(image.kind == .directory && !image.readOnly && image.parent == nil)
        #expect(image.path == tmp.appending("store/img").string)
        try store.setReadOnly(ImageName("img"), true)
        #expect(try store.images().map(\.readOnly) == [true])
        try store.setReadOnly(ImageName("img"), false)
    }

    @Test func removingSeveralChecksAllFirst() throws {
        let tmp = try TemporaryDirectory("several")
        let store = try storeWithImage(tmp)
        #expect(throws: StoreError.self) { try store.remove([ImageName("img"), ImageName("missing")]) }
        #expect(try store.images().map(\.name) == ["img"])
    }
}
