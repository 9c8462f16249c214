import BerthArchive
import BerthSystem

/// Why a store operation failed: a kind a caller can test (the command line turns it into an
/// exit status) beside a sentence a user reads, which says what to do about it. Control
/// characters in the sentence (from a name, a record, an archive) are escaped: it stays one line.
public struct StoreError: Error, CustomStringConvertible {
    public enum Kind: String, Sendable {
        /// No such image, layer, store or file.
        case notFound
        /// The name is taken.
        case exists
        /// A container, an export or `berth mount` holds the image.
        case inUse
        /// What the caller gave cannot be used: a name, a value, a file that is no tarball.
        case invalidInput
        /// A system call failed, or the store holds what berth did not write.
        case systemFailure
    }

    public var kind: Kind
    public var message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = Printable.escaping(message)
    }

    /// An error in what the caller gave (the command line's own checks throw these).
    public init(_ message: String) { self.init(.invalidInput, message) }

    public var description: String { message }

    /// The store's errors as they leave it: its own as they are, a failed system call or archive
    /// as a system failure (ENOENT as not found), in the words of `context` when one is given.
    static func wrapping(_ error: Error, _ context: String? = nil) -> StoreError {
        let prefix = context.map { "\($0): " } ?? ""
        switch error {
        case let error as StoreError:
            return context == nil ? error : StoreError(error.kind, prefix + error.message)
        case let error as SystemError:
            return StoreError(error.errno == .noSuchFileOrDirectory ? .notFound : .systemFailure, prefix + "\(error)")
        case let error as ArchiveError:
            return StoreError(.invalidInput, prefix + error.message)
        default:
            return StoreError(.systemFailure, prefix + "\(error)")
        }
    }
}
