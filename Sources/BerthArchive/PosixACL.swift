import CArchive
import Glibc

/// POSIX ACLs in the binary form the kernel takes as `system.posix_acl_access` and
/// `system.posix_acl_default` (linux/posix_acl_xattr.h): a version word, then one
/// (tag, permissions, id) record per entry, sorted by tag and then by id.
enum PosixACL {
    static let accessAttribute = "system.posix_acl_access"
    static let defaultAttribute = "system.posix_acl_default"

    private static let version: UInt32 = 2
    private static let undefinedID: UInt32 = 0xFFFF_FFFF

    private struct Record: Comparable {
        var tag: UInt16
        var permissions: UInt16
        var id: UInt32

        static func < (a: Record, b: Record) -> Bool { (a.tag, a.id) < (b.tag, b.id) }
    }

    /// The kernel's tag for a libarchive tag, and whether it carries an id.
    private static func kernelTag(_ tag: Int32) -> (UInt16, Bool)? {
        switch tag {
        case ARCHIVE_ENTRY_ACL_USER_OBJ: return (0x01, false)
        case ARCHIVE_ENTRY_ACL_USER: return (0x02, true)
        case ARCHIVE_ENTRY_ACL_GROUP_OBJ: return (0x04, false)
        case ARCHIVE_ENTRY_ACL_GROUP: return (0x08, true)
        case ARCHIVE_ENTRY_ACL_MASK: return (0x10, false)
        case ARCHIVE_ENTRY_ACL_OTHER: return (0x20, false)
        default: return nil  // NFSv4 entries have no POSIX form
        }
    }

    /// The attributes to set for `entry`'s ACLs: empty when it has none beyond its mode.
    static func attributes(of entry: ArchiveEntry) -> [(name: String, value: [UInt8])] {
        var result: [(String, [UInt8])] = []
        for (type, name) in [(ARCHIVE_ENTRY_ACL_TYPE_ACCESS, accessAttribute), (ARCHIVE_ENTRY_ACL_TYPE_DEFAULT, defaultAttribute)] {
            if let blob = encode(entry, type: type) { result.append((name, blob)) }
        }
        return result
    }

    private static func encode(_ entry: ArchiveEntry, type: Int32) -> [UInt8]? {
        let count = archive_entry_acl_reset(entry.pointer, type)
        // An access ACL of the three mode entries alone says nothing the mode does not.
        guard count > 0, !(type == ARCHIVE_ENTRY_ACL_TYPE_ACCESS && count <= 3) else { return nil }
        var records: [Record] = []
        var entryType: Int32 = 0, permset: Int32 = 0, tag: Int32 = 0, qualifier: Int32 = 0
        var name: UnsafePointer<CChar>?
        while archive_entry_acl_next(entry.pointer, type, &entryType, &permset, &tag, &qualifier, &name) == ARCHIVE_OK {
            guard let (kernel, hasID) = kernelTag(tag) else { continue }
            let perms = UInt16(permset & (ARCHIVE_ENTRY_ACL_READ | ARCHIVE_ENTRY_ACL_WRITE | ARCHIVE_ENTRY_ACL_EXECUTE))
            var id = hasID ? UInt32(bitPattern: qualifier) : undefinedID
            if hasID, qualifier < 0 {
                // GNU tar writes named entries without their number; like GNU tar, look the
                // name up in the host's user database.
                guard let name, let resolved = resolve(name, user: tag == ARCHIVE_ENTRY_ACL_USER) else { continue }
                id = resolved
            }
            records.append(Record(tag: kernel, permissions: perms, id: id))
        }
        guard !records.isEmpty else { return nil }
        records.sort()
        var blob: [UInt8] = []
        blob.reserveCapacity(4 + records.count * 8)
        append(version, to: &blob)
        for r in records {
            append(r.tag, to: &blob)
            append(r.permissions, to: &blob)
            append(r.id, to: &blob)
        }
        return blob
    }

    private static func resolve(_ name: UnsafePointer<CChar>, user: Bool) -> UInt32? {
        if user { return getpwnam(name).map { $0.pointee.pw_uid } }
        return getgrnam(name).map { $0.pointee.gr_gid }
    }

    private static func append<T: FixedWidthInteger>(_ value: T, to blob: inout [UInt8]) {
        withUnsafeBytes(of: value.littleEndian) { blob.append(contentsOf: $0) }
    }
}
