import BerthSystem
import Glibc
import SystemPackage

/// `.berth/staging`: work in progress, each entry locked by the process working on it.
///
/// Every change is staged here on the store's own file system and published by one rename(2)
/// after its data is synced: a new image before it is published, an old one on its way out. A
/// process killed at any point leaves an entry whose lock died with it; `tidy` (run when a store
/// opens for changes) removes it, and layers that no record names are left for `gc`.
struct StagingArea {
    let store: StoreDirectories

    /// Starts a staging area for `purpose`, locked for as long as it lives. Never called with
    /// the store's lock held: it takes it itself, so that no `tidy` sees the entry unlocked.
    func make(_ purpose: String) throws -> Staging {
        try store.withStoreLock {
            for _ in 0..<16 {
                let name = FilePath("\(purpose)-\(randomSuffix())")
                do {
                    try store.staging.makeDirectory(name, mode: 0o700)
                } catch let error as SystemError where error.errno == .fileExists {
                    continue
                }
                let directory = try store.staging.openDirectory(beneath: name)
                _ = try directory.descriptor.lock(.exclusive, wait: true)
                return Staging(name: name, directory: directory, area: store.staging,
                               path: store.statePath.appending("staging").appending(name.components))
            }
            throw StoreError(.systemFailure, "cannot make a staging directory in \(store.root)/.berth/staging")
        }
    }

    /// Removes staging entries whose owner is gone (their lock can be taken), unmounting first
    /// what a killed `export` left mounted there. It holds the store's lock, as `make` does
    /// between making an entry and locking it, so a fresh entry is never taken for a dead one.
    func tidy() throws {
        try store.withStoreLock {
            for name in try store.staging.entryNames() {
                guard let entry = try? store.staging.openDirectory(beneath: name) else {
                    try? store.staging.removeTree(name)
                    continue
                }
                guard try entry.descriptor.lock(.exclusive, wait: false) else { continue }
                do {
                    try store.staging.removeTree(name)
                } catch let error as SystemError where error.errno == .resourceBusy {
                    try Self.unmountAll(under: store.statePath.appending("staging").appending(name.components))
                    try store.staging.removeTree(name)
                }
            }
        }
    }

    /// Lazily unmounts every mount at or below `path`, deepest first.
    private static func unmountAll(under path: FilePath) throws {
        guard let real = realPath(path) else { return }
        let inside = try Mount.table().map(\.path).filter { $0.starts(with: real) }
        for mountPoint in inside.reversed() { try? Mount.unmount(mountPoint, detach: true) }
    }
}

/// One entry of the staging area: removed with everything in it when discarded, and by the
/// next store that opens if this process dies first.
final class Staging {
    let name: FilePath
    let directory: Directory
    /// The entry's host path, for the kernel (an overlay's mount point, mmdebstrap's target).
    let path: FilePath
    private let area: Directory

    init(name: FilePath, directory: Directory, area: Directory, path: FilePath) {
        self.name = name
        self.directory = directory
        self.area = area
        self.path = path
    }

    /// Removes the staging area and all in it.
    func discard() {
        try? area.removeTree(name)
    }
}
