import BerthSystem
import Glibc
import SystemPackage

/// What `gc` freed.
public struct CollectedGarbage: Sendable {
    public var layers = 0
    public var records = 0
    public var bytes: Int64 = 0
}

/// `berth gc`: frees every layer no image and no build cache entry names, the work directories
/// of layers that are no longer written, records a directory image of the same name shadows,
/// and the usage figures of what is gone. What it cannot read, it cannot prove unused: while
/// one record is damaged, it frees nothing.
struct GarbageCollector {
    let store: StoreDirectories
    let layers: LayerStore
    let cache: BuildCache

    func collect() throws -> CollectedGarbage {
        let staging = try StagingArea(store: store).make("gc")
        defer { staging.discard() }
        var result = CollectedGarbage()
        try store.withStoreLock {
            let scan = try ImageRecords(store: store).scan()
            if let first = scan.damaged.first {
                let names = scan.damaged.map { "'\($0.entry)'" }.joined(separator: ", ")
                throw StoreError(.systemFailure, "gc freed nothing: it cannot tell which layers the damaged record\(scan.damaged.count > 1 ? "s" : "") of \(names) need: \(first.problem)")
            }
            var named = Set<String>(), uppers = Set<String>()
            for (_, stack) in scan.stacks {
                named.formUnion(stack.allLayers)
                uppers.insert(stack.upper)
            }
            for entry in try store.images.entryNames() where try store.holdsDirectoryImage(entry) {
                try store.images.rename(entry, to: FilePath("record-\(result.records)"), in: staging.directory, .noReplace)
                result.records += 1
            }
            for stack in try cache.stacks() { named.formUnion(stack) }
            for entry in try store.layers.entryNames() where !named.contains(entry.string) {
                result.bytes += try store.layers.diskUsage(entry)
                try store.layers.rename(entry, to: FilePath("layer-\(entry.string)"), in: staging.directory, .noReplace)
                result.layers += 1
                CrashPoint.reach("gc")
            }
            for entry in try store.work.entryNames() where !uppers.contains(entry.string) {
                try store.work.rename(entry, to: FilePath("work-\(entry.string)"), in: staging.directory, .noReplace)
            }
            let trees = try store.rootDirectory.entryNames().filter { try store.holdsDirectoryImage($0) }
            layers.figures.forgetAllBut(layers: named, trees: Set(trees.map(\.string)))
            let freed = result
            store.afterCommit("gc-sync", done: "gc moved \(freed.layers) layer\(freed.layers == 1 ? "" : "s") out of the store") {
                try store.staging.sync()
            }
        }
        return result
    }
}
