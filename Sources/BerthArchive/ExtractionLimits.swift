/// How much an extraction may write before it is stopped.
public struct ExtractionLimits: Sendable {
    /// The most one extraction writes: file data, counted by the sizes the archive claims
    /// (sparse holes included), and every other entry at what it costs on disk at least
    /// (`directoryCost` a directory, `entryCost` anything else). It stops decompression bombs,
    /// of data or of directories, before they fill the disk.
    public var maxBytes: Int64
    /// The most entries one extraction makes: each costs an inode, and a directory costs memory
    /// until its metadata is set at the end.
    public var maxEntries: Int

    public init(maxBytes: Int64, maxEntries: Int = Self.standardMaxEntries) {
        self.maxBytes = maxBytes
        self.maxEntries = maxEntries
    }

    /// 64 GiB: far above any root file system, far below what would hurt a host.
    public static let standard = ExtractionLimits(maxBytes: 64 << 30)
    /// Two million: a Debian system with desktop and documentation has a few hundred thousand.
    public static let standardMaxEntries = 2_000_000
    /// What a directory counts for against `maxBytes`: one 4 KiB block, as ext4 and xfs give it.
    public static let directoryCost: Int64 = 4096
    /// What any other entry (a symlink, a device node, an empty file) counts for besides its data.
    public static let entryCost: Int64 = 512
}

/// Where an extraction stands, for a progress display.
public struct ExtractionProgress: Sendable {
    public var entries: Int
    public var bytesWritten: Int64
    public var inputBytesRead: Int64
    public var inputSize: Int64?
    public var seconds: Double
    /// Set on the last report, once every member is written and the directories' metadata set;
    /// what follows (the import's sync) is the caller's.
    public var finished = false
}
