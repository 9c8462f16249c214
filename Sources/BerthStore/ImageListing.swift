import BerthSystem
import Glibc
import SystemPackage

/// What `list` and `show` print. It writes nothing, not even in a store without `.berth`
/// (`/var/lib/machines` of a host that has only machinectl's images), and it walks no tree
/// whose usage is known (UsageFigures) unless asked to `measure`.
struct ImageListing {
    let catalog: ImageCatalog
    let figures: UsageFigures
    /// Walk directory images that have no figure: changed by a writable run, or put there by
    /// another tool.
    var measure: Bool

    private var store: StoreDirectories? { catalog.store }

    /// Every image in the store, by name. Directories other tools put there count too. An image
    /// that cannot be read (a damaged record, a tree berth cannot walk) is left out with a
    /// warning that names it, never silently, and never stops the others being listed.
    func images(warn: (String) -> Void) throws -> [ImageInfo] {
        var result: [ImageInfo] = []
        for entry in try catalog.rootDirectory.entryNames() where !entry.string.hasPrefix(".") {
            guard try catalog.holdsDirectoryImage(entry) else { continue }
            do {
                result.append(try directoryInfo(entry))
            } catch {
                warn("cannot read image '\(entry.printable)' in \(catalog.root), so it is not listed: \(error)")
            }
        }
        let scan = try catalog.records?.scan() ?? ImageRecords.Scan()
        for (_, problem) in scan.damaged { warn("\(problem); it is not listed") }
        for (name, stack) in scan.stacks where try !catalog.holdsDirectoryImage(FilePath(name.rawValue)) {
            do {
                result.append(try layeredInfo(name, stack, among: scan.stacks))
            } catch {
                warn("cannot read image '\(name)', so it is not listed: \(error)")
            }
        }
        return result.sorted { $0.name < $1.name }
    }

    func image(_ name: ImageName) throws -> ImageInfo {
        switch try catalog.require(name) {
        case .directory: return try directoryInfo(FilePath(name.rawValue))
        case .layered(let stack): return try layeredInfo(name, stack, among: catalog.records?.stacks() ?? [])
        }
    }

    private func directoryInfo(_ entry: FilePath) throws -> ImageInfo {
        let tree = try catalog.rootDirectory.openDirectory(beneath: entry)
        let st = try tree.descriptor.status()
        var usage = (try? ImageName(entry.string)).flatMap { figures.tree($0, root: st) }
        if usage == nil && measure { usage = try catalog.rootDirectory.diskUsage(entry) }
        return ImageInfo(
            name: Printable.text(entry), kind: .directory, readOnly: catalog.isMarkedReadOnly(tree.descriptor),
            usage: usage, created: catalog.rootDirectory.birthTime(entry) ?? Int64(st.modification.tv_sec),
            parent: nil, path: catalog.root.string + "/" + Printable.text(entry),
            operatingSystem: ImageCatalog.prettyName(of: tree), layers: [], dependants: [])
    }

    /// A layered image: its own usage is its writable layer's and that of the frozen layers no
    /// other image names; the rest it shares. Its dependants are the images cloned or
    /// snapshotted from it, and from those, and so on.
    private func layeredInfo(_ name: ImageName, _ stack: LayerStack, among all: [(name: ImageName, stack: LayerStack)]) throws -> ImageInfo {
        guard let store else { throw catalog.noImage(name) }
        let layers = LayerStore(store: store, figures: figures)
        let byID = Dictionary(all.map { ($0.stack.id, $0.name) }, uniquingKeysWith: { a, _ in a })
        let dependants = all.filter { other in
            other.stack.id != stack.id && ImageCatalog.lineage(of: other.stack, among: all).dropFirst().contains(stack.id)
        }.map(\.name.rawValue)
        var users: [String: Int] = [:]
        for other in all { for id in Set(other.stack.layers) { users[id, default: 0] += 1 } }
        // A frozen layer without a figure was frozen by an earlier berth: walked, as before.
        var own = try store.layers.diskUsage(FilePath(stack.upper))
        var shared: Int64 = 0
        for id in stack.layers {
            let bytes = try layers.usage(id, frozen: true)
            if users[id, default: 0] > 1 { shared += bytes } else { own += bytes }
        }
        var os: String?
        for id in stack.allLayers.reversed() {
            if let layer = try? store.layers.openDirectory(beneath: FilePath(id)), let name = ImageCatalog.prettyName(of: layer) {
                os = name
                break
            }
        }
        let mounts = ImageMounts(catalog: catalog, store: store)
        return ImageInfo(
            name: name.rawValue, kind: .layered, readOnly: stack.readOnly, usage: own, sharedUsage: shared,
            created: stack.created, parent: stack.parent.map { byID[$0]?.rawValue ?? "\($0) (removed)" },
            path: mounts.treePath(name).string,
            operatingSystem: os, layers: stack.layers, dependants: dependants.sorted(),
            description: stack.description)
    }
}
