import BerthSystem
import Glibc
import SystemPackage

/// How a run or a mount uses an image.
public enum ImageAccess: Sendable {
    /// Changes are kept: the user holds the image alone.
    case writable
    /// Nothing can be changed; others may read alongside.
    case readOnly
    /// Changes go to a throwaway layer; others may read alongside.
    case ephemeral
}

/// An image held for use, with what it takes to show its tree: a directory image's own tree,
/// or a layered image's layers for an overlay. The image's lock is held for exactly as long as
/// this object lives (or, handed over, by the process that inherits `lockDescriptor`).
public final class ImageUse {
    public let name: ImageName
    /// The container's root: a directory image's tree, or the directory a layered image's
    /// overlay covers.
    public let root: FilePath
    /// Used read-only: asked for, or the image is marked read-only (as nspawn runs such images).
    public let readOnly: Bool
    /// The layers to stack, top first; empty for a directory image.
    public let lowerLayers: [FilePath]
    /// The writable layer and its overlay work directory, for a writable use of a layered image.
    public let upper: (layer: FilePath, work: FilePath)?
    /// The same layers by id, for mounting them from the store's own descriptors.
    let layerIDs: [String]
    let upperID: String?
    /// Of the files that make a machine's identity (`ImageUse.identityFiles`), those a clone or
    /// an image built on a base still has from the image it came from: its own layer holds no
    /// entry for them yet. Empty for an image of its own.
    public let inheritedIdentity: [FilePath]
    private let lock: ImageLock

    /// The files that tell one machine from another: systemd's machine id and the hostname.
    public static let identityFiles: [FilePath] = ["etc/machine-id", "etc/hostname"]

    init(name: ImageName, root: FilePath, readOnly: Bool, layerIDs: [String], upperID: String?,
         store: StoreDirectories?, inheritedIdentity: [FilePath] = [], lock: consuming ImageLock) {
        self.name = name
        self.inheritedIdentity = inheritedIdentity
        self.root = root
        self.readOnly = readOnly
        self.layerIDs = layerIDs
        self.upperID = upperID
        lowerLayers = store.map { store in layerIDs.map(store.layerPath) } ?? []
        upper = upperID.flatMap { id in store.map { ($0.layerPath(id), $0.workPath(id)) } }
        self.lock = lock
    }

    public var isLayered: Bool { !layerIDs.isEmpty }
    /// The tree to launch: the directory, or the layers over `root`.
    public var tree: RootTree {
        RootTree(root: root, lowerLayers: lowerLayers, upper: upper.map { RootTree.WritableLayer(layer: $0.layer, work: $0.work) })
    }
    /// The descriptor holding the image's lock, for a process that takes over its use.
    public var lockDescriptor: Int32 { lock.rawValue }
}

/// Taking images for use: the lock that keeps writers apart, and what to mount.
struct ImageUses {
    let catalog: ImageCatalog
    let figures: UsageFigures

    /// The identity files the layer `ownLayer` (an image's writable one, read-only runs too)
    /// holds no entry for: not a file, not a whiteout.
    private func inheritedIdentity(ownLayer: String, in store: StoreDirectories) throws -> [FilePath] {
        let layer = try store.layers.openDirectory(beneath: FilePath(ownLayer), pathOnly: true)
        return ImageUse.identityFiles.filter { file in
            do {
                return try layer.status(file) == nil
            } catch {
                return false  // `etc` is no directory there: the image has made its own
            }
        }
    }

    /// Takes `name` for use: exclusively for a writable use, shared for the others. Refused with
    /// an error saying what is possible when another use holds it, or when `berth mount` shows it.
    func use(_ name: ImageName, _ access: ImageAccess, for purpose: ImageLock.Purpose? = nil) throws -> ImageUse {
        let markedReadOnly: Bool
        switch try catalog.require(name) {
        case .directory:
            markedReadOnly = catalog.isMarkedReadOnly(try catalog.rootDirectory.openFile(FilePath(name.rawValue), O_RDONLY | O_DIRECTORY))
        case .layered(let stack):
            markedReadOnly = stack.readOnly
        }
        let writes = access == .writable && !markedReadOnly
        let lock = try catalog.lock(name, writes ? .exclusive : .shared, for: purpose ?? (writes ? .writableRun : .read))
        let readOnly = access == .readOnly || (access == .writable && markedReadOnly)
        // Read again under the lock: a clone may have frozen the upper layer meanwhile.
        switch try catalog.require(name) {
        case .directory:
            // The tree is about to change, and berth will not see the end: its figure goes.
            if writes { figures.forgetTree(name) }
            return ImageUse(name: name, root: catalog.root.appending(name.rawValue), readOnly: readOnly, layerIDs: [],
                            upperID: nil, store: catalog.store, lock: lock)
        case .layered(let stack):
            guard let store = catalog.store else { throw catalog.noImage(name) }
            try ImageMounts(catalog: catalog, store: store).refuseMounted(name)
            let layers = (writes ? stack.layers : stack.allLayers).reversed() as [String]
            return ImageUse(name: name, root: ImageRecords(store: store).mountPoint(of: name), readOnly: readOnly,
                            layerIDs: layers, upperID: writes ? stack.upper : nil, store: store,
                            inheritedIdentity: stack.parent == nil ? [] : try inheritedIdentity(ownLayer: stack.upper, in: store),
                            lock: lock)
        }
    }
}
