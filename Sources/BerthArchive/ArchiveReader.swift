import BerthSystem
import CArchive
import Glibc
import SystemPackage

/// Reads members one at a time: from a tar stream, or from a directory tree on disk (which
/// yields the same entries a tar of it would, hard links included). Owns its `archive`.
public final class ArchiveReader {
    private let pointer: OpaquePointer
    private let entry = ArchiveEntry()
    /// What is being read, for messages.
    public let sourceName: String

    // Tar streams: the decompressing producer and the block handed to libarchive last.
    private let stream: DecompressedStream?

    // Directory trees: the root's path (stripped from member names) and the hard-link resolver.
    private let diskRoot: FilePath?
    private let linkResolver: OpaquePointer?
    private var entryCount = 0

    private init(pointer: OpaquePointer, sourceName: String, stream: DecompressedStream?, diskRoot: FilePath?) {
        self.pointer = pointer
        self.sourceName = sourceName
        self.stream = stream
        self.diskRoot = diskRoot
        if diskRoot != nil {
            linkResolver = archive_entry_linkresolver_new()
            archive_entry_linkresolver_set_strategy(linkResolver, ARCHIVE_FORMAT_TAR_PAX_RESTRICTED)
        } else {
            linkResolver = nil
        }
    }

    deinit {
        archive_read_free(pointer)
        if let linkResolver { archive_entry_linkresolver_free(linkResolver) }
    }

    /// A reader of the tar archive carried by `stream` (tar, pax, GNU and ustar formats).
    public static func tar(from stream: DecompressedStream) throws -> ArchiveReader {
        guard let a = archive_read_new() else { throw ArchiveError("out of memory") }
        archive_read_support_format_tar(a)
        archive_read_support_format_gnutar(a)
        let reader = ArchiveReader(pointer: a, sourceName: stream.sourceName, stream: stream, diskRoot: nil)
        let context = Unmanaged.passUnretained(stream).toOpaque()
        let rc = archive_read_open(a, context, nil, { _, context, buffer in
            let stream = Unmanaged<DecompressedStream>.fromOpaque(context!).takeUnretainedValue()
            guard let block = stream.nextBlock() else { return stream.failed ? -1 : 0 }
            buffer!.pointee = block.baseAddress
            return block.count
        }, nil)
        if rc != ARCHIVE_OK { throw reader.openFailure() }
        return reader
    }

    /// A reader of the tree at `path`, which is walked without following symlinks or crossing
    /// into other file systems. Member names are relative to `path`; the root itself is ".".
    public static func directory(_ path: String) throws -> ArchiveReader {
        guard let a = archive_read_disk_new() else { throw ArchiveError("out of memory") }
        archive_read_disk_set_symlink_physical(a)
        archive_read_disk_set_behavior(a, ARCHIVE_READDISK_NO_TRAVERSE_MOUNTS | ARCHIVE_READDISK_NO_FFLAGS)
        let root = FilePath(path).lexicallyNormalized()
        let reader = ArchiveReader(pointer: a, sourceName: path, stream: nil, diskRoot: root)
        if root.withPlatformString({ archive_read_disk_open(a, $0) }) != ARCHIVE_OK {
            throw ArchiveError.libarchive(a, "cannot read \(path)")
        }
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

    /// The next member, or nil at the end. The entry is reused by the next call.
    public func nextEntry() throws -> ArchiveEntry? {
        let rc = archive_read_next_header2(pointer, entry.pointer)
        if rc == ARCHIVE_EOF {
            if entryCount == 0, let stream, stream.bytesDelivered == 0 { throw notTar(after: 0) }
            return nil
        }
        if rc < ARCHIVE_WARN {
            if let stream, let failure = stream.failure { throw ArchiveError(failure) }
            throw notTar(after: entryCount)
        }
        entryCount += 1
        if let diskRoot {
            try relativize(to: diskRoot)
            if archive_read_disk_can_descend(pointer) != 0 { archive_read_disk_descend(pointer) }
            var linked: OpaquePointer? = entry.pointer
            var spare: OpaquePointer?
            archive_entry_linkify(linkResolver, &linked, &spare)
        }
        return entry
    }

    /// Makes the entry's path relative to the tree's root, which becomes ".".
    private func relativize(to root: FilePath) throws {
        var path = entry.filePath
        if path == root {
            entry.filePath = "."
        } else if path.removePrefix(root) {
            entry.filePath = path
        } else {
            throw ArchiveError("reading \(root): unexpected path \(path)")
        }
        if let link = entry.hardLinkPath, link.isAbsolute {
            var relative = link
            if relative.removePrefix(root) { entry.hardLinkPath = relative }
        }
    }

    /// The next block of the current member's data and its offset in the file (blocks may skip
    /// over holes of a sparse file); nil after the last.
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
