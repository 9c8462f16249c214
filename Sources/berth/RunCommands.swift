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
    /// Starts the container and returns its exit status (in the background: 0 once it is up).
    func launch() throws -> Int32 {
        if detach && environment(BackgroundStart.childVariable) == nil { return try BackgroundStart(self).run() }
        // --volatile: the image is only read (overlay: under a throwaway layer, as -x).
        let access: ImageAccess = ephemeral || volatile == .overlay ? .ephemeral
            : readOnly || volatile == .state || volatile == .yes ? .readOnly : .writable
        // -D DIR -M NAME: the directory, run as machine NAME (nspawn's --machine).
        if directory != nil, let machine, let problem = RunValueChecks.hostnameProblem(machine) {
            throw UsageError("-M '\(machine)' is not a valid machine name: \(problem)")
        }
        let image = directory == nil ? machine : nil
        if let template {
            // As nspawn: a copy made for a run that throws it away would be thrown away unseen.
            guard let directory else {
                throw UsageError("--template makes the -D directory from a tree; for an image of the store, 'berth clone TEMPLATE NAME' makes it")
            }
            guard !ephemeral else { throw UsageError("--template and --ephemeral exclude each other: an ephemeral run keeps no tree to make") }
            try RunTarget.make(directory, from: template)
        }
        let target: RunTarget
        switch (directory, machine) {
        case (let path?, _): target = try RunTarget.directory(path, access)  // with -M, nspawn's: it names the machine
        case (nil, let name?):
            // Without a user namespace, a writable run shares the tree's mount at STORE/NAME.
            let ownOverlay = try privateUsers.map { try PrivateUsers(parsing: $0) } != .off
            target = try StoreOptions.open(store, create: false).runTarget(ImageName(name), access, ownOverlay: ownOverlay)
        case (nil, nil):
            throw UsageError("give the tree to run: -D DIR, or -M NAME for an image in the store (see 'berth run --help')")
        }
        let onTerminal = Terminal.isTerminal(0)
        // An ephemeral container is a machine of its own: the name gets a random suffix, as nspawn's
        // (a background start picked it already).
        let given = environment(BackgroundStart.nameVariable)
        // A directory's name made a valid hostname, as nspawn makes it (my_box runs as mybox).
        let cleaned = NspawnSettings.machineName(ofDirectory: target.name)
        if directory != nil && machine == nil && cleaned.isEmpty {
            throw UsageError("cannot make a machine name of the directory's name '\(target.name)': give one with -M NAME")
        }
        let named = directory == nil ? target.name : machine ?? cleaned
        let base = given ?? (ephemeral ? "\(named.prefix(47))-\(Hex.random(16))" : named)
        // A machine's name is its own among running machines. A machine started in the background
        // is found by its name, so it must have it; a run in the foreground whose name is taken (a
        // read-only run beside the running machine, an image of the same name in another store)
        // is listed under the name with a random suffix, as an ephemeral one is.
        var name = base
        var nameLock = try MachineRecord.lockName(base)
        if nameLock == nil && given == nil && !detach {
            name = "\(base.prefix(47))-\(Hex.random(8))"
            nameLock = try MachineRecord.lockName(name)
        }
        guard let nameLock else {
            throw StoreError(.inUse, "machine '\(base)' is already running; 'berth ps' lists it, 'berth poweroff \(base)' stops it")
        }
        // TERM is the caller's, as nspawn passes it, terminal or not; a machine in the background
        // writes its console to a log, which is no terminal of anyone's.
        var spec = LaunchSpec(tree: target.tree, machineName: name, uuid: uuid ?? target.machineID ?? LaunchSpec.randomUUID(),
                              term: detach ? "dumb" : environment("TERM") ?? (onTerminal ? "vt220" : ""))
        spec.hostname = hostname ?? base
        spec.arguments = (boot ? Self.ownIdentity(target, spec) : []) + arguments
        spec.boot = boot
        spec.readOnly = target.readOnly
        spec.ephemeral = ephemeral || volatile == .overlay
        spec.volatile = volatile
        spec.asPID2 = asPID2
        spec.privateNetwork = privateNetwork
        spec.network = try networkRequest()
        spec.privateUsers = try privateUsers.map { try PrivateUsers(parsing: $0) } ?? .pick
        spec.consoleMode = try console.map { try ConsoleMode(parsing: $0) } ?? .automatic
        spec.quiet = quiet
        spec.limits = try properties.map { try CgroupLimit(parsing: $0) }
        spec.processLimits = processLimits
        spec.killSignal = killSignal
        (spec.addedCapabilities, spec.droppedCapabilities, spec.ambientCapabilities) = (addedCapabilities, droppedCapabilities, ambientCapabilities)
        spec.noNewPrivileges = noNewPrivileges
        spec.filterChanges = filterChanges
        spec.journalLink = journalLink
        spec.personality = personality
        (spec.resolvConfMode, spec.timezoneMode) = (resolvConfMode, timezoneMode)
        spec.displayRoot = target.displayPath
        // A booted machine in the background is up when its systemd says so.
        spec.readyWord = notifyReady || (detach && boot) ? .fromPayload : .atStart
        _ = try privateUsersOwnership.map { try PrivateUsersOwnership(parsing: $0) }
        spec.workingDirectory = chdir.map { FilePath($0) }
        spec.user = user
        // What nspawn tells the container of its host, then -E (NAME alone: the caller's value, or
        // empty when the caller has none, as nspawn sets it).
        spec.environment = OSRelease.hostIdentity() + setenv.map { setting in
            setting.contains("=") ? setting : "\(setting)=\(environment(setting) ?? "")"
        }
        spec.credentials = credentials
        spec.tmpfsMounts = try tmpfs.map(Self.tmpfsMount)
        spec.inaccessiblePaths = try inaccessible.map { path in
            guard path.hasPrefix("/") else { throw UsageError("--inaccessible takes an absolute path, not '\(path)'") }
            return FilePath(path)
        }
        spec.overlayMounts = try overlays.map { try Self.overlayMount($0.spec, readOnly: $0.readOnly) }
        spec.bindMounts = try bind.map { try bindMount($0, readOnly: false) } + bindReadOnly.map { try bindMount($0, readOnly: true) }
        let remount = target.remountAfterExit.map { TreeRemount(target: $0, tree: target.tree) }
        var started: Supervisor.Started
        do {
            started = try Supervisor.start(spec, remounting: remount)
        } catch {
            // Nothing ran: the tree goes back where it was at once.
            try? remount?.mount()
            throw error
        }
        // What `berth ps` and the other machine commands find it by.
        var record = try? MachineRecord(name: name, leader: started.pid, supervisor: getpid(), boot: boot, image: image,
                                        root: target.displayPath, cgroup: started.cgroupPath, killSignal: killSignal)
        record?.filterChanges = filterChanges
        if (try? record?.write()) != nil { started.machineRecord = name }
        // A machine booted in the background has its console where `berth login` attaches; it is
        // listened on only once the record is written, so a login never finds a socket of a
        // machine that is not listed.
        if detach && started.hasConsole && started.machineRecord != nil,
           let listener = try? ConsoleSocket.listen(at: MachineRecord.consolePath(name)) {
            started.acceptLogins(on: listener)
        }
        // The background half of a start comes back after a reboot.
        started.restartsOnReboot = detach && boot
        // The small supervisor takes over, holding the image's lock and the name's; failing that,
        // berth supervises.
        Supervisor.handOver(started, keeping: target.lockDescriptors + [nameLock.rawValue])
        let status = Supervisor.supervise(started)
        withExtendedLifetime(target) {}
        withExtendedLifetime(nameLock) {}
        if status == ExitStatus.rebootCode && started.restartsOnReboot {
            Supervisor.restartArguments = CommandLine.arguments
            Supervisor.restart()
        }
        return status
    }

    /// A clone (or an image built on a base) boots as a machine of its own, while its content
    /// stays what it was given: where it still has its parent's machine id or hostname, systemd
    /// inside is told its own on the command line it reads as the kernel's (`systemd.machine_id=`,
    /// which it then writes to the image's own layer; `systemd.hostname=`, which it leaves there
    /// until one is set inside). The machine id is the container's UUID, as nspawn's
    /// `container_uuid` is its machine's.
    private static func ownIdentity(_ target: RunTarget, _ spec: LaunchSpec) -> [String] {
        target.inheritedIdentity.map { file in
            file == "etc/machine-id"
                ? "systemd.machine_id=\(spec.uuid.filter { $0 != "-" })"
                : "systemd.hostname=\(spec.hostname)"
        }
    }

    /// nspawn's `SRC[:DST[:OPTIONS]]`, OPTIONS a comma-separated list of rbind, norbind, idmap
    /// and noidmap.
    private func bindMount(_ text: String, readOnly: Bool) throws -> LaunchSpec.BindMount {
        let parts = Self.splitAtColons(text, most: 3)
        let inImage = parts[0].hasPrefix("+")
        let source = inImage ? String(parts[0].dropFirst()) : parts[0]
        // An empty source (`:DST`) is nspawn's fresh directory, which the supervisor makes.
        guard source.hasPrefix("/") || (source.isEmpty && !inImage && parts.count > 1 && !parts[1].isEmpty) else {
            throw UsageError("--bind takes SRC[:DST[:OPTIONS]] with an absolute SRC (+SRC for one in the tree, nothing for a fresh directory), not '\(text)'")
        }
        let destination = parts.count > 1 && !parts[1].isEmpty ? parts[1] : source
        guard destination.hasPrefix("/") else { throw UsageError("--bind destination must be absolute, not '\(destination)'") }
        var bind = LaunchSpec.BindMount(source: FilePath(source), destination: FilePath(destination), readOnly: readOnly)
        bind.sourceInImage = inImage
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

    /// `text` split at its first `most - 1` colons, as nspawn splits a mount's argument: `\:` is
    /// a colon of the path, `\\` a backslash.
    static func splitAtColons(_ text: String, most: Int) -> [String] {
        var parts = [""]
        var escaped = false
        for character in text {
            if escaped {
                parts[parts.count - 1].append(character)
                escaped = false
            } else if character == "\\" && parts.count < most {
                escaped = true
            } else if character == ":" && parts.count < most {
                parts.append("")
            } else {
                parts[parts.count - 1].append(character)
            }
        }
        return parts
    }

    /// `--overlay=` and `--overlay-ro=`, as nspawn reads them: paths split at colons (`\:` one
    /// in a path), lowest layer first, the last the destination when there are three or more,
    /// else the second both the top layer and the destination; `+PATH` a path of the tree; for
    /// a writable overlay an empty top layer is a fresh directory.
    static func overlayMount(_ text: String, readOnly: Bool) throws -> LaunchSpec.OverlayMount {
        let option = readOnly ? "--overlay-ro" : "--overlay"
        let parts = splitAtColons(text, most: Int.max)
        guard parts.count >= 2 else { throw UsageError("\(option) takes at least two paths, LOWER:UPPER or LOWER...:UPPER:DST, not '\(text)'") }
        let destination = parts[parts.count - 1]
        let layers = parts.count == 2 ? parts : Array(parts.dropLast())
        guard destination.hasPrefix("/") || destination.hasPrefix("+/") else {
            throw UsageError("\(option) destination must be absolute, not '\(destination)' in '\(text)'")
        }
        for (index, layer) in layers.enumerated() {
            let top = index == layers.count - 1
            if layer.isEmpty && top && !readOnly && parts.count > 2 { continue }
            guard layer.hasPrefix("/") || layer.hasPrefix("+/") else {
                throw UsageError("\(option) takes absolute paths (+PATH for one in the tree), not '\(layer)' in '\(text)'")
            }
        }
        return LaunchSpec.OverlayMount(layers: layers.map { FilePath($0.hasPrefix("+") ? String($0.dropFirst()) : $0) },
                                       layersInImage: layers.map { $0.hasPrefix("+") },
                                       destination: FilePath(destination.hasPrefix("+") ? String(destination.dropFirst()) : destination),
                                       readOnly: readOnly)
    }

    /// `--tmpfs=PATH[:OPTIONS]`, as nspawn reads it.
    static func tmpfsMount(_ text: String) throws -> LaunchSpec.TmpfsMount {
        let parts = splitAtColons(text, most: 2)
        guard parts[0].hasPrefix("/") else { throw UsageError("--tmpfs takes an absolute PATH[:OPTIONS], not '\(text)'") }
        return LaunchSpec.TmpfsMount(path: FilePath(parts[0]), options: parts.count > 1 ? parts[1] : "")
    }
}
