import ArgumentParser
import BerthLaunch
import BerthStore
import BerthSystem
import Glibc
import SystemPackage

/// `run` and `boot` as `berth --help` lists them. Berth.main reads their command lines itself
/// (RunCommandLine) before swift-argument-parser would, so these are never parsed or run.
struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run a command, a shell, or with -b the init of an image or directory, as systemd-nspawn does (the default).")
}

struct BootCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "boot", abstract: "Boot an image: berth run -b -M NAME.")
}

extension RunCommandLine {
    /// Starts the container and returns its exit status.
    func launch() throws -> Int32 {
        let target = try resolveTarget()
        let onTerminal = Terminal.isTerminal(0)
        // An ephemeral container is a machine of its own: the name gets a random suffix, as nspawn's.
        let name = ephemeral ? "\(target.name.prefix(47))-\(Hex.random(16))" : target.name
        var spec = LaunchSpec(root: target.root, machineName: name, uuid: LaunchSpec.randomUUID(),
                              term: onTerminal ? environment("TERM") ?? "vt220" : "dumb")
        spec.hostname = hostname ?? name
        spec.arguments = arguments
        spec.boot = boot
        spec.readOnly = target.readOnly
        spec.ephemeral = ephemeral
        spec.asPID2 = asPID2
        spec.lowerLayers = target.lowerLayers
        spec.upperLayer = target.upper?.layer
        spec.overlayWork = target.upper?.work
        spec.privateNetwork = privateNetwork
        spec.privateUsers = try privateUsers.map { try PrivateUsers(parsing: $0) } ?? .pick
        spec.consoleMode = try console.map { try ConsoleMode(parsing: $0) } ?? .automatic
        spec.quiet = quiet
        spec.displayRoot = target.displayRoot
        _ = try privateUsersOwnership.map { try PrivateUsersOwnership(parsing: $0) }
        spec.workingDirectory = chdir
        spec.user = user
        spec.environment = try setenv.compactMap { setting in
            if setting.contains("=") { return setting }
            return environment(setting).map { "\(setting)=\($0)" }
        }
        spec.bindMounts = try bind.map { try bindMount($0, readOnly: false) } + bindReadOnly.map { try bindMount($0, readOnly: true) }
        let started = try Supervisor.start(spec)
        // The small supervisor takes over, holding the image's lock; failing that, berth supervises.
        Supervisor.handOver(started, keeping: target.lockDescriptors)
        let status = Supervisor.supervise(started)
        withExtendedLifetime(target) {}
        return status
    }

    /// What the container runs on: a tree, or an image's layers, held (locked) while it runs.
    private struct Target {
        var root: String
        var name: String
        var readOnly: Bool
        var lowerLayers: [String] = []
        var upper: (layer: String, work: String)?
        /// Where the user knows the tree to be, for the status line.
        var displayRoot: String?
        /// What keeps others out while the container runs: the image's use, or the tree's lock.
        var hold: Any?

        var lockDescriptors: [Int32] {
            if let lock = hold as? Descriptor { return [lock.rawValue] }
            if let use = hold as? ImageUse { return [use.lockDescriptor] }
            return []
        }
    }

    private var access: ImageAccess { ephemeral ? .ephemeral : readOnly ? .readOnly : .writable }

    private func resolveTarget() throws -> Target {
        switch (directory, machine) {
        case (let path?, nil):
            guard let real = realpath(path, nil) else {
                throw StoreError("cannot use \(path) as the container's root: it does not exist")
            }
            defer { free(real) }
            let root = String(cString: real)
            guard root != "/" else { throw StoreError("-D / would run the host's own root; give another directory") }
            try requireOSTree(root)
            // Writers hold the tree alone; read-only and ephemeral runs may share it.
            let lock = try Descriptor.open(FilePath(root), O_RDONLY | O_DIRECTORY)
            guard try lock.lock(access == .writable ? .exclusive : .shared, wait: false) else {
                throw StoreError("\(root) is in use by another container; stop it, or run this one --read-only or --ephemeral")
            }
            return Target(root: root, name: FilePath(root).lastComponent?.string ?? root, readOnly: readOnly, hold: lock)
        case (nil, let name?):
            let image = try ImageName(name)
            let use = try StoreOptions.open(store, create: false).use(image, access)
            if !use.isLayered { try requireOSTree(use.root.string) }
            return Target(root: use.root.string, name: image.rawValue, readOnly: use.readOnly,
                          lowerLayers: use.lowerLayers.map(\.string),
                          upper: use.upper.map { ($0.layer.string, $0.work.string) },
                          displayRoot: FilePath(StoreOptions.path(store)).appending(image.rawValue).string, hold: use)
        case (nil, nil):
            throw UsageError("give the tree to run: -D DIR, or -M NAME for an image in the store (see 'berth run --help')")
        default:
            throw UsageError("give -D or -M, not both (see 'berth run --help')")
        }
    }

    /// nspawn refuses a tree without /usr as not an OS tree.
    private func requireOSTree(_ root: String) throws {
        guard (try? FileStatus.of(FilePath(root).appending("usr")))??.kind == .directory else {
            throw StoreError("\(root) is not an OS tree: it has no /usr; give the root of an installed system")
        }
    }

    /// nspawn's `SRC[:DST[:OPTIONS]]`, OPTIONS a comma-separated list of rbind, norbind, idmap
    /// and noidmap.
    private func bindMount(_ text: String, readOnly: Bool) throws -> LaunchSpec.BindMount {
        let parts = text.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false).map(String.init)
        guard let source = parts.first, source.hasPrefix("/") else {
            throw UsageError("--bind takes SRC[:DST[:OPTIONS]] with an absolute SRC, not '\(text)'")
        }
        let destination = parts.count > 1 && !parts[1].isEmpty ? parts[1] : source
        guard destination.hasPrefix("/") else { throw UsageError("--bind destination must be absolute, not '\(destination)'") }
        var bind = LaunchSpec.BindMount(source: source, destination: destination, readOnly: readOnly)
        for option in parts.count > 2 ? parts[2].split(separator: ",", omittingEmptySubsequences: false) : [] {
            switch option {
            case "rbind": bind.recursive = true
            case "norbind": bind.recursive = false
            case "idmap": bind.idmap = true
            case "noidmap": bind.idmap = false
            default: throw UsageError("--bind takes the options rbind, norbind, idmap and noidmap, not '\(option)' in '\(text)'")
            }
        }
        return bind
    }
}
