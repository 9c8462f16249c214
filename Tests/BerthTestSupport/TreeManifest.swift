import BerthSystem
import BerthArchive
import Glibc
import SystemPackage

/// Everything a root file system must keep, entry by entry: type, mode, owner, size, mtime,
/// content hash, symlink target, device number, extended attributes, and which entries are
/// one inode (hard links). Two trees are the same tree when their manifests are equal.
public struct TreeManifest: Equatable {
    public struct Entry: Equatable, CustomStringConvertible {
        public var kind: FileStatus.Kind
        public var permissions: mode_t
        public var uid: uid_t
        public var gid: gid_t
        public var size: Int64
        public var mtime: Int
        public var mtimeNanoseconds: Int
        public var contentHash: String?
        public var linkTarget: String?
        public var device: UInt64
        public var attributes: [String: [UInt8]]
        /// The first path (in sorted order) of the inode this entry is.
        public var inodeGroup: String?

        public var description: String {
            "\(kind) \(String(permissions, radix: 8)) \(uid):\(gid) size=\(size) mtime=\(mtime).\(mtimeNanoseconds) "
                + "hash=\(contentHash ?? "-") link=\(linkTarget ?? "-") dev=\(device) xattrs=\(attributes.keys.sorted()) inode=\(inodeGroup ?? "-")"
        }
    }

    public var entries: [String: Entry] = [:]

    public init(of root: FilePath) throws {
        let dir = try Directory(opening: root)
        var inodes: [UInt64: String] = [:]
        entries["."] = try Self.entry(dir.descriptor.status(), in: nil, name: ".", dir: dir, inodes: &inodes, path: ".")
        try walk(dir, prefix: "", inodes: &inodes)
    }

    private mutating func walk(_ dir: Directory, prefix: String, inodes: inout [UInt64: String]) throws {
        for name in try dir.entryNames().sorted(by: { $0.string < $1.string }) {
            guard let st = try dir.status(name) else { continue }
            let path = prefix + name.string
            entries[path] = try Self.entry(st, in: dir, name: name, dir: nil, inodes: &inodes, path: path)
            if st.kind == .directory {
                try walk(dir.openDirectory(beneath: name), prefix: path + "/", inodes: &inodes)
            }
        }
    }

    private static func entry(_ st: FileStatus, in parent: Directory?, name: FilePath, dir: Directory?,
                              inodes: inout [UInt64: String], path: String) throws -> Entry {
        var e = Entry(kind: st.kind, permissions: st.permissions, uid: st.uid, gid: st.gid,
                      size: st.kind == .regular ? st.size : 0, mtime: st.modification.tv_sec,
                      mtimeNanoseconds: st.modification.tv_nsec, contentHash: nil, linkTarget: nil,
                      device: 0, attributes: [:], inodeGroup: nil)
        if let parent {
            for attr in try parent.extendedAttributeNames(of: name) {
                e.attributes[attr] = try parent.extendedAttribute(attr, of: name)
            }
            switch st.kind {
            case .regular:
                let hasher = SHA256()
                try parent.openFile(name, O_RDONLY).readChunks { hasher.update($0) }
                e.contentHash = hasher.finalize()
                if st.linkCount > 1 {
                    let key = UInt64(st.inode)
                    if inodes[key] == nil { inodes[key] = path }
                    e.inodeGroup = inodes[key]
                }
            case .symlink:
                e.linkTarget = try parent.readLink(name).string
            case .characterDevice, .blockDevice:
                e.device = UInt64(st.deviceNumber)
            default: break
            }
        } else if let dir {
            for attr in try dir.descriptor.extendedAttributeNames() {
                e.attributes[attr] = try dir.descriptor.extendedAttribute(attr)
            }
        }
        return e
    }

    /// The first `limit` differences, one line each, for a test's message.
    public func differences(from other: TreeManifest, limit: Int = 10) -> [String] {
        var lines: [String] = []
        for path in Set(entries.keys).union(other.entries.keys).sorted() where entries[path] != other.entries[path] {
            lines.append("\(path):\n  \(entries[path].map(\.description) ?? "missing")\n  \(other.entries[path].map(\.description) ?? "missing")")
            if lines.count == limit { break }
        }
        return lines
    }
}
