import BerthSystem
import Glibc
import SystemPackage

/// A layered image's tree on the host that berth took away for a run (the run mounts an overlay
/// of its own on the same writable layer, and a layer is only ever one overlay's upper): the
/// supervisor mounts it again when the container has ended, while it still holds the image's
/// lock, so that every tool finds the image at its place again. If the supervisor is killed
/// first, the next berth command mounts it (the store's `restoreTrees`).
public struct TreeRemount: Equatable, Sendable {
    /// Where the tree goes: `ROOT/NAME`.
    public let target: FilePath
    /// The image's layers and its writable layer.
    public let tree: RootTree

    public init(target: FilePath, tree: RootTree) {
        self.target = target
        self.tree = tree
    }

    /// Mounts the overlay at `target`, unless something is mounted there already. Only once the
    /// container's mount namespace is gone: the reaped PID 1 was its last process.
    public func mount() throws {
        let directory = try Descriptor.open(target, O_RDONLY | O_DIRECTORY | O_NOFOLLOW)
        guard try !directory.isOverlay() else { return }
        let overlay = try DetachedMount.overlay(lowers: tree.lowerLayers, upper: tree.upper.map { ($0.layer, $0.work) })
        try overlay.attach(onto: directory)
    }

    /// As `berth-stage --supervise` arguments.
    var arguments: [String] {
        ["remount-at=\(Hex.encode(target.bytes))"] + tree.lowerLayers.map { "remount-lower=\(Hex.encode($0.bytes))" }
            + (tree.upper.map { ["remount-upper=\(Hex.encode($0.layer.bytes))", "remount-work=\(Hex.encode($0.work.bytes))"] } ?? [])
    }

    /// From `arguments` (every field, repeated ones in order); nil when there is none or they
    /// are damaged.
    init?(fields: [(key: Substring, value: Substring)]) {
        func path(_ value: Substring) -> FilePath? { Hex.decode(String(value)).map { FilePath(bytes: $0) } }
        var target: FilePath?, lowers: [FilePath] = [], upper: FilePath?, work: FilePath?
        for (key, value) in fields {
            switch key {
            case "remount-at": target = path(value)
            case "remount-lower": if let lower = path(value) { lowers.append(lower) } else { return nil }
            case "remount-upper": upper = path(value)
            case "remount-work": work = path(value)
            default: continue
            }
        }
        guard let target, !lowers.isEmpty, (upper == nil) == (work == nil) else { return nil }
        self.init(target: target, tree: RootTree(root: target, lowerLayers: lowers,
                                                 upper: upper.flatMap { layer in work.map { RootTree.WritableLayer(layer: layer, work: $0) } }))
    }
}
