import BerthArchive
import BerthSystem
import Glibc
import SystemPackage

/// The image store: a directory of machine images, `/var/lib/machines` by default.
///
/// A small façade over the types that do the work, each holding one part of the store (see
/// StoreDirectories for the layout): StagingArea (work in progress), ImageRecords and
/// LayerStack (layered images' records), LayerStore (layers) and UsageFigures (their measured
/// usage), ImageCatalog (finding and locking images), ImageListing, ImageImporter,
/// ImageExporter, ImageChanges (rename, remove, read-only), LayeredChanges (clone, snapshot,
/// restore), GarbageCollector, ImageUses and ImageMounts (using and mounting trees), BuildCache
/// and ImageBuilds (`berth build`). What leaves it as an error is a `StoreError`.
public final class ImageStore {
    /// How a command opens the store.
    public enum Access: Sendable {
        /// Made if missing (`import`, `build`).
        case create
        /// It must exist; berth's state in it is made if missing.
        case open
        /// It must exist, and nothing in it is written, not even berth's state (`list`, `show`).
        case read
    }

    public let root: FilePath
    private let rootDirectory: Directory
    /// nil only for a store opened for reading that has no `.berth`.
    private let store: StoreDirectories?
    private let figures: UsageFigures

    /// Told what went wrong without failing the command: a change that took effect but could
    /// not be made durable or cleaned up after, a record that cannot be read. One line each,
    /// escaped. Unset, warnings are dropped.
    public var onWarning: ((String) -> Void)? {
        didSet { store?.onWarning = onWarning }
    }

    /// Opens the store at `root` (with `.create`, made with mode 0700 first: images hold setuid
    /// binaries and device nodes) and, unless opened for reading, removes what interrupted
    /// commands left behind.
    public init(root: FilePath, access: Access) throws {
        self.root = root
        if access == .create { try Self.makeRoot(root) }
        do {
            rootDirectory = try Directory(opening: root)
        } catch let error as SystemError where error.errno == .noSuchFileOrDirectory {
            throw StoreError(.notFound, "no store at \(root); import an image first, or pass --store DIR")
        } catch {
            throw StoreError.wrapping(error, "cannot open the store \(root)")
        }
        do {
            store = try StoreDirectories(root: root, rootDirectory: rootDirectory, make: access != .read)
            figures = try UsageFigures(store, make: access != .read)
            if access != .read, let store { try StagingArea(store: store).tidy() }
        } catch {
            throw StoreError.wrapping(error, "cannot open the store \(root)")
        }
        mountedAtOpen = restoreTrees(makingMountPoints: access != .read)
    }

    /// The trees that were missing and mounted when the store was opened.
    private var mountedAtOpen: [ImageName] = []

    /// Mounts the layered images' trees missing at `ROOT/NAME`: a failure is told, and the
    /// command goes on (the next one tries again).
    @discardableResult
    private func restoreTrees(makingMountPoints: Bool) -> [ImageName] {
        guard let store else { return [] }
        do {
            return try ImageMounts(catalog: catalog, store: store).restoreTrees(makingMountPoints: makingMountPoints)
        } catch {
            store.warn("cannot mount the images' trees in \(root) again: \(error)")
            return []
        }
    }

    /// `berth mount --all`, for the host's boot: mounts every layered image's tree that is not
    /// at `ROOT/NAME`, and returns their names.
    public func mountTrees() throws -> [ImageName] {
        try guarded { try mountedAtOpen + ImageMounts(catalog: catalog, store: state()).restoreTrees() }
    }

    public convenience init(root: FilePath, create: Bool) throws {
        try self.init(root: root, access: create ? .create : .open)
    }

    private static func makeRoot(_ root: FilePath) throws {
        var path = FilePath(root.root?.string ?? "")
        for component in root.components {
            path.append(component)
            let made = path.withPlatformString { Glibc.mkdir($0, 0o700) }
            if made != 0 && Glibc.errno != EEXIST {
                throw StoreError(.systemFailure, "cannot create the store \(root): \(SystemError.last("mkdir", path: path.string))")
            }
        }
    }

    // MARK: The parts

    private var catalog: ImageCatalog { ImageCatalog(root: root, rootDirectory: rootDirectory, store: store) }

    /// The store's state, for what changes it; a store opened for reading has none to change.
    private func state() throws -> StoreDirectories {
        guard let store else { throw StoreError(.invalidInput, "the store \(root) was opened for reading only") }
        return store
    }

    private func layers() throws -> LayerStore { LayerStore(store: try state(), figures: figures) }
    private func uses() -> ImageUses { ImageUses(catalog: catalog, figures: figures) }
    private func mounts() throws -> ImageMounts { ImageMounts(catalog: catalog, store: try state()) }
    private func cache() throws -> BuildCache { BuildCache(store: try state()) }
    private func changes() throws -> ImageChanges { ImageChanges(catalog: catalog, store: try state(), layers: try layers(), cache: try cache()) }
    private func layered() throws -> LayeredChanges { LayeredChanges(catalog: catalog, store: try state(), layers: try layers()) }
    private func builds() throws -> ImageBuilds { ImageBuilds(catalog: catalog, store: try state(), layers: try layers()) }

    /// What leaves the store is a StoreError; other errors (a recipe step's, from a closure the
    /// caller gave) pass as they are.
    private func guarded<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as SystemError {
            throw StoreError.wrapping(error)
        } catch let error as ArchiveError {
            throw StoreError.wrapping(error)
        }
    }

    // MARK: Images

    /// Where image `name`'s tree is: a directory image's own directory, or the mount of a layered
    /// image's tree.
    public func path(of name: ImageName) -> FilePath { root.appending(name.rawValue) }

    public func imageExists(_ name: ImageName) throws -> Bool { try guarded { try catalog.exists(name) } }

    /// Every image, by name. With `measuringUsage`, directory images whose usage is not known
    /// are walked (see UsageFigures); without it their usage is nil.
    public func images(measuringUsage: Bool = false) throws -> [ImageInfo] {
        try guarded { try ImageListing(catalog: catalog, figures: figures, measure: measuringUsage).images(warn: warn) }
    }

    /// One image in full, its usage measured if it is not known.
    public func image(_ name: ImageName) throws -> ImageInfo {
        try guarded { try ImageListing(catalog: catalog, figures: figures, measure: true).image(name) }
    }

    public func importImage(from source: ImportSource, as name: ImageName, options: ImportOptions) throws -> ImportResult {
        try guarded { try ImageImporter(catalog: catalog, store: state(), layers: layers()).importImage(from: source, as: name, options: options) }
    }

    public func export(_ name: ImageName, to file: String, force: Bool = false,
                       onProgress: ((ExportProgress) -> Void)? = nil) throws {
        try guarded {
            try ImageExporter(uses: uses(), mounts: store.map { ImageMounts(catalog: catalog, store: $0) })
                .export(name, to: file, force: force, onProgress: onProgress)
        }
    }

    public func rename(_ old: ImageName, to new: ImageName) throws { try guarded { try changes().rename(old, to: new) } }

    @discardableResult
    public func remove(_ names: [ImageName]) throws -> Removal { try guarded { try changes().remove(names) } }

    public func setReadOnly(_ name: ImageName, _ readOnly: Bool) throws { try guarded { try changes().setReadOnly(name, readOnly) } }

    public func clone(_ source: ImageName, to target: ImageName, readOnly: Bool) throws {
        try guarded { try layered().clone(source, to: target, readOnly: readOnly) }
    }

    public func restore(_ name: ImageName, from snapshot: ImageName) throws {
        try guarded { try layered().restore(name, from: snapshot) }
    }

    public func collectGarbage() throws -> CollectedGarbage {
        try guarded { try GarbageCollector(store: state(), layers: layers(), cache: cache()).collect() }
    }

    // MARK: Using images

    /// Takes `name` for use: exclusively for a writable use, shared for the others.
    public func use(_ name: ImageName, _ access: ImageAccess) throws -> ImageUse {
        try guarded { try uses().use(name, access) }
    }

    /// Mounts layered image `name`'s merged tree at `directory` on the host, writable unless the
    /// image is read-only, with `attributes` (by default nosuid and nodev).
    public func mount(_ name: ImageName, at directory: FilePath, attributes: MountAttributes = [.noSetUID, .noDevices]) throws {
        try guarded { try mounts().mount(name, at: directory, attributes: attributes, uses: uses()) }
    }

    public func unmount(_ directory: FilePath) throws { try guarded { try mounts().unmount(directory) } }

    /// Takes layered image `name`'s tree away from `ROOT/NAME`, refused while it is in use.
    func releaseTree(_ name: ImageName) throws { try guarded { try mounts().releaseTree(name) } }

    /// Mounts layered image `name`'s tree at `ROOT/NAME`, unless it is there.
    func mountTree(_ name: ImageName) throws {
        try guarded { try mounts().mountTree(name) }
    }

    // MARK: Builds

    /// The stack (bottom first) cached under `key`, when it is there and all its layers are.
    public func cachedStack(_ key: String) throws -> [String]? { try guarded { try cache().stack(key) } }
    public func cacheStack(_ key: String, _ stack: [String]) throws { try guarded { try cache().record(key, stack) } }
    /// Forgets every cache entry (their layers go with the next gc, unless an image uses them).
    public func dropCache() throws { try guarded { try cache().drop() } }

    /// Makes a bottom layer: `fill` gets an empty directory (mode 0755) and puts a tree in it.
    /// The layer is kept only when `fill` returns.
    public func makeBaseLayer(_ fill: (FilePath) throws -> Void) throws -> String {
        try guarded { try builds().makeBaseLayer(fill) }
    }

    /// A bottom layer holding the tarball at `path`, whose SHA-256 must be `sha256`.
    public func makeBaseLayer(fromTarball path: FilePath, sha256: String) throws -> String {
        try makeBaseLayer { tree in
            var options = ImportOptions()
            options.expectedSHA256 = sha256
            let (_, _, digest) = try ImageImporter.extract(.tarball(path), into: Directory(opening: tree), options: options)
            if let digest, digest != sha256 {
                throw StoreError(.invalidInput, "\(path) has SHA-256 \(digest), not the \(sha256) the recipe gives")
            }
        }
    }

    /// Makes a layer over `stack` (bottom first): `fill` changes the merged tree through the
    /// `LayerInProgress`, and the layer holds what changed. It is frozen at once.
    public func makeLayer(on stack: [String], _ fill: (LayerInProgress) throws -> Void) throws -> String {
        try guarded { try builds().makeLayer(on: stack, fill) }
    }

    /// The frozen layers holding image `name`'s content, for a build to start from.
    public func contentLayers(of name: ImageName) throws -> [String] { try guarded { try builds().contentLayers(of: name) } }

    /// Publishes a built image on `stack`; `base` is the image the recipe started from, its parent.
    public func publishBuilt(_ name: ImageName, stack: [String], base: ImageName? = nil, description: String?, recipe: String) throws {
        try guarded { try builds().publish(name, stack: stack, base: base, description: description, recipe: recipe) }
    }

    private func warn(_ message: String) { onWarning?(Printable.escaping(message)) }
}
