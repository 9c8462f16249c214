import BerthSystem
import Glibc
import SystemPackage

/// The store's directories, each opened once, its lock, and how a change reports what it left
/// undone. Every part of the store works through one of these:
///
///     ROOT/NAME                   a directory image: a plain OS tree, as machinectl keeps them
///     ROOT/.berth/images/NAME/    a layered image: its record (`image`, see LayerStack), and
///                                 `mounted` while `berth mount` shows it somewhere
///     ROOT/.berth/layers/ID/      one layer: a tree as overlayfs keeps it (whiteouts, opaque
///                                 directories); frozen once an image stacks on it
///     ROOT/.berth/work/ID/        overlayfs's work directory for the writable layer ID
///     ROOT/.berth/usage/          disk usage measured once (see UsageFigures)
///     ROOT/.berth/cache/KEY       the build cache (see BuildCache)
///     ROOT/.berth/lock            taken while a change is published, so checks and renames are one step
///     ROOT/.berth/staging/ID      work in progress (see StagingArea)
final class StoreDirectories {
    let root: FilePath
    let rootDirectory: Directory
    let state: Directory
    let staging: Directory
    let images: Directory
    let layers: Directory
    let work: Directory
    private let lockFile: Descriptor
    /// Told what went wrong without failing the command (see `afterCommit`). One line each,
    /// escaped. Unset, warnings are dropped.
    var onWarning: ((String) -> Void)?

    static let stateName: FilePath = ".berth"

    /// Opens `.berth` in the store at `root` (whose directory `rootDirectory` is), making what
    /// is missing of it when `make` is set; nil when it is not there and `make` is not set.
    init?(root: FilePath, rootDirectory: Directory, make: Bool) throws {
        self.root = root
        self.rootDirectory = rootDirectory
        if !make, try rootDirectory.status(Self.stateName) == nil { return nil }
        let open = { (name: FilePath, parent: Directory) throws -> Directory in
            if make { try Self.makeDirectory(name, in: parent) }
            return try parent.openDirectory(beneath: name)
        }
        state = try open(Self.stateName, rootDirectory)
        staging = try open("staging", state)
        images = try open("images", state)
        layers = try open("layers", state)
        work = try open("work", state)
        lockFile = try state.openFile("lock", make ? O_RDWR | O_CREAT : O_RDONLY, mode: 0o600)
    }

    /// Makes `name` in `parent` (mode 0700: images hold setuid binaries and device nodes) unless
    /// it is there.
    static func makeDirectory(_ name: FilePath, in parent: Directory) throws {
        do {
            try parent.makeDirectory(name, mode: 0o700)
        } catch let error as SystemError where error.errno == .fileExists {}
    }

    /// A directory of `.berth` that older stores may lack: made when `make` is set, else nil
    /// when it is not there.
    func optionalDirectory(_ name: FilePath, make: Bool) throws -> Directory? {
        if make { try Self.makeDirectory(name, in: state) }
        guard try state.status(name) != nil else { return nil }
        return try state.openDirectory(beneath: name)
    }

    /// Runs `body` holding the store's lock, so that no other berth publishes meanwhile.
    func withStoreLock<T>(_ body: () throws -> T) throws -> T {
        _ = try lockFile.lock(.exclusive, wait: true)
        defer { lockFile.unlock() }
        return try body()
    }

    /// Where berth's own state is, for paths handed to the kernel (overlay layers, mount points).
    var statePath: FilePath { root.appending(Self.stateName.components) }

    /// Whether `entry` of the store's root holds a directory image. A layered image's tree is
    /// mounted at `ROOT/NAME` (ImageMounts), so a directory there is the mount point of the
    /// layered image `NAME` when that image has a record and the directory is empty or has an
    /// overlay mounted on it: no OS tree is empty, and berth makes no directory image an overlay.
    /// Any other directory is a directory image, and wins over a record of the same name (see
    /// LayeredChanges).
    func holdsDirectoryImage(_ entry: FilePath) throws -> Bool {
        guard try rootDirectory.status(entry)?.kind == .directory else { return false }
        guard try images.status(entry) != nil else { return true }
        return try !Self.isTreeMountPoint(rootDirectory.openDirectory(beneath: entry, crossingMounts: true))
    }

    /// An overlay's root, or an empty directory.
    static func isTreeMountPoint(_ directory: Directory) throws -> Bool {
        try directory.descriptor.isOverlay() || directory.entryNames().isEmpty
    }

    /// The host path of layer `id`, and of overlayfs's work directory for it.
    func layerPath(_ id: String) -> FilePath { statePath.appending("layers").appending(id) }
    func workPath(_ id: String) -> FilePath { statePath.appending("work").appending(id) }

    func warn(_ message: String) { onWarning?(Printable.escaping(message)) }

    /// Runs what is left of a change after its commit (the rename that publishes it): syncing
    /// the directory so that the rename survives a crash, moving what it replaced away. The
    /// change took effect, so a failure here does not make the command fail: it is a warning
    /// that says what was done and what was not. `point` names the step for `BERTH_FAIL_AT`.
    func afterCommit(_ point: String, done change: @autoclosure () -> String, _ body: () throws -> Void) {
        do {
            try FaultPoint.check(point, point.hasSuffix("-sync") ? "fsync" : point.hasSuffix("-mount") ? "mount" : "rename", path: root.string)
            try body()
        } catch {
            let what = point.hasSuffix("-sync")
                ? "it could not be made durable (\(error)); a crash before the file system writes it back may undo it"
                : point.hasSuffix("-mount")
                ? "its tree could not be mounted in \(root) (\(error)); the next berth command tries again"
                : "what it left behind could not be moved away (\(error)); 'berth gc' frees it later"
            warn("\(change()), but \(what)")
        }
    }
}

/// Twelve random hexadecimal digits, for names of work in progress and of layers.
func randomSuffix() -> String { Hex.random(12) }

