import BerthSystem
import CArchive
import Glibc
import SystemPackage

/// The compressions `export` can write, chosen by the output file's name.
public enum ArchiveCompression: String, CaseIterable, Sendable {
    case none, gzip, xz, zstd, bzip2

    /// The compression a file name asks for, or nil when the name is not a tarball's.
    public static func forFileName(_ name: String) -> ArchiveCompression? {
        let suffixes: [(String, ArchiveCompression)] = [
            (".tar", .none), (".tar.gz", .gzip), (".tgz", .gzip), (".tar.xz", .xz), (".txz", .xz),
            (".tar.zst", .zstd), (".tzst", .zstd), (".tar.bz2", .bzip2), (".tbz2", .bzip2),
        ]
        return suffixes.first { name.hasSuffix($0.0) }?.1
    }

    /// Adds the compressing filter to a libarchive writer.
    public func addWriteFilter(to archive: OpaquePointer) {
        switch self {
        case .none: break
        case .gzip: archive_write_add_filter_gzip(archive)
        case .xz: archive_write_add_filter_xz(archive)
        case .zstd: archive_write_add_filter_zstd(archive)
        case .bzip2: archive_write_add_filter_bzip2(archive)
        }
    }

    /// The compression whose magic number starts `bytes`; `.none` for anything else.
    public static func detect(_ bytes: UnsafeRawBufferPointer) -> ArchiveCompression {
        let magics: [([UInt8], ArchiveCompression)] = [
            ([0x1f, 0x8b], .gzip), ([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00], .xz),
            ([0x28, 0xb5, 0x2f, 0xfd], .zstd), ([0x42, 0x5a, 0x68], .bzip2),
        ]
        return magics.first { magic, _ in bytes.count >= magic.count && zip(bytes, magic).allSatisfy { $0 == $1 } }?.1 ?? .none
    }
}

/// Writes a pax tar archive (xattrs and ACLs included) to a descriptor. Owns its `archive`.
public final class ArchiveWriter {
    private let pointer: OpaquePointer
    private var closed = false
    private let zeros = [UInt8](repeating: 0, count: 1 << 16)
    /// Called with the count of each run of file data (holes included) handed to the archive.
    var onData: ((Int) -> Void)?

    public init(writingTo fd: Descriptor, compression: ArchiveCompression) throws {
        guard let a = archive_write_new() else { throw ArchiveError("out of memory") }
        pointer = a
        archive_write_set_format_pax(a)
        compression.addWriteFilter(to: a)
        if archive_write_open_fd(a, fd.rawValue) != ARCHIVE_OK {
            throw ArchiveError.libarchive(a, "cannot start the archive")
        }
    }

    deinit {
        if !closed { archive_write_close(pointer) }
        archive_write_free(pointer)
    }

    /// Writes `entry` with the data `reader` holds for it (holes written as zeros).
    public func write(_ entry: ArchiveEntry, dataFrom reader: MemberSource) throws {
        if archive_write_header(pointer, entry.pointer) < ARCHIVE_WARN {
            throw ArchiveError.libarchive(pointer, "writing member '\(entry.path)'")
        }
        guard entry.kind == .regular, entry.size > 0 else { return }
        var position: Int64 = 0
        while let (bytes, offset) = try reader.readBlock() {
            try writeZeros(offset - position)
            try writeData(bytes)
            onData?(Int(offset - position) + bytes.count)
            position = offset + Int64(bytes.count)
        }
        try writeZeros(entry.size - position)
        if entry.size > position { onData?(Int(entry.size - position)) }
    }

    private func writeData(_ bytes: UnsafeRawBufferPointer) throws {
        guard let base = bytes.baseAddress else { return }  // an empty buffer: nothing to write
        var done = 0
        while done < bytes.count {
            let n = archive_write_data(pointer, base + done, bytes.count - done)
            if n <= 0 { throw ArchiveError.libarchive(pointer, "writing the archive") }
            done += n
        }
    }

    private func writeZeros(_ count: Int64) throws {
        var left = count
        while left > 0 {
            let n = Int(min(left, Int64(zeros.count)))
            try zeros.withUnsafeBytes { try writeData(UnsafeRawBufferPointer(rebasing: $0[..<n])) }
            left -= Int64(n)
        }
    }

    /// Writes the end of the archive and flushes the compressor.
    public func close() throws {
        closed = true
        if archive_write_close(pointer) != ARCHIVE_OK {
            throw ArchiveError.libarchive(pointer, "finishing the archive")
        }
    }
}

/// Where an export stands, for a progress display.
public struct ExportProgress: Sendable {
    public var entries: Int
    /// File data read from the tree so far, and in all (nil until counted).
    public var bytesRead: Int64
    public var totalBytes: Int64?
    public var seconds: Double
    /// Set on the last report, once the archive is written and flushed by the compressor.
    public var finished = false
}

/// Export of a directory tree as a tarball, as `tar --xattrs --acls -C DIR -c .` would write it.
public enum TreeExport {
    /// Writes the tree at `path` to `fd`; member names start with "./"; owners are numeric.
    /// With `onProgress`, the tree's file data is first counted (a walk of its metadata only,
    /// milliseconds against the minutes an xz export can take), so progress has a total.
    public static func export(_ path: String, to fd: Descriptor, compression: ArchiveCompression,
                              onProgress: ((ExportProgress) -> Void)? = nil) throws {
        let started = monotonicSeconds()
        var progress = ExportProgress(entries: 0, bytesRead: 0, totalBytes: nil, seconds: 0)
        var lastReport = 0.0
        func report(force: Bool = false) {
            guard let onProgress else { return }
            let now = monotonicSeconds()
            guard force || now - lastReport >= 0.1 else { return }
            lastReport = now
            progress.seconds = now - started
            onProgress(progress)
        }
        if onProgress != nil {
            progress.totalBytes = try dataSize(of: path)
            report(force: true)
        }
        let reader = try TreeReader(FilePath(path))
        let writer = try ArchiveWriter(writingTo: fd, compression: compression)
        writer.onData = { count in
            progress.bytesRead += Int64(count)
            report()
        }
        while let entry = try reader.nextEntry() {
            if entry.filePath != "." { entry.filePath = FilePath(".").pushing(entry.filePath) }
            if let target = entry.hardLinkPath { entry.hardLinkPath = FilePath(".").pushing(target) }
            try writer.write(entry, dataFrom: reader)
            progress.entries += 1
            report()
        }
        try writer.close()
        progress.finished = true
        report(force: true)
    }

    /// The file data TreeReader will read from the tree: each regular file's size once (hard
    /// links share it), on the root's file system only.
    static func dataSize(of path: String) throws -> Int64 {
        do {
            let root = try Directory(opening: FilePath(path))
            let device = try root.descriptor.status().device
            let walker = try TreeWalker(root)
            var seen = Set<ino_t>()
            var total: Int64 = 0
            while let event = try walker.next() {
                guard case .entry(let name, let st) = event else { continue }
                switch st.kind {
                case .directory where st.device == device: try walker.enter(name)
                case .regular where st.linkCount < 2 || seen.insert(st.inode).inserted: total += st.size
                default: break
                }
            }
            return total
        } catch let error as SystemError {
            throw ArchiveError("cannot read \(path): \(error)")
        }
    }
}
