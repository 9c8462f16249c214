import Glibc
import SystemPackage

/// A depth-first walk of a directory tree that does not recurse and holds one directory open
/// whatever the depth, so a tree nested 20,000 levels deep (an archive or a container can make
/// one) costs neither the stack nor the descriptor table. Going down opens a child beneath the
/// current directory; going up opens `..` and checks that it is the directory the walk came
/// from, so a tree renamed under the walk stops it rather than sending it elsewhere.
///
/// `next()` yields each entry of the current directory; a directory among them is entered only
/// when the caller hands it to `enter` (it may open it its own way, or not enter at all). Once
/// an entered directory's entries are done, `next()` yields `.left(name)` with `directory` back
/// at its parent, where a removal can rmdir it.
public final class TreeWalker {
    public enum Event {
        /// An entry of `directory`, with its status (not following a symlink).
        case entry(FilePath, FileStatus)
        /// The entered directory `name` of `directory` is done.
        case left(FilePath)
    }

    private struct Frame {
        var name: FilePath
        var names: [FilePath]
        var next = 0
        var device: dev_t
        var inode: ino_t
    }

    /// The directory whose entry `next()` returned last.
    public private(set) var directory: Directory
    /// `directory`'s path relative to the walk's root (empty at the root).
    public private(set) var path = FilePath()
    private var frames: [Frame]
    private let sorted: Bool
    private let rootDisplay: String

    /// A walk of `root`'s contents; with `sorted`, names come in byte order.
    public init(_ root: Directory, sorted: Bool = false) throws {
        self.sorted = sorted
        directory = root
        rootDisplay = root.displayPath
        let st = try root.descriptor.status()
        frames = [Frame(name: FilePath(), names: try Self.names(of: root, sorted: sorted), device: st.device, inode: st.inode)]
    }

    /// How many directories deep `directory` is below the root.
    public var depth: Int { frames.count - 1 }

    private static func names(of directory: Directory, sorted: Bool) throws -> [FilePath] {
        let names = try directory.entryNames()
        return sorted ? names.sorted { $0.string.utf8.lexicographicallyPrecedes($1.string.utf8) } : names
    }

    public func next() throws -> Event? {
        while let last = frames.indices.last {
            if frames[last].next < frames[last].names.count {
                let name = frames[last].names[frames[last].next]
                frames[last].next += 1
                guard let st = try directory.status(name) else { continue }  // gone meanwhile
                return .entry(name, st)
            }
            guard last > 0 else {
                frames.removeAll()
                return nil
            }
            let done = frames.removeLast()
            try up(expecting: frames[last - 1])
            return .left(done.name)
        }
        return nil
    }

    /// Enters `opened`, the directory the entry `name` just returned names; its entries come next.
    public func enter(_ name: FilePath, opened: Directory) throws {
        let st = try opened.descriptor.status()
        frames.append(Frame(name: name, names: try Self.names(of: opened, sorted: sorted), device: st.device, inode: st.inode))
        path.append(name.components)
        directory = Directory(opened.descriptor, displayPath: display(path))
    }

    /// Opens the entry `name` beneath `directory` (never a symlink, never another file system)
    /// and enters it.
    @discardableResult
    public func enter(_ name: FilePath) throws -> Directory {
        let opened = try directory.openDirectory(beneath: name)
        try enter(name, opened: opened)
        return directory
    }

    private func up(expecting parent: Frame) throws {
        let fd = try retryingInterrupts("openat", path: directory.displayPath + "/..") {
            Glibc.openat(directory.rawValue, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW)
        }
        let opened = Descriptor(owning: fd)
        let st = try opened.status()
        path.removeLastComponent()
        guard st.device == parent.device, st.inode == parent.inode else {
            throw SystemError("openat", Errno(rawValue: ESTALE), path: display(path) + " (it moved while berth walked it)")
        }
        directory = Directory(opened, displayPath: display(path))
    }

    /// A path for messages: the whole path while it is short, else its root, depth and last
    /// name (a path 20,000 levels deep spelled out at every level would cost the square of it).
    private func display(_ relative: FilePath) -> String {
        if relative.isEmpty { return rootDisplay }
        if depth <= 16 { return rootDisplay + "/" + relative.printable }
        let last = relative.lastComponent.map { FilePath(root: nil, [$0]) } ?? relative
        return rootDisplay + "/…(\(depth) levels)…/" + last.printable
    }
}
