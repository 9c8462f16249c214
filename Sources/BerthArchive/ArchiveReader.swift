import BerthSystem
import CArchive
import Glibc
import SystemPackage

/// Where members come from: a tar stream, or a tree on disk.
public protocol MemberSource: AnyObject {
    /// What is being read, for messages.
    var sourceName: String { get }
    /// The next member, or nil at the end. The entry is reused by the next call.
    func nextEntry() throws -> ArchiveEntry?
    /// The next block of the current member's data and its offset in the file (blocks may skip
    /// over holes of a sparse file); nil after the last.
    func readBlock() throws -> (bytes: UnsafeRawBufferPointer, offset: Int64)?
}

/// Reads the members of a tar stream one at a time. Owns its `archive`.
public final class ArchiveReader: MemberSource {
    private let pointer: OpaquePointer
    private let entry = ArchiveEntry()
    /// What is being read, for messages.
    public let sourceName: String

    // Tar streams: the decompressing producer and the block handed to libarchive last.
    private let stream: DecompressedStream?

    private var entryCount = 0

    private init(pointer: OpaquePointer, sourceName: String, stream: DecompressedStream?) {
        self.pointer = pointer
        self.sourceName = sourceName
        self.stream = stream
    }

    deinit { archive_read_free(pointer) }

    /// pax headers carry names in UTF-8, which libarchive converts to the locale's character set:
    /// in a UTF-8 locale that is no conversion at all, and names that are not ASCII survive.
    private static let utf8Locale: Void = { _ = setlocale(LC_CTYPE, "C.UTF-8") }()

    /// A reader of the tar archive carried by `stream` (tar, pax, GNU and ustar formats).
    public static func tar(from stream: DecompressedStream) throws -> ArchiveReader {
        _ = utf8Locale
        guard let a = archive_read_new() else { throw ArchiveError("out of memory") }
        archive_read_support_format_tar(a)
        archive_read_support_format_gnutar(a)
        let reader = ArchiveReader(pointer: a, sourceName: stream.sourceName, stream: stream)
        let context = Unmanaged.passUnretained(stream).toOpaque()
        let rc = archive_read_open(a, context, nil, { _, context, buffer in
            // libarchive hands back the context given to it and a place for the block; -1 is
            // ARCHIVE_FATAL, should either be missing.
            guard let context, let buffer else { return -1 }
            let stream = Unmanaged<DecompressedStream>.fromOpaque(context).takeUnretainedValue()
            guard let block = stream.nextBlock() else { return stream.failed ? -1 : 0 }
            buffer.pointee = block.baseAddress
            return block.count
        }, nil)
        if rc != ARCHIVE_OK { throw reader.openFailure() }
        return reader
    }

    private func openFailure() -> ArchiveError {
        if let stream, let failure = stream.failure { return ArchiveError(failure) }
        return notTar(after: 0)
    }

    /// The error for a stream that does not hold (more) tar members.
    private func notTar(after entries: Int) -> ArchiveError {
        if entries == 0, let stream, stream.bytesDelivered == 0 {
            return ArchiveError("it is empty; there is no tar archive in it")
        }
        let after = entries == 0 ? " (is it a tarball?)" : " after member \(entries)"
        return ArchiveError.libarchive(pointer, "not a valid tar archive\(after)")
    }

    public func nextEntry() throws -> ArchiveEntry? {
        let rc = archive_read_next_header2(pointer, entry.pointer)
        if rc == ARCHIVE_EOF {
            guard entryCount > 0 else {
                if let stream, stream.bytesDelivered == 0 { throw notTar(after: 0) }
                // An end-of-archive block first: an empty tarball, or no tarball at all (an ISO
                // image, a disk, zeros), which would import as an empty image.
                throw ArchiveError("it holds no tar members: it starts with a block of zeros (an empty tarball, a disk image or zeros); give a tarball of a root file system")
            }
            return nil
        }
        if rc < ARCHIVE_WARN {
            if let stream, let failure = stream.failure { throw ArchiveError(failure) }
            throw notTar(after: entryCount)
        }
        entryCount += 1
        return entry
    }

    public func readBlock() throws -> (bytes: UnsafeRawBufferPointer, offset: Int64)? {
        var buffer: UnsafeRawPointer?
        var size = 0
        var offset: la_int64_t = 0
        let rc = archive_read_data_block(pointer, &buffer, &size, &offset)
        if rc == ARCHIVE_EOF { return nil }
        if rc < ARCHIVE_WARN {
            if let stream, let failure = stream.failure {
                throw ArchiveError("\(failure), in member '\(entry.path)'")
            }
            throw ArchiveError.libarchive(pointer, "reading member '\(entry.path)'")
        }
        return (UnsafeRawBufferPointer(start: buffer, count: size), offset)
    }
}
