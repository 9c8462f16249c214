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
    private let hold: AnyObject

    private init(name: String, tree: RootTree, readOnly: Bool, displayPath: String, lockDescriptors: [Int32], hold: AnyObject) {
        inheritedIdentity = []
        self.name = name
        self.tree = tree
        self.readOnly = readOnly
        self.displayPath = displayPath
        self.lockDescriptors = lockDescriptors
        self.hold = hold
    }

    /// `-D path`: the directory, locked as an image is (writers alone, readers together).
    public static func directory(_ path: String, _ access: ImageAccess) throws -> RunTarget {
        guard let real = realpath(path, nil) else {
            throw StoreError(.notFound, "cannot use \(path) as the container's root: it does not exist")
        }
        defer { free(real) }
        let root = FilePath(String(cString: real))
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

    /// An image's use, as a run target.
    init(_ use: ImageUse, displayPath: FilePath) throws {
        if !use.isLayered { try Self.requireOSTree(Directory(opening: use.root), displayPath.string) }
        name = use.name.rawValue
        tree = use.tree
        readOnly = use.readOnly
        self.displayPath = displayPath.string
        lockDescriptors = [use.lockDescriptor]
        inheritedIdentity = use.inheritedIdentity
        hold = use
    }

    private static func requireOSTree(_ tree: Directory, _ path: String) throws {
        guard ImageCatalog.isOSTree(tree) else {
            throw StoreError(.invalidInput, "\(path) is not an OS tree: it has no /usr or os-release; give the root of an installed system")
        }
    }
}

extension ImageStore {
    /// `-M name`: the image, taken for use.
    public func runTarget(_ name: ImageName, _ access: ImageAccess) throws -> RunTarget {
        try RunTarget(use(name, access), displayPath: path(of: name))
    }
}
