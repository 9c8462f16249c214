import SystemPackage

/// The tree a container runs on, as the store hands it out: a directory of its own, or layers
/// to stack in an overlay over a directory that marks where it goes.
public struct RootTree: Equatable, Sendable {
    /// A layer that takes the overlay's changes, and overlayfs's work directory beside it.
    public struct WritableLayer: Equatable, Sendable {
        public var layer: FilePath
        public var work: FilePath

        public init(layer: FilePath, work: FilePath) {
            self.layer = layer
            self.work = work
        }
    }

    /// The directory itself, or where the overlay of the layers goes.
    public var root: FilePath
    /// The layers to stack, top first; empty for a directory.
    public var lowerLayers: [FilePath]
    /// The layer that keeps the changes, for a writable use of layers.
    public var upper: WritableLayer?

    public init(root: FilePath, lowerLayers: [FilePath] = [], upper: WritableLayer? = nil) {
        self.root = root
        self.lowerLayers = lowerLayers
        self.upper = upper
    }

    public var isLayered: Bool { !lowerLayers.isEmpty }
}
