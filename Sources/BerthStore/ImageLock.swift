import BerthSystem
import Glibc
import SystemPackage

/// An image's lock, held for exactly as long as this value lives: the BSD lock on the image's
/// directory (the tree of a directory image, the record's of a layered one), shared by readers,
/// exclusive by writers. It cannot be copied, so no copy can outlive the change it guards, and
/// its descriptor cannot be dropped while it is held (the bug it replaces: `guard try
/// lock(...) != nil` let go of the lock on the spot).
struct ImageLock: ~Copyable {
    private let descriptor: Descriptor
    let kind: Descriptor.LockKind

    /// What the lock is taken for, so that a busy image's error says only what is possible.
    enum Purpose {
        /// A writable run, or `berth mount`: the user means to write.
        case writableRun
        /// A read-only or ephemeral run, or an export: a read of the tree.
        case read
        /// Freezing the image's content for a clone, snapshot or build.
        case snapshot
        /// A change to the image itself: remove, rename, restore, replace.
        case change
    }

    /// Takes the lock on `entry` in `parent` without waiting; throws `inUse` naming who holds it.
    init(_ name: ImageName, entry: FilePath, in parent: Directory, _ kind: Descriptor.LockKind, for purpose: Purpose) throws {
        let fd: Descriptor
        do {
            fd = try parent.openFile(entry, O_RDONLY | O_DIRECTORY)
        } catch let error as SystemError where error.errno == .noSuchFileOrDirectory {
            throw StoreError(.notFound, "image '\(name)' was removed or renamed meanwhile by another command; 'berth list' shows the images")
        }
        guard try fd.lock(kind, wait: false) else { throw Self.busy(name, fd, wanted: kind, for: purpose) }
        // The name may have moved on between the open and the lock (a rename, a removal, a
        // conversion): then this lock guards nothing.
        let (held, now) = (try fd.status(), try parent.status(entry))
        guard let now, now.device == held.device, now.inode == held.inode else {
            throw StoreError(.inUse, "image '\(name)' changed while berth opened it (another command moved it); try again")
        }
        descriptor = fd
        self.kind = kind
    }

    /// Why the lock is busy, told by who holds it: a shared lock that can still be had means
    /// readers only; one that cannot means a writer. Alongside a writer nothing may read the
    /// image: its tree (a directory image's, or a layered one's writable layer) changes under
    /// any reader, and an overlay over a layer that something writes is undefined in overlayfs.
    private static func busy(_ name: ImageName, _ fd: Descriptor, wanted: Descriptor.LockKind, for purpose: Purpose) -> StoreError {
        let readersOnly = wanted == .exclusive && ((try? fd.lock(.shared, wait: false)) ?? false)
        if readersOnly { fd.unlock() }
        guard readersOnly else {
            if purpose == .snapshot {
                return StoreError(.inUse, "image '\(name)' is running writable and changing; stop it first, or snapshot it once it stops")
            }
            return StoreError(.inUse, "image '\(name)' is in use by another container that writes to it: nothing can run, read or change it until that one stops; stop it first")
        }
        if purpose == .writableRun {
            return StoreError(.inUse, "image '\(name)' is in use by another container, read-only or ephemeral: run this one --read-only or --ephemeral too, or stop the others first")
        }
        return StoreError(.inUse, "image '\(name)' is in use by read-only or ephemeral containers, or an export; stop them first")
    }

    /// The descriptor's number, for a process that takes over the lock (it inherits the open file).
    var rawValue: Int32 { descriptor.rawValue }

    func inodeFlags() -> InodeFlags? { descriptor.inodeFlags() }
    func setInodeFlags(_ flags: InodeFlags) throws { try descriptor.setInodeFlags(flags) }

    deinit {
        // Released before the descriptor closes: a child forked meanwhile shares the open file.
        descriptor.unlock()
    }
}
