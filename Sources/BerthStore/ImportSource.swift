import BerthArchive
import BerthSystem
import Glibc
import SystemPackage

/// Where an import reads from.
public enum ImportSource: Sendable {
    /// A tarball, compressed or not.
    case tarball(FilePath)
    /// A tarball on standard input.
    case standardInput
    /// A directory tree, copied.
    case directory(FilePath)

    /// The source named on the command line: `-` for standard input, else a file or a directory.
    public init(argument: String) throws {
        if argument == "-" {
            self = .standardInput
            return
        }
        let status: FileStatus?
        do {
            status = try FileStatus.of(FilePath(argument))
        } catch let error as SystemError {
            throw StoreError(.systemFailure, "cannot read \(argument): \(error.errno)")
        }
        guard let status else {
            throw StoreError(.notFound, "\(argument) does not exist; give a tarball, a directory, or '-' for standard input")
        }
        switch status.kind {
        case .directory: self = .directory(FilePath(argument))
        // A character device is read as a stream (/dev/null is an empty one; /dev/zero fails at
        // its first block of zeros): only what cannot be a stream at all is refused.
        case .regular, .fifo, .characterDevice: self = .tarball(FilePath(argument))
        default: throw Self.notReadable(argument, status.kind)
        }
    }

    /// A block device (a whole disk), a socket or the like is no tarball.
    static func notReadable(_ path: String, _ kind: FileStatus.Kind) -> StoreError {
        let what = kind == .blockDevice ? "a block device" : kind == .socket ? "a socket" : "not a regular file"
        return StoreError(.invalidInput, "\(path) is \(what), not a tarball or a directory; give a tarball file, a directory, or '-' for standard input")
    }

    var displayName: String {
        switch self {
        case .tarball(let path), .directory(let path): return path.string
        case .standardInput: return "standard input"
        }
    }
}

public struct ImportOptions {
    public var readOnly = false
    public var force = false
    /// The SHA-256 the tarball must have, as lower-case hexadecimal.
    public var expectedSHA256: String?
    public var limits = ExtractionLimits.standard
    public var onProgress: ((ExtractionProgress) -> Void)?

    public init() {}
}

public struct ImportResult {
    public var name: ImageName
    public var entries: Int
    public var bytes: Int64
    /// The compression found in the tarball; nil for a directory.
    public var compression: String?
    public var sha256: String?
    /// Attributes in the source that were not applied (overlayfs's own, or ones the store's file
    /// system cannot hold).
    public var skippedAttributes: [String]
    /// Whether the tree was unwrapped from a single top-level directory.
    public var unwrapped: Bool
}

