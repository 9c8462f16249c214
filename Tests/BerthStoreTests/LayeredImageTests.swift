import BerthStore
import BerthSystem
import BerthTestSupport
import Glibc
import SystemPackage
import Testing

/// Clones, snapshots, restores and gc on real overlayfs, through the store's API.
@Suite struct LayeredImageTests {
    /// A store with directory image `base`: a small OS-like tree with files to change, delete
    /// and replace, and 8 MB of zeros, so that a clone that copied would show.
    private func makeStore(_ tmp: TemporaryDirectory) throws -> ImageStore {
        let archive = tmp.appending("base.tar")
        try TarBuilder()
            .add(.directory("etc")).add(.file("etc/os-release", "PRETTY_NAME=\"Layered Test\"\n"))
            .add(.directory("usr")).add(.directory("usr/share"))
            .add(.file("usr/share/keep", "kept\n")).add(.file("usr/share/doomed", "doomed\n"))
            .add(.directory("opt")).add(.file("opt/a", "a\n")).add(.file("opt/b", "b\n"))
            .add(.zeros("usr/share/ballast", size: 8 << 20))
            .write(to: archive)
        let store = try ImageStore(root: tmp.appending("store"), create: true)
        _ = try store.importImage(from: .tarball(archive), as: ImageName("base"), options: ImportOptions())
        return store
    }

    /// Runs `body` with `name`'s merged tree mounted writable at a directory, unmounting after.
    private func withMounted<T>(_ store: ImageStore, _ name: String, _ tmp: TemporaryDirectory,
                                _ body: (FilePath) throws -> T) throws -> T {
        let at = tmp.appending("mnt-\(name)")
        _ = at.withPlatformString { mkdir($0, 0o755) }
        try store.mount(ImageName(name), at: at)
        defer {
            do { try store.unmount(at) } catch { Issue.record("cannot unmount \(name) at \(at): \(error)") }
        }
        return try body(at)
    }

    private func contents(_ path: FilePath) -> String? {
        (try? readFile(path)).map { String(decoding: $0, as: UTF8.self) }
    }

    private func exists(_ path: FilePath) -> Bool { (try? FileStatus.of(path)) != nil }

    private func manifest(_ store: ImageStore, _ name: String, _ tmp: TemporaryDirectory) throws -> TreeManifest {
        try withMounted(store, name, tmp) { try TreeManifest(of: $0) }
    }

    @Test func aCloneAndItsSourceNeverSeeEachOthersWrites() throws {
        let tmp = try TemporaryDirectory("clone")
        let store = try makeStore(tmp)
        try store.clone(ImageName("base"), to: ImageName("copy"), readOnly: false)

        // Cloning a writable directory image turns it into a layered one (a rename, no copy).
        let infos = Dictionary(uniqueKeysWithValues: try store.images().map { ($0.name, $0) })
        #expect(infos["base"]?.kind == .layered && infos["copy"]?.kind == .layered)
        #expect(infos["copy"]?.parent == "base" && infos["base"]?.dependants == ["copy"])
        #expect(infos["copy"]?.layers == infos["base"]?.layers)
        #expect(infos["copy"]?.operatingSystem == "Layered Test")
        // Its tree stays at its place for every tool: now the overlay of its layers.
        #expect(keptTrees(under: tmp.string) == [tmp.appending("store/base").string, tmp.appending("store/copy").string])
        #expect(exists(tmp.appending("store/base/usr/share/keep")))

        try withMounted(store, "base", tmp) { try writeFile($0.appending("usr/share/keep"), "changed in base\n") }
        try withMounted(store, "copy", tmp) { root in
            #expect(contents(root.appending("usr/share/keep")) == "kept\n")
            try writeFile(root.appending("from-copy"), "copy\n")
        }
        try withMounted(store, "base", tmp) { root in
            #expect(contents(root.appending("usr/share/keep")) == "changed in base\n")
            #expect(!exists(root.appending("from-copy")))
        }
        // A clone of a clone, after both changed, still sees only its source's content.
        try store.clone(ImageName("copy"), to: ImageName("copy2"), readOnly: false)
        try withMounted(store, "copy2", tmp) { root in
            #expect(contents(root.appending("from-copy")) == "copy\n")
            #expect(contents(root.appending("usr/share/keep")) == "kept\n")
        }
    }

    @Test func aSnapshotNeverChangesAndRestoreBringsItBackExactly() throws {
        let tmp = try TemporaryDirectory("restore")
        let store = try makeStore(tmp)
        try store.clone(ImageName("base"), to: ImageName("box"), readOnly: false)
        try withMounted(store, "box", tmp) { try writeFile($0.appending("before"), "before the snapshot\n") }
        try store.clone(ImageName("box"), to: ImageName("snap"), readOnly: true)
        let snapshot = try manifest(store, "snap", tmp)
        #expect(snapshot.entries["before"] != nil)
        #expect(try store.image(ImageName("snap")).readOnly)

        // Every kind of change overlayfs records: a new file, a changed one, a deleted one (a
        // whiteout), a directory replaced by a new one (opaque), a mode change.
        try withMounted(store, "box", tmp) { root in
            try writeFile(root.appending("after"), "added\n")
            try writeFile(root.appending("before"), "overwritten\n")
            #expect(unlink(root.appending("usr/share/doomed").string) == 0)
            #expect(try shell("rm -rf '\(root.string)/opt' && mkdir '\(root.string)/opt' && echo new > '\(root.string)/opt/c' && chmod 700 '\(root.string)/etc'").status == 0)
        }
        #expect(try manifest(store, "snap", tmp) == snapshot)
        #expect(try manifest(store, "box", tmp) != snapshot)

        try store.restore(ImageName("box"), from: ImageName("snap"))
        let restored = try manifest(store, "box", tmp)
        #expect(restored.differences(from: snapshot).isEmpty, "\(restored.differences(from: snapshot))")
        try withMounted(store, "box", tmp) { root in
            #expect(contents(root.appending("usr/share/doomed")) == "doomed\n")
            #expect(contents(root.appending("opt/a")) == "a\n")
            #expect(!exists(root.appending("opt/c")))
        }
    }

    @Test func removingAnImageNeverBreaksAnotherAndGCFreesWhatNothingNeeds() throws {
        let tmp = try TemporaryDirectory("gc")
        let store = try makeStore(tmp)
        try store.clone(ImageName("base"), to: ImageName("child"), readOnly: false)
        try withMounted(store, "base", tmp) { try writeFile($0.appending("big"), [UInt8](repeating: 7, count: 1 << 20)) }
        try store.clone(ImageName("base"), to: ImageName("grandchild-source"), readOnly: true)

        try store.remove([ImageName("base")])
        #expect(try store.collectGarbage().layers == 0, "every layer is still named by another image")
        try withMounted(store, "child", tmp) { #expect(contents($0.appending("usr/share/keep")) == "kept\n") }
        try withMounted(store, "grandchild-source", tmp) { #expect((try? FileStatus.of($0.appending("big")))??.size == 1 << 20) }

        // Since issue 13, remove frees the frozen layers only the removed image used, and gc
        // finds nothing left to free.
        let freed = try store.remove([ImageName("grandchild-source")])
        #expect(freed.bytes >= 1 << 20, "the layer holding 'big' is needed by nothing now")
        #expect(try store.collectGarbage().layers == 0)
        try store.remove([ImageName("child")])
        #expect(try store.collectGarbage().layers == 0)
        #expect(try Directory(opening: tmp.appending("store/.berth/layers")).entryNames().isEmpty)
        #expect(try Directory(opening: tmp.appending("store/.berth/work")).entryNames().isEmpty)
        #expect(try store.images().isEmpty)
    }

    @Test func renamingKeepsClonesWorkingAndTheirParentNamed() throws {
        let tmp = try TemporaryDirectory("rename")
        let store = try makeStore(tmp)
        try store.clone(ImageName("base"), to: ImageName("copy"), readOnly: false)
        try store.rename(ImageName("base"), to: ImageName("renamed"))
        #expect(try store.image(ImageName("copy")).parent == "renamed")
        #expect(try store.image(ImageName("renamed")).dependants == ["copy"])
        try withMounted(store, "copy", tmp) { #expect(contents($0.appending("etc/os-release")) != nil) }
        let clash = #expect(throws: StoreError.self) { try store.rename(ImageName("copy"), to: ImageName("renamed")) }
        #expect(clash?.message.contains("already exists") == true)
    }

    @Test func aMountedOrRunningImageIsNotFrozenUnderItsWriter() throws {
        let tmp = try TemporaryDirectory("busy")
        let store = try makeStore(tmp)
        try store.clone(ImageName("base"), to: ImageName("copy"), readOnly: false)
        try withMounted(store, "copy", tmp) { _ in
            let clone = #expect(throws: StoreError.self) { try store.clone(ImageName("copy"), to: ImageName("x"), readOnly: true) }
            #expect(clone?.message.contains("mounted at") == true)
            #expect(throws: StoreError.self) { try store.remove([ImageName("copy")]) }
            #expect(throws: StoreError.self) { try store.use(ImageName("copy"), .readOnly) }
        }
        // A writable use holds the image: no snapshot, no restore, no second writer.
        do {
            let writer = try store.use(ImageName("copy"), .writable)
            let snapshot = #expect(throws: StoreError.self) { try store.clone(ImageName("copy"), to: ImageName("x"), readOnly: true) }
            #expect(snapshot?.message.contains("running writable") == true)
            #expect(throws: StoreError.self) { try store.restore(ImageName("copy"), from: ImageName("base")) }
            #expect(throws: StoreError.self) { try store.use(ImageName("copy"), .writable) }
            withExtendedLifetime(writer) {}
        }
        // Readers share it, and a clone may freeze it beside them.
        let reader = try store.use(ImageName("copy"), .readOnly)
        let ephemeral = try store.use(ImageName("copy"), .ephemeral)
        try store.clone(ImageName("copy"), to: ImageName("x"), readOnly: true)
        withExtendedLifetime((reader, ephemeral)) {}
        #expect(try store.images().map(\.name) == ["base", "copy", "x"])
    }

    @Test func aHundredSuccessiveSnapshotsStillMount() throws {
        let tmp = try TemporaryDirectory("chain")
        let store = try makeStore(tmp)
        try store.clone(ImageName("base"), to: ImageName("m"), readOnly: false)
        for i in 1...100 {
            try withMounted(store, "m", tmp) { root in
                try writeFile(root.appending("step"), "\(i)\n")
                try writeFile(root.appending("file-\(i)"), "\(i)\n")
            }
            try store.clone(ImageName("m"), to: ImageName("m-\(i)"), readOnly: true)
        }
        #expect(try store.image(ImageName("m")).layers.count == 101)
        try withMounted(store, "m", tmp) { root in
            #expect(contents(root.appending("step")) == "100\n")
            #expect((1...100).allSatisfy { i in contents(root.appending("file-\(i)")) == "\(i)\n" })
        }
        try withMounted(store, "m-50", tmp) { root in
            #expect(contents(root.appending("step")) == "50\n")
            #expect(!exists(root.appending("file-51")))
        }
    }

    @Test func aHundredClonesCostUnderAMegabyteEach() throws {
        let tmp = try TemporaryDirectory("cost")
        let store = try makeStore(tmp)
        try store.clone(ImageName("base"), to: ImageName("seed"), readOnly: false)
        // The store's own state: its root is a mount of its own, which a walk from outside does not enter.
        let state = { try Directory(opening: tmp.appending("store")).diskUsage(".berth") }
        let before = try state()
        for i in 1...100 { try store.clone(ImageName("seed"), to: ImageName("c\(i)"), readOnly: false) }
        let each = (try state() - before) / 100
        #expect(each < 1 << 20, "\(each) bytes a clone")
    }
}
