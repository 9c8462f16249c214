import BerthSystem
import CArchive
import CBerth
import Glibc
import SystemPackage

/// Reads a directory tree as archive members, in the order tar writes them: depth first, names
/// sorted (so exports of the same tree are the same bytes), each directory before its contents.
///
/// The walk goes through directories opened beneath the root (openat2 with RESOLVE_BENEATH
/// |RESOLVE_NO_SYMLINKS), never follows a symlink, and does not descend into other file systems
/// (a mount point is read as an empty directory, as `tar --one-file-system` does). libarchive
/// fills each member's metadata (owner, mode, times, xattrs, ACLs, sparse map) from the open file.
public final class TreeReader: MemberSource {
    public let sourceName: String
    private let disk: OpaquePointer
    private let linkResolver: OpaquePointer
    private let entry = ArchiveEntry()
    private let rootDevice: dev_t

    /// The walk, once the root is read; it holds one directory open whatever the depth.
    private var walker: TreeWalker?
    private var root: Directory?

    // The open regular file whose data is being read, and where.
    private var file: Descriptor?
    private var regions: [(offset: Int64, length: Int64)] = []
    private var regionIndex = 0
    private var regionDone: Int64 = 0
    private let buffer = UnsafeMutableRawPointer.allocate(byteCount: 1 << 20, alignment: 16)

    public init(_ path: FilePath) throws {
        sourceName = path.string
        guard let disk = archive_read_disk_new() else { throw ArchiveError("out of memory") }
        self.disk = disk
        // ACLs are read below as the raw attributes they are, which GNU tar's
        // --xattrs-include='*' applies too; libarchive would write them as text only `--acls` reads.
        archive_read_disk_set_behavior(disk, ARCHIVE_READDISK_NO_FFLAGS | ARCHIVE_READDISK_NO_ACL)
        linkResolver = archive_entry_linkresolver_new()
        archive_entry_linkresolver_set_strategy(linkResolver, ARCHIVE_FORMAT_TAR_PAX_RESTRICTED)
        let dir: Directory
        do {
            dir = try Directory(opening: path)
            rootDevice = try dir.descriptor.status().device
        } catch let error as SystemError {
            throw ArchiveError("cannot read \(path): \(error)")
        }
        root = dir
    }

    deinit {
        archive_read_free(disk)
        archive_entry_linkresolver_free(linkResolver)
        buffer.deallocate()
    }

    public func nextEntry() throws -> ArchiveEntry? {
        file = nil
        do {
            if let dir = root {
                root = nil
                try describe(path: ".", fd: dir.descriptor.rawValue, procPath: dir.descriptor.procPath)
                walker = try TreeWalker(dir, sorted: true)
                return entry
            }
            guard let walker else { return nil }
            while let event = try walker.next() {
                guard case .entry(let name, _) = event else { continue }
                try member(name, walker: walker)
                return entry
            }
            return nil
        } catch let error as SystemError {
            throw ArchiveError("cannot read \(sourceName): \(error)")
        }
    }

    private func member(_ name: FilePath, walker: TreeWalker) throws {
        let parent = walker.directory
        let path = walker.path.appending(name.components)
        var st = stat()
        _ = try name.withPlatformString { n in
            try retryingInterrupts("fstatat", path: parent.child(name)) { fstatat(parent.rawValue, n, &st, AT_SYMLINK_NOFOLLOW) }
        }
        let procPath = parent.procPath(name)
        switch st.st_mode & S_IFMT {
        case S_IFDIR:
            let dir = try parent.openDirectory(beneath: name)
            try describe(path: path, fd: dir.rawValue, procPath: procPath)
            if st.st_dev == rootDevice { try walker.enter(name, opened: dir) }
        case S_IFREG:
            let fd = try parent.openFile(name, O_RDONLY | O_NONBLOCK)
            try describe(path: path, fd: fd.rawValue, procPath: procPath)
            if entry.hardLinkPath == nil {
                file = fd
                regions = entry.sparseRegions ?? [(0, entry.size)]
                regionIndex = 0
                regionDone = 0
            }
        default:
            try describe(path: path, fd: -1, procPath: procPath)
        }
    }

    /// Fills the entry from the open file (or, for entries that cannot be opened, from the
    /// `/proc/self/fd` path that names them through their parent without following them).
    private func describe(path: FilePath, fd: Int32, procPath: FilePath) throws {
        archive_entry_clear(entry.pointer)
        entry.filePath = path
        var st = stat()
        try procPath.withPlatformString { source in
            archive_entry_copy_sourcepath(entry.pointer, source)
            if fd >= 0 {
                try retryingInterrupts("fstat", path: path.printable) { fstat(fd, &st) }
            } else {
                try retryingInterrupts("lstat", path: path.printable) { lstat(source, &st) }
            }
            if archive_read_disk_entry_from_file(disk, entry.pointer, fd, &st) < ARCHIVE_WARN {
                throw ArchiveError.libarchive(disk, "cannot read \(sourceName)/\(path.printable)")
            }
            if st.st_mode & S_IFMT != S_IFLNK {
                for name in [PosixACL.accessAttribute, PosixACL.defaultAttribute] {
                    let size = lgetxattr(source, name, buffer, 1 << 16)
                    if size > 0 { archive_entry_xattr_add_entry(entry.pointer, name, buffer, size) }
                }
            }
        }
        var linked: OpaquePointer? = entry.pointer
        var spare: OpaquePointer?
        archive_entry_linkify(linkResolver, &linked, &spare)
    }

    public func readBlock() throws -> (bytes: UnsafeRawBufferPointer, offset: Int64)? {
        guard let file else { return nil }
        while regionIndex < regions.count {
            let region = regions[regionIndex]
            let left = region.length - regionDone
            if left <= 0 {
                regionIndex += 1
                regionDone = 0
                continue
            }
            let offset = region.offset + regionDone
            let n = try retryingInterrupts("pread", path: entry.path) {
                pread(file.rawValue, buffer, Int(min(left, 1 << 20)), off_t(offset))
            }
            if n == 0 {  // the file shrank while being read: what is there is what there is
                regionIndex = regions.count
                break
            }
            regionDone += Int64(n)
            return (UnsafeRawBufferPointer(start: buffer, count: n), offset)
        }
        self.file = nil
        return nil
    }
}
