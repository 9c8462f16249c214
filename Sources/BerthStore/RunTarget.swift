import BerthArchive
import BerthSystem
import Glibc
import SystemPackage

/// What a run's `-D DIR` or `-M NAME` resolves to: the tree to launch, held for the run (a
/// directory's lock, or an image's use), so that no writer meets another. The one way both the
/// command line and anything else that launches find what to run.
public final class RunTarget {
    /// The machine's name: the image's, or the directory's last component.
    public let name: String
    public let tree: RootTree
    /// Run read-only: asked for, or the image is marked so.
    public let readOnly: Bool
    /// Where the user knows the tree to be, for messages.
    public let displayPath: String
    /// The descriptors that hold the tree, for a process that takes the run over.
    public let lockDescriptors: [Int32]
    /// The identity files the image still shares with the one it came from
    /// (`ImageUse.inheritedIdentity`): a boot gives the machine its own in their place.
    public let inheritedIdentity: [FilePath]
    /// Where the image's tree was taken away from for the run, which mounts an overlay of its
    /// own on the image's writable layer: the run's supervisor mounts it there again at the end.
    public let remountAfterExit: FilePath?
    private let hold: AnyObject

    private init(name: String, tree: RootTree, readOnly: Bool, displayPath: String, lockDescriptors: [Int32], hold: AnyObject) {
        inheritedIdentity = []
        remountAfterExit = nil
        self.name = name
        self.tree = tree
        self.readOnly = readOnly
        self.displayPath = displayPath
        self.lockDescriptors = lockDescriptors
        self.hold = hold
    }

    /// `-D path`: the directory, locked as an image is (writers alone, readers together).
    public static func directory(_ path: String, _ access: ImageAccess) throws -> RunTarget {
        guard let root = realPath(FilePath(path)) else {
            throw StoreError(.notFound, "cannot use \(path) as the container's root: it does not exist")
        }
        guard root != "/" else { throw StoreError(.invalidInput, "-D / would run the host's own root; give another directory") }
        let tree = try Directory(opening: root)
        try requireOSTree(tree, root.string)
        guard try tree.descriptor.lock(access == .writable ? .exclusive : .shared, wait: false) else {
            throw StoreError(.inUse, access == .writable
                ? "\(root) is in use by another container; stop it, or run this one --read-only or --ephemeral"
                : "\(root) is in use by a container that writes to it; stop it first")
        }
        return RunTarget(name: root.lastComponent?.string ?? root.string, tree: RootTree(root: root), readOnly: access == .readOnly,
                         displayPath: root.string, lockDescriptors: [tree.rawValue], hold: tree)
    }

    /// An image's use, as a run target; `remountingAt`, where its tree goes back when the run ends.
    init(_ use: ImageUse, displayPath: FilePath, remountingAt: FilePath? = nil) throws {
        if !use.isLayered { try Self.requireOSTree(Directory(opening: use.root), displayPath.string) }
        name = use.name.rawValue
        tree = use.tree
        readOnly = use.readOnly
        self.displayPath = displayPath.string
        lockDescriptors = [use.lockDescriptor]
        inheritedIdentity = use.inheritedIdentity
        remountAfterExit = remountingAt
        hold = use
    }

    /// A writable use of a layered image whose run shares its tree's mount at `tree`.
    init(keptTreeOf use: ImageUse, at tree: FilePath) {
        name = use.name.rawValue
        self.tree = RootTree(root: tree)
        readOnly = false
        displayPath = tree.string
        lockDescriptors = [use.lockDescriptor]
        inheritedIdentity = use.inheritedIdentity
        remountAfterExit = nil
        hold = use
    }

    private static func requireOSTree(_ tree: Directory, _ path: String) throws {
        guard ImageCatalog.isOSTree(tree) else {
            throw StoreError(.invalidInput, "\(path) is not an OS tree: it has no /usr or os-release; give the root of an installed system")
        }
    }
}

extension ImageStore {
    /// `-M name`: the image, taken for use. A writable run of a layered image either mounts an
    /// overlay of its own (`ownOverlay`: under a user namespace, over idmapped layers), for which
    /// the image's tree is taken away from `ROOT/NAME` until the run ends, or shares that tree's
    /// mount, which then shows the machine's tree while it runs.
    public func runTarget(_ name: ImageName, _ access: ImageAccess, ownOverlay: Bool = true) throws -> RunTarget {
        let use = try use(name, access)
        guard use.isLayered, use.upper != nil else { return try RunTarget(use, displayPath: path(of: name)) }
        if ownOverlay {
            try releaseTree(name)
            return try RunTarget(use, displayPath: path(of: name), remountingAt: path(of: name))
        }
        try mountTree(name)
        return RunTarget(keptTreeOf: use, at: path(of: name))
    }
}

extension RunTarget {
    /// nspawn's `--template=DIR`: where the run's directory `path` does not exist yet, it is made
    /// a copy of `template` (owners, modes, times, ACLs and extended attributes kept, as an
    /// import copies a directory), staged beside it under a hidden name and renamed into place
    /// once whole, so a copy that fails leaves nothing behind. An existing `path` is run as it is.
    public static func make(_ path: String, from template: String) throws {
        let target = FilePath(path)
        guard (try FileStatus.of(target)) == nil else { return }
        guard let templateRoot = realPath(FilePath(template)) else {
            throw StoreError(.notFound, "--template \(template) does not exist; give the directory tree to copy")
        }
        try requireOSTree(Directory(opening: templateRoot), templateRoot.string)
        guard let name = target.lastComponent else { throw StoreError(.invalidInput, "-D \(path) names no directory to make") }
        let parentPath = target.removingLastComponent().isEmpty ? FilePath(".") : target.removingLastComponent()
        let parent: Directory
        do {
            parent = try Directory(opening: parentPath)
        } catch {
            throw StoreError(.notFound, "cannot make \(path) from --template: \(parentPath) does not exist; make it first")
        }
        let staged = FilePath(".#\(name.string)-berth-\(Hex.random(8))")
        try parent.makeDirectory(staged, mode: 0o700)
        do {
            try Extractor(into: parent.openDirectory(beneath: staged)).extract(from: TreeReader(templateRoot))
            try parent.setMode(staged, 0o755)  // nspawn's new root, not the template's
            try parent.sync()
            try parent.rename(staged, to: FilePath(root: nil, [name]), .noReplace)
        } catch {
            try? parent.removeTree(staged)
            throw StoreError.wrapping(error, "cannot make \(path) from --template \(template)")
        }
    }
}

extension RunTarget {
    /// The machine id the tree holds in /etc/machine-id (as 8-4-4-4-12), which nspawn makes the
    /// container's uuid (`container_uuid`, and the journal's directory for --link-journal); nil
    /// where it has none of its own: none, "uninitialized", not 32 hexadecimal digits, all
    /// zero, or one a clone still shares with the image it came from (its boot gets a new one).
    public var machineID: String? {
        guard !inheritedIdentity.contains("etc/machine-id") else { return nil }
        // Layers top first: the first that has an entry decides (a whiteout hides the rest).
        let places = tree.isLayered ? (tree.upper.map { [$0.layer] } ?? []) + tree.lowerLayers : [tree.root]
        for place in places {
            guard let etc = try? Directory(opening: place).openDirectory(beneath: "etc"),
                  let status = try? etc.status("machine-id") else { continue }
            guard status.kind == .regular, let bytes = try? etc.openFile("machine-id", O_RDONLY).readAll(limit: 64) else { return nil }
            let text = String(decoding: bytes, as: UTF8.self).filter { !$0.isWhitespace }.lowercased()
            guard text.count == 32, text.allSatisfy(\.isHexDigit), text.contains(where: { $0 != "0" }) else { return nil }
            var digits = Array(text)
            for dash in [20, 16, 12, 8] { digits.insert("-", at: dash) }
            return String(digits)
        }
        return nil
    }
}
