import BerthSystem
import Glibc
import SystemPackage

/// An extraction's metadata: extended attributes and ACLs on each member, and each
/// directory's owner, mode, attributes and times, which wait until the whole archive is
/// written (see `finishDirectories`).
extension Extractor {
    enum AttributeTarget {
        case descriptor(Descriptor)
        case entry(Directory, FilePath)
    }

    func applyAttributes(_ entry: ArchiveEntry, to target: AttributeTarget, display: String) throws {
        var names = Set<String>()
        for (name, value) in entry.extendedAttributes {
            names.insert(name)
            try setAttribute(name, value, on: target, display: display)
        }
        for (name, blob) in PosixACL.attributes(of: entry) where !names.contains(name) {
            try blob.withUnsafeBytes { try setAttribute(name, $0, on: target, display: display) }
        }
    }

    private func setAttribute(_ name: String, _ value: UnsafeRawBufferPointer, on target: AttributeTarget, display: String) throws {
        // overlayfs trusts these to redirect lookups into other layers; an image must not set them.
        if name.hasPrefix("trusted.overlay.") || name.hasPrefix("user.overlay.") {
            skippedAttributes.insert(name)
            return
        }
        do {
            switch target {
            case .descriptor(let fd): try fd.setExtendedAttribute(name, value)
            case .entry(let dir, let entryName): try dir.setExtendedAttribute(name, of: entryName, value)
            }
        } catch let error as SystemError where error.errno == .notSupported && !Self.essential(name) {
            // A label the store's file system cannot hold (say security.selinux on tmpfs): it
            // means nothing on this host, and the tree is still whole.
            skippedAttributes.insert(name)
        } catch let error as SystemError {
            throw ArchiveError.member(display, "cannot set attribute \(name): \(error.errno)")
        }
    }

    /// Attributes without which the tree would not work as archived.
    private static func essential(_ name: String) -> Bool {
        name == "security.capability" || name.hasPrefix("system.posix_acl_")
    }

    struct DirectoryMetadata {
        var uid: uid_t
        var gid: gid_t
        var permissions: mode_t
        var access: timespec?
        var modification: timespec
        var attributes: [(String, [UInt8])]
        var acls: [(name: String, value: [UInt8])]

        init(_ entry: ArchiveEntry) {
            uid = entry.uid
            gid = entry.gid
            permissions = entry.permissions
            access = entry.access
            modification = entry.modification
            attributes = entry.extendedAttributes.map { ($0.name, Array($0.value)) }
            acls = PosixACL.attributes(of: entry)
        }
    }

    /// Directories get their owner, mode, attributes and times last, each after everything
    /// below it (a walk of the tree, children first): writing into a directory changes its
    /// mtime, and a read-only mode must not stop the writes. The walk does not recurse and
    /// holds one directory open, however deep the tree.
    func finishDirectories() throws {
        defer { pendingDirectories = [:] }
        guard !pendingDirectories.isEmpty else { return }
        let walker = try TreeWalker(root)
        var current = FilePath()  // the directory being finished, for a message
        do {
            while let event = try walker.next() {
                switch event {
                case .entry(let name, let status) where status.kind == .directory:
                    current = name.lastComponent.map { FilePath(root: nil, [$0]) } ?? name
                    try walker.enter(name)
                case .left(let name):
                    current = name.lastComponent.map { FilePath(root: nil, [$0]) } ?? name
                    let dir = try walker.directory.openDirectory(beneath: name)
                    if let meta = pendingDirectories.removeValue(forKey: try dir.descriptor.status().inode) {
                        try apply(meta, to: dir.descriptor, display: walker.path.appending(name.components).printable)
                    }
                case .entry:
                    continue
                }
            }
            current = FilePath()
            if let meta = pendingDirectories.removeValue(forKey: rootInode) {
                try apply(meta, to: root.descriptor, display: ".")
            }
        } catch let error as SystemError {
            let path = current.isEmpty ? FilePath(".") : walker.path.appending(current.components)
            throw ArchiveError.member(path.printable, error)
        }
    }

    private func apply(_ meta: DirectoryMetadata, to fd: Descriptor, display: String) throws {
        try fd.setOwner(uid: meta.uid, gid: meta.gid)
        try fd.setMode(meta.permissions)
        var names = Set<String>()
        for (name, value) in meta.attributes {
            names.insert(name)
            try value.withUnsafeBytes { try setAttribute(name, $0, on: .descriptor(fd), display: display) }
        }
        for (name, value) in meta.acls where !names.contains(name) {
            try value.withUnsafeBytes { try setAttribute(name, $0, on: .descriptor(fd), display: display) }
        }
        try fd.setTimes(access: meta.access, modification: meta.modification)
    }
}
