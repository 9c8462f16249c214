import BerthArchive
import BerthSystem
import Glibc
import SystemPackage

/// Where an import reads from.
public enum ImportSource: Sendable {
    /// A tarball, compressed or not.
    case tarball(FilePath)
    /// A tarball on standard input.
    case standardInput
    /// A directory tree, copied.
    case directory(FilePath)

    /// The source named on the command line: `-` for standard input, else a file or a directory.
    public init(argument: String) throws {
        if argument == "-" {
            self = .standardInput
            return
        }
        let status: FileStatus?
        do {
            status = try FileStatus.of(FilePath(argument))
        } catch let error as SystemError {
            throw StoreError("cannot read \(argument): \(error.errno)")
        }
        guard let status else {
            throw StoreError("\(argument) does not exist; give a tarball, a directory, or '-' for standard input")
        }
        switch status.kind {
        case .directory: self = .directory(FilePath(argument))
        // A character device is read as a stream (/dev/null is an empty one; /dev/zero fails at
        // its first block of zeros): only what cannot be a stream at all is refused.
        case .regular, .fifo, .characterDevice: self = .tarball(FilePath(argument))
        default: throw Self.notReadable(argument, status.kind)
        }
    }

    /// A block device (a whole disk), a socket or the like is no tarball.
    static func notReadable(_ path: String, _ kind: FileStatus.Kind) -> StoreError {
        let what = kind == .blockDevice ? "a block device" : kind == .socket ? "a socket" : "not a regular file"
        return StoreError("\(path) is \(what), not a tarball or a directory; give a tarball file, a directory, or '-' for standard input")
    }

    var displayName: String {
        switch self {
        case .tarball(let path), .directory(let path): return path.string
        case .standardInput: return "standard input"
        }
    }
}

public struct ImportOptions {
    public var readOnly = false
    public var force = false
    /// The SHA-256 the tarball must have, as lower-case hexadecimal.
    public var expectedSHA256: String?
    public var limits = ExtractionLimits.standard
    public var onProgress: ((ExtractionProgress) -> Void)?

    public init() {}
}

public struct ImportResult {
    public var name: ImageName
    public var entries: Int
    public var bytes: Int64
    /// The compression found in the tarball; nil for a directory.
    public var compression: String?
    public var sha256: String?
    /// Attributes in the source that were not applied (overlayfs's own, or ones the store's file
    /// system cannot hold).
    public var skippedAttributes: [String]
    /// Whether the tree was unwrapped from a single top-level directory.
    public var unwrapped: Bool
}

extension ImageStore {
    /// Imports `source` as the directory image `name`.
    ///
    /// The tree is extracted under `.berth/staging`, synced, and published by one rename; on any
    /// failure, or if the process dies, nothing is published and the staging tree goes away.
    /// With `force`, an existing image is replaced only once the new one is complete.
    public func importImage(from source: ImportSource, as name: ImageName, options: ImportOptions) throws -> ImportResult {
        if case .directory = source, options.expectedSHA256 != nil {
            throw StoreError("--verify checks a tarball's bytes; \(source.displayName) is a directory")
        }
        if case .directory(let path) = source { try refuseStoreInside(path) }
        if !options.force, try imageExists(name) {
            throw StoreError("image '\(name)' already exists; pass --force to replace it, or choose another name")
        }

        let staging = try makeStaging("import-\(name)")
        defer { staging.discard() }
        try staging.directory.makeDirectory("tree", mode: 0o755)
        let tree = try staging.directory.openDirectory(beneath: "tree")
        let (extractor, compression, digest) = try extract(source, into: tree, options: options)
        if let expected = options.expectedSHA256, let digest, digest != expected {
            throw StoreError("\(source.displayName) has SHA-256 \(digest), not the \(expected) that --verify expects; nothing was imported")
        }

        // A tarball of one directory holding the OS tree is unwrapped, as systemd-importd does.
        var published = staging.name.appending("tree")
        var unwrapped = false
        if !Self.isOSTree(tree) {
            let names = try tree.entryNames()
            if names.count == 1, try tree.status(names[0])?.kind == .directory,
               Self.isOSTree(try tree.openDirectory(beneath: names[0])) {
                published = published.appending(names[0].components)
                unwrapped = true
            }
        }

        try stagingDirectory.descriptor.syncFileSystem()
        try publish(published, as: name, replacing: options.force, staging: staging)
        if options.readOnly { try setReadOnly(name, true) }
        return ImportResult(name: name, entries: extractor.entryCount, bytes: extractor.bytesWritten,
                            compression: compression, sha256: digest,
                            skippedAttributes: extractor.skippedAttributes.sorted(), unwrapped: unwrapped)
    }

    /// Extracts `source` into `tree`, securely; returns the extractor (for its counts), the
    /// compression found and, when asked for, the tarball's SHA-256.
    func extract(_ source: ImportSource, into tree: Directory, options: ImportOptions) throws -> (Extractor, String?, String?) {
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
            throw StoreError("cannot import \(source.displayName): \(error.message)")
        } catch let error as SystemError {
            throw StoreError("cannot import \(source.displayName): \(error)")
        }
    }

    /// Moves a finished tree from staging to `ROOT/NAME` in one rename. An image replaced
    /// with `replacing` lands in `staging` in its place and goes with it: a directory image by
    /// the same rename (an exchange), a layered one right after (the directory wins meanwhile).
    func publish(_ staged: FilePath, as name: ImageName, replacing: Bool, staging: Staging) throws {
        try withStoreLock {
            let target = FilePath(name.rawValue)
            guard let existing = try lookup(name) else {
                do {
                    try stagingDirectory.rename(staged, to: target, in: rootDirectory, .noReplace)
                } catch let error as SystemError where error.errno == .fileExists {
                    throw StoreError("image '\(name)' was created meanwhile by another command; pass --force to replace it")
                }
                afterCommit("import-sync", done: "imported '\(name)'") { try rootDirectory.sync() }
                return
            }
            guard replacing else {
                throw StoreError("image '\(name)' was created meanwhile by another command; pass --force to replace it")
            }
            guard let lock = try lockImage(name, .exclusive) else { throw inUse(name) }
            defer { withExtendedLifetime(lock) {} }
            switch existing {
            case .directory:
                try clearReadOnlyFlag(target)
                try stagingDirectory.rename(staged, to: target, in: rootDirectory, .exchange)
                afterCommit("import-sync", done: "imported '\(name)' in place of the old one") { try rootDirectory.sync() }
            case .layered(let stack):
                try refuseMounted(name)
                try stagingDirectory.rename(staged, to: target, in: rootDirectory, .noReplace)
                let change = "imported '\(name)' in place of the old one"
                afterCommit("import-sync", done: change) { try rootDirectory.sync() }
                afterCommit("import-cleanup", done: change) {
                    try imagesDirectory.rename(target, to: "replaced-record", in: staging.directory, .noReplace)
                    try discardLayer(stack.upper, into: staging)
                }
            }
        }
    }

    /// An OS tree has an os-release file, as systemd's path_is_os_tree() asks.
    static func isOSTree(_ tree: Directory) -> Bool {
        for (dir, file) in [("etc", "os-release"), ("usr/lib", "os-release")] {
            if let parent = try? tree.openDirectory(beneath: FilePath(dir), pathOnly: true),
               (try? parent.status(FilePath(file))) != nil {
                return true
            }
        }
        return false
    }

    /// Copying a directory that holds the store would copy the copy as it is being made.
    private func refuseStoreInside(_ source: FilePath) throws {
        guard let sourceReal = realPath(source), let rootReal = realPath(root) else { return }
        if rootReal == sourceReal || rootReal.starts(with: sourceReal) {
            throw StoreError("\(source) holds the store \(root); import a directory outside it")
        }
    }
}

func realPath(_ path: FilePath) -> FilePath? {
    guard let resolved = path.withPlatformString({ Glibc.realpath($0, nil) }) else { return nil }
    defer { free(resolved) }
    return FilePath(platformString: resolved)
}
