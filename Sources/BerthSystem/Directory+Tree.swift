import Glibc
import SystemPackage

extension Directory {
    /// Removes `name` and everything below it. Symlinks are removed, never followed, and a mount
    /// point below is refused rather than emptied: removal of an image must not reach into a
    /// file system someone mounted inside it. Immutable and append-only flags are cleared first.
    public func removeTree(_ name: FilePath) throws {
        guard let st = try status(name) else { return }
        guard st.kind == .directory else {
            try remove(name, isDirectory: false)
            return
        }
        let sub = try openDirectory(beneath: name)
        sub.clearProtectiveFlags()
        try sub.removeContents(device: st.device)
        try remove(name, isDirectory: true)
    }

    private func removeContents(device: dev_t) throws {
        for entry in try entryNames() {
            guard let st = try status(entry) else { continue }
            if st.kind == .directory {
                guard st.device == device else {
                    throw SystemError("remove", Errno(rawValue: EBUSY), path: child(entry) + " (a mount point inside)")
                }
                let sub = try openDirectory(beneath: entry)
                sub.clearProtectiveFlags()
                try sub.removeContents(device: device)
                try remove(entry, isDirectory: true)
            } else {
                do {
                    try remove(entry, isDirectory: false)
                } catch let error as SystemError where error.errno == .notPermitted {
                    // An immutable or append-only file: clear the flag and try once more.
                    if let fd = try? openFile(entry, O_RDONLY | O_NONBLOCK) {
                        fd.clearProtectiveFlags()
                    }
                    try remove(entry, isDirectory: false)
                }
            }
        }
    }

    private func clearProtectiveFlags() { descriptor.clearProtectiveFlags() }

    /// Disk space used by the tree at `name`, in bytes: allocated blocks, each inode counted once.
    public func diskUsage(_ name: FilePath) throws -> Int64 {
        guard let st = try status(name) else { return 0 }
        var seen = Set<InodeKey>()
        var total = st.blocks
        if st.kind == .directory {
            let sub = try openDirectory(beneath: name)
            total += try sub.usageOfContents(device: st.device, seen: &seen)
        }
        return total * 512
    }

    private struct InodeKey: Hashable {
        var device: UInt64
        var inode: UInt64
    }

    private func usageOfContents(device: dev_t, seen: inout Set<InodeKey>) throws -> Int64 {
        var total: Int64 = 0
        for entry in try entryNames() {
            guard let st = try status(entry) else { continue }
            if st.linkCount > 1 && st.kind != .directory {
                guard seen.insert(InodeKey(device: UInt64(st.device), inode: UInt64(st.inode))).inserted else { continue }
            }
            total += st.blocks
            if st.kind == .directory && st.device == device {
                total += try openDirectory(beneath: entry).usageOfContents(device: device, seen: &seen)
            }
        }
        return total
    }
}

extension Descriptor {
    /// Clears FS_IMMUTABLE_FL and FS_APPEND_FL, which would make removal fail even for root.
    func clearProtectiveFlags() {
        let protective: UInt32 = 0x10 | 0x20
        if let flags = inodeFlags(), flags & protective != 0 {
            try? setInodeFlags(flags & ~protective)
        }
    }
}
