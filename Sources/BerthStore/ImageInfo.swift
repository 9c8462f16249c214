/// What the store knows of one image, for `list` and `show`.
public struct ImageInfo: Sendable {
    public enum Kind: String, Sendable {
        /// A plain OS tree at `ROOT/NAME`.
        case directory
        /// Read-only layers and a writable one, merged by overlayfs when used.
        case layered
    }

    public var name: String
    public var kind: Kind
    public var readOnly: Bool
    /// Disk space only this image uses, in bytes (hard links counted once): a directory image's
    /// tree; a layered image's writable layer and the frozen layers no other image stacks on.
    /// nil when it was not measured (see UsageFigures): a directory image changed by a writable
    /// run, or put in the store by another tool, until `list --usage` or `show` measures it.
    public var usage: Int64?
    /// Disk space of the frozen layers this image shares with other images.
    public var sharedUsage: Int64 = 0
    /// Seconds since the epoch: birth time where the file system records it, else the last change.
    public var created: Int64
    /// The image it was cloned or snapshotted from, or built on; directory images have none.
    public var parent: String?
    public var path: String
    /// PRETTY_NAME from the image's os-release, when it has one.
    public var operatingSystem: String?
    /// Read-only layers under the image, bottom first; a directory image is a single tree.
    public var layers: [String]
    /// Images that stand on this one's layers.
    public var dependants: [String]
    /// A line about the image, from the recipe that built it.
    public var description: String? = nil
}
