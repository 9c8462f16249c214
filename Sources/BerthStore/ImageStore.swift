import BerthArchive
import BerthSystem
import Glibc
import SystemPackage

/// The image store: a directory of machine images, `/var/lib/machines` by default.
///
/// Layout:
///
///     ROOT/NAME                   a directory image: a plain OS tree, as machinectl keeps them
///     ROOT/.berth/images/NAME/    a layered image: its record (`image`, see LayerStack), and
///                                 `mounted` while `berth mount` shows it somewhere
///     ROOT/.berth/layers/ID/      one layer: a tree as overlayfs keeps it (whiteouts, opaque
///                                 directories); frozen once an image stacks on it
///     ROOT/.berth/work/ID/        overlayfs's work directory for the writable layer ID
///     ROOT/.berth/lock            taken while a change is published, so checks and renames are one step
///     ROOT/.berth/staging/ID      work in progress: a new image before it is published, an old one
///                                 on its way out; each is locked by the process working on it
///
/// Every change is staged under `.berth/staging` on the store's own file system and published
/// by one rename(2) after its data is synced. A process killed at any point leaves a staging
/// entry whose lock died with it; the next store that opens removes it, and layers that no
/// record names are left for `gc`.
public final class ImageStore {
    public let root: FilePath
    let rootDirectory: Directory
    let stagingDirectory: Directory
    let imagesDirectory: Directory
    let layersDirectory: Directory
    let workDirectory: Directory
    private let lockFile: Descriptor
    /// Told what went wrong without failing the command: a change that took effect but could
    /// not be made durable or cleaned up after, a record that cannot be read. One line each,
    /// escaped. Unset, warnings are dropped.
    public var onWarning: ((String) -> Void)?

    static let stateName: FilePath = ".berth"

    /// Opens the store at `root`, creating it (mode 0700: images hold setuid binaries and device
    /// nodes) when `create` is set, and removes what interrupted commands left behind.
    public init(root: FilePath, create: Bool) throws {
        self.root = root
        if create {
            try Self.makeRoot(root)
        }
        do {
            rootDirectory = try Directory(opening: root)
        } catch let error as SystemError where error.errno == .noSuchFileOrDirectory {
            throw StoreError("the store \(root) does not exist; import an image first or pass --store DIR")
        }
        let state = try Self.openOrMake(Self.stateName, in: rootDirectory, mode: 0o700)
        stagingDirectory = try Self.openOrMake("staging", in: state, mode: 0o700)
        imagesDirectory = try Self.openOrMake("images", in: state, mode: 0o700)
        layersDirectory = try Self.openOrMake("layers", in: state, mode: 0o700)
        workDirectory = try Self.openOrMake("work", in: state, mode: 0o700)
        lockFile = try state.openFile("lock", O_RDWR | O_CREAT, mode: 0o600)
        try tidy()
    }

    private static func makeRoot(_ root: FilePath) throws {
        var path = FilePath(root.root?.string ?? "")
        for component in root.components {
            path.append(component)
            let made = path.withPlatformString { Glibc.mkdir($0, 0o700) }
            if made != 0 && Glibc.errno != EEXIST {
                throw StoreError("cannot create the store \(root): \(SystemError.last("mkdir", path: path.string))")
            }
        }
    }

    private static func openOrMake(_ name: FilePath, in parent: Directory, mode: mode_t) throws -> Directory {
        do {
            try parent.makeDirectory(name, mode: mode)
        } catch let error as SystemError where error.errno == .fileExists {}
        return try parent.openDirectory(beneath: name)
    }

    /// Runs `body` holding the store's lock, so that no other berth publishes meanwhile.
    func withStoreLock<T>(_ body: () throws -> T) throws -> T {
        _ = try lockFile.lock(.exclusive, wait: true)
        defer { lockFile.unlock() }
        return try body()
    }

    /// Removes staging entries whose owner is gone (their lock can be taken), unmounting first
    /// what a killed `export` left mounted there. It holds the store's lock, as `makeStaging`
    /// does between making an entry and locking it, so a fresh entry is never taken for a dead one.
    private func tidy() throws {
        try withStoreLock { try tidyStaging() }
    }

    private func tidyStaging() throws {
        for name in try stagingDirectory.entryNames() {
            guard let entry = try? stagingDirectory.openDirectory(beneath: name) else {
                try? stagingDirectory.removeTree(name)
                continue
            }
            if try entry.descriptor.lock(.exclusive, wait: false) {
                do {
                    try stagingDirectory.removeTree(name)
                } catch let error as SystemError where error.errno == .resourceBusy {
                    try unmountAll(under: root.appending(".berth/staging").appending(name.components))
                    try stagingDirectory.removeTree(name)
                }
            }
        }
    }

    /// Lazily unmounts every mount at or below `path`, deepest first.
    private func unmountAll(under path: FilePath) throws {
        guard let real = realPath(path) else { return }
        let inside = try Mount.table().map(\.path).filter { $0.starts(with: real) }
        for mountPoint in inside.reversed() { try? Mount.unmount(mountPoint, detach: true) }
    }

    /// Starts a staging area for `purpose`, locked for as long as it lives. Never called with
    /// the store's lock held: it takes it itself, so that no `tidy` sees the entry unlocked.
    func makeStaging(_ purpose: String) throws -> Staging {
        try withStoreLock {
            for _ in 0..<16 {
                let name = FilePath("\(purpose)-\(randomSuffix())")
                do {
                    try stagingDirectory.makeDirectory(name, mode: 0o700)
                } catch let error as SystemError where error.errno == .fileExists {
                    continue
                }
                let directory = try stagingDirectory.openDirectory(beneath: name)
                _ = try directory.descriptor.lock(.exclusive, wait: true)
                return Staging(name: name, directory: directory, store: self)
            }
            throw StoreError("cannot make a staging directory in \(root)/.berth/staging")
        }
    }

    func warn(_ message: String) { onWarning?(Printable.escaping(message)) }

    /// Runs what is left of a change after its commit (the rename that publishes it): syncing
    /// the directory so that the rename survives a crash, moving what it replaced away. The
    /// change took effect, so a failure here does not make the command fail: it is a warning
    /// that says what was done and what was not. `point` names the step for `BERTH_FAIL_AT`.
    func afterCommit(_ point: String, done change: @autoclosure () -> String, _ body: () throws -> Void) {
        do {
            try FaultPoint.check(point, point.hasSuffix("-sync") ? "fsync" : "rename", path: root.string)
            try body()
        } catch {
            let what = point.hasSuffix("-sync")
                ? "it could not be made durable (\(error)); a crash before the file system writes it back may undo it"
                : "what it left behind could not be moved away (\(error)); 'berth gc' frees it later"
            warn("\(change()), but \(what)")
        }
    }

    /// The path of directory image `name`, for messages and for tools that take paths.
    public func path(of name: ImageName) -> FilePath { root.appending(name.rawValue) }

    /// Where berth's own state is, for paths handed to the kernel (overlay layers, mount points).
    var statePath: FilePath { root.appending(Self.stateName.components) }
}

/// Work in progress under `.berth/staging`: removed with everything in it when discarded, and
/// by the next store that opens if this process dies first.
final class Staging {
    let name: FilePath
    let directory: Directory
    private unowned let store: ImageStore

    init(name: FilePath, directory: Directory, store: ImageStore) {
        self.name = name
        self.directory = directory
        self.store = store
    }

    /// Removes the staging area and all in it.
    func discard() {
        try? store.stagingDirectory.removeTree(name)
    }
}

/// Twelve random hexadecimal digits, for names of work in progress and of layers.
func randomSuffix() -> String { Hex.random(12) }
