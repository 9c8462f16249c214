import BerthArchive
import BerthSystem
import Glibc
import SystemPackage

/// `berth import`, and the extraction a recipe's tarball base shares with it.
///
/// The tree is extracted under `.berth/staging`, synced, and published by one rename; on any
/// failure, or if the process dies, nothing is published and the staging tree goes away.
struct ImageImporter {
    let catalog: ImageCatalog
    let store: StoreDirectories
    let layers: LayerStore

    /// Imports `source` as the directory image `name`. With `force`, an existing image is
    /// replaced only once the new one is complete.
    func importImage(from source: ImportSource, as name: ImageName, options: ImportOptions) throws -> ImportResult {
        if case .directory = source, options.expectedSHA256 != nil {
            throw StoreError(.invalidInput, "--verify checks a tarball's bytes; \(source.displayName) is a directory")
        }
        if case .directory(let path) = source { try refuseStoreInside(path) }
        if !options.force, try catalog.exists(name) {
            throw StoreError(.exists, "image '\(name)' already exists; pass --force to replace it, or choose another name")
        }

        let staging = try StagingArea(store: store).make("import-\(name)")
        defer { staging.discard() }
        try staging.directory.makeDirectory("tree", mode: 0o755)
        let tree = try staging.directory.openDirectory(beneath: "tree")
        let (extractor, compression, digest) = try Self.extract(source, into: tree, options: options)
        if let expected = options.expectedSHA256, let digest, digest != expected {
            throw StoreError(.invalidInput, "\(source.displayName) has SHA-256 \(digest), not the \(expected) that --verify expects; nothing was imported")
        }

        // A tarball of one directory holding the OS tree is unwrapped, as systemd-importd does.
        var published = staging.name.appending("tree")
        var unwrapped = false
        if !ImageCatalog.isOSTree(tree) {
            let names = try tree.entryNames()
            if names.count == 1, try tree.status(names[0])?.kind == .directory,
               ImageCatalog.isOSTree(try tree.openDirectory(beneath: names[0])) {
                published = published.appending(names[0].components)
                unwrapped = true
            }
        }

        // Measured once here, while the tree is in the cache, so that `list` need not walk it.
        let bytes = try store.staging.diskUsage(published)
        let root = try store.staging.openFile(published, O_RDONLY | O_DIRECTORY).status()
        try store.staging.descriptor.syncFileSystem()
        try publish(published, as: name, replacing: options.force, staging: staging)
        layers.figures.recordTree(name, root: root, bytes: bytes)
        if options.readOnly { try ImageChanges(catalog: catalog, store: store, layers: layers, cache: BuildCache(store: store)).setReadOnly(name, true) }
        return ImportResult(name: name, entries: extractor.entryCount, bytes: extractor.bytesWritten,
                            compression: compression, sha256: digest,
                            skippedAttributes: extractor.skippedAttributes.sorted(), unwrapped: unwrapped)
    }

    /// Extracts `source` into `tree`, securely; returns the extractor (for its counts), the
    /// compression found and, when asked for, the tarball's SHA-256.
    static func extract(_ source: ImportSource, into tree: Directory, options: ImportOptions) throws -> (Extractor, String?, String?) {
        let extractor = Extractor(into: tree, limits: options.limits)
        extractor.onProgress = options.onProgress
        do {
            switch source {
            case .directory(let path):
                try extractor.extract(from: TreeReader(path))
                return (extractor, nil, nil)
            case .tarball, .standardInput:
                let input: Descriptor
                if case .tarball(let path) = source {
                    input = try Descriptor.open(path, O_RDONLY)
                    // Checked on what was opened, for every caller (a recipe's tarball too).
                    let kind = try input.status().kind
                    guard kind == .regular || kind == .fifo || kind == .characterDevice else {
                        throw ImportSource.notReadable(path.string, kind)
                    }
                } else {
                    input = Descriptor(owning: dup(0))
                }
                let stream = try DecompressedStream(input: input, sourceName: source.displayName,
                                                    hashing: options.expectedSHA256 != nil)
                defer { stream.cancel() }
                try extractor.extract(from: ArchiveReader.tar(from: stream), input: stream)
                let digest = try stream.finish()
                return (extractor, stream.compression, digest)
            }
        } catch let error as ArchiveError {
            throw StoreError(.invalidInput, "cannot import \(source.displayName): \(error.message)")
        } catch let error as SystemError {
            throw StoreError.wrapping(error, "cannot import \(source.displayName)")
        }
    }

    /// Moves a finished tree from staging to `ROOT/NAME` in one rename. An image replaced
    /// with `replacing` lands in `staging` in its place and goes with it: a directory image by
    /// the same rename (an exchange), a layered one right after (the directory wins meanwhile).
    private func publish(_ staged: FilePath, as name: ImageName, replacing: Bool, staging: Staging) throws {
        let meanwhile = StoreError(.exists, "image '\(name)' was created meanwhile by another command; pass --force to replace it")
        try store.withStoreLock {
            let target = FilePath(name.rawValue)
            guard let existing = try catalog.lookup(name) else {
                do {
                    try store.staging.rename(staged, to: target, in: store.rootDirectory, .noReplace)
                } catch let error as SystemError where error.errno == .fileExists {
                    throw meanwhile
                }
                store.afterCommit("import-sync", done: "imported '\(name)'") { try store.rootDirectory.sync() }
                return
            }
            guard replacing else { throw meanwhile }
            try catalog.withLock(name, .exclusive, for: .change) { _ in
                switch existing {
                case .directory:
                    try catalog.clearReadOnlyFlag(target)
                    try store.staging.rename(staged, to: target, in: store.rootDirectory, .exchange)
                    store.afterCommit("import-sync", done: "imported '\(name)' in place of the old one") { try store.rootDirectory.sync() }
                case .layered(let stack):
                    let mounts = ImageMounts(catalog: catalog, store: store)
                    try mounts.refuseMounted(name)
                    // Its tree's mount point gives way to the directory (which wins over the record).
                    try mounts.releaseTree(name)
                    try? store.rootDirectory.remove(target, isDirectory: true)
                    try store.staging.rename(staged, to: target, in: store.rootDirectory, .noReplace)
                    let change = "imported '\(name)' in place of the old one"
                    store.afterCommit("import-sync", done: change) { try store.rootDirectory.sync() }
                    store.afterCommit("import-cleanup", done: change) {
                        try store.images.rename(target, to: "replaced-record", in: staging.directory, .noReplace)
                        try layers.discard(stack.upper, into: staging)
                    }
                }
            }
        }
    }

    /// Copying a directory that holds the store would copy the copy as it is being made.
    private func refuseStoreInside(_ source: FilePath) throws {
        guard let sourceReal = realPath(source), let rootReal = realPath(catalog.root) else { return }
        if rootReal == sourceReal || rootReal.starts(with: sourceReal) {
            throw StoreError(.invalidInput, "\(source) holds the store \(catalog.root); import a directory outside it")
        }
    }
}
