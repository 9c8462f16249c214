import BerthSystem
import CArchive

/// Why reading, extracting or writing an archive failed, in words a user can act on.
public struct ArchiveError: Error, CustomStringConvertible {
    public var message: String

    /// Control characters in `message` (a name from the archive, libarchive's words about it)
    /// are escaped, so the error stays one line and cannot drive the terminal.
    public init(_ message: String) { self.message = Printable.escaping(message) }

    /// The error libarchive holds for `archive`, prefixed with what was being done.
    static func libarchive(_ archive: OpaquePointer, _ doing: String) -> ArchiveError {
        let text = archive_error_string(archive).map { String(cString: $0) } ?? "unknown libarchive error"
        return ArchiveError("\(doing): \(text)")
    }

    /// A failure while writing `member`.
    static func member(_ path: String, _ reason: String) -> ArchiveError {
        ArchiveError("member '\(path)': \(reason)")
    }

    static func member(_ path: String, _ error: SystemError) -> ArchiveError {
        switch error.errno {
        case .noSpace:
            return ArchiveError("member '\(path)': the store's file system is full (\(error))")
        case .fileTooLarge:
            return ArchiveError("member '\(path)': file too large for the store's file system")
        case .fileNameTooLong:
            return ArchiveError("member '\(path)': name too long for the file system")
        default:
            return ArchiveError("member '\(path)': \(error)")
        }
    }

    public var description: String { message }
}
