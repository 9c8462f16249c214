import BerthArchive
import BerthSystem
import CArchive
import Glibc
import SystemPackage

/// Builds tar archives member by member through libarchive's writer, hostile ones included:
/// it writes whatever path, link or attribute it is given.
public final class TarBuilder {
    public enum Member {
        case directory(String, mode: mode_t = 0o755)
        case file(String, String, mode: mode_t = 0o644, xattrs: [(String, [UInt8])] = [])
        case symlink(String, target: String)
        case hardLink(String, target: String)
        case fifo(String)
        case device(String, major: UInt32, minor: UInt32, block: Bool)
        /// A regular file whose header claims `size` bytes, with none of them in the archive.
        case claimedSize(String, size: Int64)
        /// A regular file of `size` zero bytes (a decompression bomb, compressed).
        case zeros(String, size: Int64)
    }

    private var members: [Member] = []

    public init() {}

    @discardableResult
    public func add(_ member: Member) -> TarBuilder {
        members.append(member)
        return self
    }

    /// Writes the archive to `path`, compressed as `compression` says.
    public func write(to path: FilePath, compression: ArchiveCompression = .none) throws {
        let fd = try Descriptor.open(path, O_WRONLY | O_CREAT | O_TRUNC, mode: 0o644)
        let a = archive_write_new()!
        defer { archive_write_free(a) }
        archive_write_set_format_pax_restricted(a)
        compression.addWriteFilter(to: a)
        guard archive_write_open_fd(a, fd.rawValue) == ARCHIVE_OK else { throw ArchiveBuildError.failed }
        for member in members {
            let e = archive_entry_new()!
            defer { archive_entry_free(e) }
            archive_entry_set_mtime(e, 1_700_000_000, 0)
            var data: [UInt8] = []
            switch member {
            case .directory(let path, let mode):
                archive_entry_set_pathname(e, path)
                archive_entry_set_filetype(e, UInt32(Glibc.S_IFDIR))
                archive_entry_set_perm(e, mode)
            case .file(let path, let text, let mode, let xattrs):
                archive_entry_set_pathname(e, path)
                archive_entry_set_filetype(e, UInt32(Glibc.S_IFREG))
                archive_entry_set_perm(e, mode)
                data = Array(text.utf8)
                archive_entry_set_size(e, Int64(data.count))
                for (name, value) in xattrs { archive_entry_xattr_add_entry(e, name, value, value.count) }
            case .symlink(let path, let target):
                archive_entry_set_pathname(e, path)
                archive_entry_set_filetype(e, UInt32(Glibc.S_IFLNK))
                archive_entry_set_perm(e, 0o777)
                archive_entry_set_symlink(e, target)
            case .hardLink(let path, let target):
                archive_entry_set_pathname(e, path)
                archive_entry_set_filetype(e, UInt32(Glibc.S_IFREG))
                archive_entry_set_perm(e, 0o644)
                archive_entry_set_hardlink(e, target)
            case .fifo(let path):
                archive_entry_set_pathname(e, path)
                archive_entry_set_filetype(e, UInt32(Glibc.S_IFIFO))
                archive_entry_set_perm(e, 0o644)
            case .device(let path, let major, let minor, let block):
                archive_entry_set_pathname(e, path)
                archive_entry_set_filetype(e, UInt32(block ? Glibc.S_IFBLK : Glibc.S_IFCHR))
                archive_entry_set_perm(e, 0o660)
                archive_entry_set_rdevmajor(e, dev_t(major))
                archive_entry_set_rdevminor(e, dev_t(minor))
            case .claimedSize(let path, let size), .zeros(let path, let size):
                archive_entry_set_pathname(e, path)
                archive_entry_set_filetype(e, UInt32(Glibc.S_IFREG))
                archive_entry_set_perm(e, 0o644)
                archive_entry_set_size(e, size)
            }
            guard archive_write_header(a, e) >= ARCHIVE_WARN else { throw ArchiveBuildError.failed }
            if !data.isEmpty { _ = data.withUnsafeBytes { archive_write_data(a, $0.baseAddress, $0.count) } }
            if case .zeros(_, let size) = member {
                let chunk = [UInt8](repeating: 0, count: 1 << 20)
                var left = size
                while left > 0 {
                    let n = Int(min(left, Int64(chunk.count)))
                    _ = chunk.withUnsafeBytes { archive_write_data(a, $0.baseAddress, n) }
                    left -= Int64(n)
                }
            }
        }
        // A claimed size with no data leaves the archive truncated: close reports it, as intended.
        _ = archive_write_close(a)
    }
}

public enum ArchiveBuildError: Error { case failed }
