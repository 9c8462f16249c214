import Glibc
import SystemPackage

extension Directory {
    /// Removes `name` and everything below it. Symlinks are removed, never followed, and a mount
    /// point below is refused rather than emptied: removal of an image must not reach into a
    /// file system someone mounted inside it. Immutable and append-only flags are cleared first.
    /// The walk holds one directory open at a time and does not recurse, whatever the depth.
    public func removeTree(_ name: FilePath) throws {
        guard let st = try status(name) else { return }
        guard st.kind == .directory else {
            try remove(name, isDirectory: false)
            return
        }
        let sub = try openDirectory(beneath: name)
        sub.clearProtectiveFlags()
        let walker = try TreeWalker(sub)
        while let event = try walker.next() {
            switch event {
            case .entry(let entry, let status) where status.kind == .directory:
                guard status.device == st.device else {
                    throw SystemError("remove", Errno(rawValue: EBUSY), path: walker.directory.child(entry) + " (a mount point inside)")
                }
                try walker.enter(entry).clearProtectiveFlags()
            case .entry(let entry, _):
                try walker.directory.removeEntry(entry)
            case .left(let entry):
                try walker.directory.remove(entry, isDirectory: true)
            }
        }
        try remove(name, isDirectory: true)
    }

    /// Removes the file `entry`; an immutable or append-only one has its flag cleared first.
    private func removeEntry(_ entry: FilePath) throws {
        do {
            try remove(entry, isDirectory: false)
        } catch let error as SystemError where error.errno == .notPermitted {
            if let fd = try? openFile(entry, O_RDONLY | O_NONBLOCK) {
                fd.clearProtectiveFlags()
            }
            try remove(entry, isDirectory: false)
        }
    }

    private func clearProtectiveFlags() { descriptor.clearProtectiveFlags() }

    /// Disk space used by the tree at `name`, in bytes: allocated blocks, each inode counted once.
    /// It does not cross into other file systems, and does not recurse.
    public func diskUsage(_ name: FilePath) throws -> Int64 {
        guard let st = try status(name) else { return 0 }
        var total = st.blocks
        guard st.kind == .directory else { return total * 512 }
        var seen = Set<InodeKey>()
        let walker = try TreeWalker(try openDirectory(beneath: name))
        while let event = try walker.next() {
            guard case .entry(let entry, let status) = event else { continue }
            if status.linkCount > 1 && status.kind != .directory {
                guard seen.insert(InodeKey(device: UInt64(status.device), inode: UInt64(status.inode))).inserted else { continue }
            }
            total += status.blocks
            if status.kind == .directory && status.device == st.device { try walker.enter(entry) }
        }
        return total * 512
    }

    private struct InodeKey: Hashable {
        var device: UInt64
        var inode: UInt64
    }
}

extension Descriptor {
    /// Clears FS_IMMUTABLE_FL and FS_APPEND_FL, which would make removal fail even for root.
    func clearProtectiveFlags() {
        let protective: InodeFlags = [.immutable, .appendOnly]
        if let flags = inodeFlags(), !flags.isDisjoint(with: protective) {
            try? setInodeFlags(flags.subtracting(protective))
        }
    }
}
