import ArgumentParser
import BerthStore
import BerthSystem
import SystemPackage

struct CloneCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "clone", abstract: "Make a new writable image with an image's content, in constant time.")

    @OptionGroup var store: StoreOptions
    @Argument(help: "The image to clone.") var source: String
    @Argument(help: "The new image.") var target: String

    func run() throws {
        let (from, to) = (try ImageName(source), try ImageName(target))
        try store.open(create: false).clone(from, to: to, readOnly: false)
    }
}

struct SnapshotCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshot", abstract: "Keep an image's content as of now in a new read-only image.")

    @OptionGroup var store: StoreOptions
    @Argument(help: "The image.") var name: String
    @Argument(help: "The snapshot to make.") var snapshot: String

    func run() throws {
        let (from, to) = (try ImageName(name), try ImageName(snapshot))
        try store.open(create: false).clone(from, to: to, readOnly: true)
    }
}

struct RestoreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore", abstract: "Give an image a snapshot's content again; its changes since are dropped.")

    @OptionGroup var store: StoreOptions
    @Argument(help: "The image.") var name: String
    @Argument(help: "The snapshot whose content it gets.") var snapshot: String

    func run() throws {
        let (target, from) = (try ImageName(name), try ImageName(snapshot))
        try store.open(create: false).restore(target, from: from)
    }
}

struct GCCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gc", abstract: "Free the layers and leftovers no image needs.")

    @OptionGroup var store: StoreOptions
    @Flag(name: [.customShort("q"), .long], help: "Print nothing.") var quiet = false
    @Flag(name: .customLong("drop-cache"), help: "Forget the build cache first, so its layers go too.") var dropCache = false

    func run() throws {
        let opened = try store.open(create: false)
        if dropCache { try opened.dropCache() }
        let freed = try opened.collectGarbage()
        if !quiet {
            print("Freed \(freed.layers) layer\(freed.layers == 1 ? "" : "s"), \(formatSize(freed.bytes)).")
        }
    }
}

struct MountCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mount",
        abstract: "Mount a layered image's merged tree at a directory, for other tools; with --all, every image's tree at STORE/NAME.",
        discussion: """
            Every layered image's tree is mounted at STORE/NAME, and any berth command mounts one that is \
            missing again. 'berth mount --all' does it for the host's boot (after its file systems are \
            mounted), and prints what it mounted.
            """)

    @OptionGroup var store: StoreOptions
    @Flag(help: "Mount every layered image's tree that is missing at STORE/NAME.") var all = false
    @Flag(name: [.customShort("q"), .long], help: "With --all, print nothing.") var quiet = false
    @Argument(help: "The image.") var name: String?
    @Argument(help: "An existing directory.") var directory: String?
    @Flag(help: "Honour the image's setuid and setgid bits (by default they are ignored: nosuid).") var suid = false
    @Flag(help: "Let the image's device nodes open devices (by default they cannot: nodev).") var dev = false

    func run() throws {
        if all {
            guard name == nil else { throw UsageError("mount --all takes no image or directory (see 'berth mount --help')") }
            let mounted = try store.open(create: false).mountTrees()
            if !quiet { print(mounted.isEmpty ? "Every image's tree was mounted already." : mounted.map { "Mounted '\($0)'." }.joined(separator: "\n")) }
            return
        }
        guard let name, let directory else {
            throw UsageError("mount takes an image and a directory, or --all (see 'berth mount --help')")
        }
        var ignored: MountAttributes = []
        if !suid { ignored.insert(.noSetUID) }
        if !dev { ignored.insert(.noDevices) }
        try store.open(create: false).mount(try ImageName(name), at: FilePath(directory), attributes: ignored)
    }
}

struct UmountCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "umount", abstract: "Unmount what 'berth mount' put at a directory.")

    @OptionGroup var store: StoreOptions
    @Argument(help: "The directory.") var directory: String

    func run() throws {
        try store.open(create: false).unmount(FilePath(directory))
    }
}
