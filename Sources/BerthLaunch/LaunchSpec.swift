import BerthSystem
import Glibc
import SystemPackage

/// A container launch, described as a value: what the command line asked for, resolved to a
/// root directory. The supervisor hands it to the container's setup process as NUL-separated
/// key/value pairs on descriptor 3.
public struct LaunchSpec: Equatable, Sendable {
    public struct BindMount: Equatable, Sendable {
        /// The host's path.
        public var source: FilePath
        /// Where it shows in the container.
        public var destination: FilePath
        public var readOnly: Bool
        /// With the source's submounts (nspawn's `rbind`, the default; `norbind` without).
        public var recursive = true
        /// Shown through the container's id mapping, so the host's owners stay the owners
        /// inside (the default under a user namespace; `noidmap` shows them unmapped).
        public var idmap = true
        /// nspawn's `+PATH`: the source is a path in the container's own tree, not the host's.
        public var sourceInImage = false

        public init(source: FilePath, destination: FilePath, readOnly: Bool) {
            self.source = source
            self.destination = destination
            self.readOnly = readOnly
        }
    }

    /// The tree to run: a directory, or layers for an overlay (the store's `RootTree`).
    public var tree: RootTree
    public var machineName: String
    public var hostname: String
    /// The command, or with `boot` the arguments for init; empty for the root shell.
    public var arguments: [String] = []
    public var boot = false
    /// The command runs as PID 2 under a minimal init.
    public var asPID2 = false
    public var readOnly = false
    /// Changes go to a tmpfs layer over the tree, gone with the container.
    public var ephemeral = false
    /// `--volatile=` (`overlay` also sets `ephemeral`, `state` and `yes` also `readOnly`).
    public var volatile = VolatileMode.no
    /// Whether the container's root takes writes: not a read-only run's, but `--volatile=yes`'s
    /// fresh tmpfs (its image, under /usr, is what stays read-only).
    var rootIsWritable: Bool { !readOnly || volatile == .yes }
    public var privateNetwork = false
    /// A network berth makes for the machine (`--network-veth`, `-bridge`, `-zone`, `--port`):
    /// the supervisor sets it up once PID 1 exists, and PID 1 waits for it (`awaitsNetwork`).
    public var network: NetworkRequest?
    /// The setup process holds PID 1 until the supervisor says the network is made.
    var awaitsNetwork = false
    /// `--resolv-conf=` and `--timezone=`, nspawn's modes (`HostFiles`): the supervisor works
    /// out what each comes to (`resolvConfAction`, `timezoneAction`).
    public var resolvConfMode = "auto"
    public var timezoneMode = "auto"
    /// What happens to the machine's /etc/resolv.conf, and the host's file it comes from: the
    /// host's, one of resolved's, or for a network berth makes one naming the host's upstream
    /// servers.
    var resolvConfAction = HostFileAction.off
    public var resolvConf: FilePath = "/etc/resolv.conf"
    /// What happens to the machine's /etc/localtime, and for a symlink the zone it names.
    var timezoneAction = HostFileAction.off
    var timezone: String?
    /// The host's cgroup hierarchies, as the supervisor finds them: `unified` (cgroup v2 alone),
    /// `hybrid` (v1 controllers and v2 at unified/), `legacy` (v1 alone), or empty.
    var cgroupLayout = ""
    /// The machine's cgroup in each v1 hierarchy, which the setup process moves itself into.
    var legacyCgroups: [FilePath] = []
    /// `--link-journal=`, and what it comes to in the tree once the supervisor did the host's part.
    public var journalLink = JournalLink.automatic
    var journalTreePart = JournalLink.TreePart.nothing
    /// The user namespace (the default picks a range for the machine).
    public var privateUsers = PrivateUsers.pick
    /// How the container's console reaches berth's streams (`--console=`, `-P`).
    public var consoleMode = ConsoleMode.automatic
    /// No status lines (`-q`): only the container's own output.
    public var quiet = false
    /// Where the user knows the tree to be (an image's path in the store), for the status line.
    public var displayRoot: String?
    /// A datagram socket on the host that the container's init tells it is up on, as nspawn's
    /// When berth's own manager hears READY=1 (NotifyListener); nil: it hears nothing.
    public var readyWord: NotifyListener.Ready?
    /// The socket the supervisor binds for the run (`/run/host/notify` inside).
    var notifySocket: FilePath?
    /// Resource limits on the container's cgroup (`--property=`), applied by the supervisor
    /// before the container's first process runs.
    public var limits: [CgroupLimit] = []
    /// Resource limits, OOM score and CPUs for the container's processes (`--rlimit=`,
    /// `--oom-score-adjust=`, `--cpu-affinity=`), nspawn's defaults for the rest.
    public var processLimits = ProcessLimits()
    /// What the supervisor sends PID 1 when it is asked to stop the container (`--kill-signal=`):
    /// nil for nspawn's default, SIGRTMIN+3 for a booted init, SIGKILL for a command.
    public var killSignal: Int32?
    /// `--capability=` and `--drop-capability=`: what the container's bounding set gains over
    /// nspawn's default, and loses (`keptCapabilities`).
    public var addedCapabilities = Capabilities()
    public var droppedCapabilities = Capabilities()
    /// `--ambient-capability=`: raised for the payload, whichever user it runs as.
    public var ambientCapabilities = Capabilities()
    /// `--no-new-privileges=yes`: no exec in the container gains privileges.
    public var noNewPrivileges = false
    /// `--system-call-filter=` and `--suppress-sync=yes`: the run's changes to nspawn's filter.
    public var filterChanges = SyscallFilterChanges()
    /// `--personality=`: the payload's execution domain (PER_LINUX32 for x86), nil for the host's.
    public var personality: UInt?
    /// `NAME=VALUE` settings from -E, already resolved.
    public var environment: [String] = []
    public var bindMounts: [BindMount] = []
    /// `--tmpfs=PATH[:OPTIONS]`: a fresh tmpfs at each PATH, with OPTIONS (mode=0755 unless given).
    public var tmpfsMounts: [TmpfsMount] = []
    public struct TmpfsMount: Equatable, Sendable {
        public var path: FilePath
        public var options: String
        public init(path: FilePath, options: String) { (self.path, self.options) = (path, options) }
    }
    /// `--set-credential=ID:VALUE` and `--load-credential=ID:PATH`: files of /run/host/credentials
    /// (`$CREDENTIALS_DIRECTORY`), each a value given or a host's file the setup process reads.
    public var credentials: [Credential] = []
    public struct Credential: Equatable, Sendable {
        public var id: String
        public var value: String?
        public var file: FilePath?
        public init(id: String, value: String? = nil, file: FilePath? = nil) { (self.id, self.value, self.file) = (id, value, file) }
    }
    /// `--overlay=` and `--overlay-ro=`: an overlay of host directories (or the tree's own, `+`)
    /// at a path in the container.
    public var overlayMounts: [OverlayMount] = []
    public struct OverlayMount: Equatable, Sendable {
        /// The layers, lowest first, as nspawn lists them; the last is the writable one unless
        /// `readOnly`. An empty path is a fresh directory of the host's (nspawn's empty upper).
        public var layers: [FilePath]
        /// Which layers are paths in the container's tree (`+PATH`), not the host's.
        public var layersInImage: [Bool]
        public var destination: FilePath
        public var readOnly: Bool
        /// The overlay's work directory beside the writable layer, made by the supervisor.
        var work: FilePath?
        public init(layers: [FilePath], layersInImage: [Bool], destination: FilePath, readOnly: Bool) {
            (self.layers, self.layersInImage, self.destination, self.readOnly) = (layers, layersInImage, destination, readOnly)
        }
    }
    /// `--inaccessible=PATH`: each covered by an empty, mode-0 entry of its kind, read-only.
    public var inaccessiblePaths: [FilePath] = []
    public var workingDirectory: FilePath?
    public var user: String?
    public var uuid: String
    public var term: String
    /// Which of the container's standard streams are its pty (the caller's that are terminals);
    /// empty when it has none.
    var consoleStreams: [Int32] = []
    /// What each descriptor passed beside the description holds, in order (`PreparedMounts`).
    var descriptorRoles: [String] = []
    /// The host ids the container's user namespace maps onto, once the supervisor has picked
    /// them; nil without a user namespace.
    var userRange: IDRange?

    public init(tree: RootTree, machineName: String, uuid: String, term: String) {
        self.tree = tree
        self.machineName = machineName
        self.hostname = machineName
        self.uuid = uuid
        self.term = term
    }

    /// A random (version 4) UUID, as nspawn gives each container in `container_uuid`.
    public static func randomUUID() -> String {
        var digits = Array(Hex.random(32).utf8)
        digits[12] = UInt8(ascii: "4")
        digits[16] = Array("89ab".utf8)[Int(digits[16] % 4)]
        for dash in [20, 16, 12, 8] { digits.insert(UInt8(ascii: "-"), at: dash) }
        return String(decoding: digits, as: UTF8.self)
    }

    /// The description as NUL-separated key/value pairs. Paths travel as their bytes, so a name
    /// that is not UTF-8 arrives as it was. A value holding a NUL (a recipe's argument can) is
    /// refused: it would split into fields of its own.
    func encoded() throws -> [UInt8] {
        var fields: [(String, [UInt8])] = []
        func add(_ key: String, _ value: String) { fields.append((key, Array(value.utf8))) }
        func add(_ key: String, _ path: FilePath) { fields.append((key, path.bytes)) }
        add("root", tree.root)
        for (key, value) in [("machine", machineName), ("hostname", hostname), ("uuid", uuid), ("term", term)] { add(key, value) }
        for (key, flag) in [("boot", boot), ("as-pid2", asPID2), ("read-only", readOnly), ("ephemeral", ephemeral),
                            ("private-network", privateNetwork), ("awaits-network", awaitsNetwork)] { add(key, flag ? "1" : "0") }
        arguments.forEach { add("arg", $0) }
        environment.forEach { add("env", $0) }
        tree.lowerLayers.forEach { add("lower", $0) }
        if let upper = tree.upper {
            add("upper", upper.layer)
            add("work", upper.work)
        }
        for bind in bindMounts {
            add("bind-source", bind.source)
            add("bind-destination", bind.destination)
            if bind.sourceInImage { add("bind-in-image", bind.recursive ? "recursive" : "single") }
            add("bind-ro", bind.readOnly ? "1" : "0")
        }
        processLimits.fields.forEach { add($0.0, $0.1) }
        for (key, set) in [("caps-added", addedCapabilities), ("caps-dropped", droppedCapabilities), ("caps-ambient", ambientCapabilities)]
            where !set.isEmpty { add(key, String(set.rawValue, radix: 16)) }
        for tmpfs in tmpfsMounts {
            add("tmpfs", tmpfs.path)
            add("tmpfs-options", tmpfs.options)
        }
        inaccessiblePaths.forEach { add("inaccessible", $0) }
        overlayMounts.forEach { add("overlay", $0.destination) }  // the setup process attaches them
        for credential in credentials {
            add("credential", credential.id)
            if let value = credential.value { add("credential-value", value) }
            if let file = credential.file { add("credential-file", file) }
        }
        if noNewPrivileges { add("no-new-privileges", "1") }
        if !filterChanges.isEmpty { add("filter-changes", filterChanges.encoded) }
        add("link-journal", journalLink.encoded)
        if !cgroupLayout.isEmpty { add("cgroup-layout", cgroupLayout) }
        legacyCgroups.forEach { add("v1-cgroup", $0) }
        if volatile != .no { add("volatile", volatile.rawValue) }
        add("journal-tree", journalTreePart.rawValue)
        add("resolv-action", resolvConfAction.rawValue)
        add("resolv-source", resolvConf)
        add("timezone-action", timezoneAction.rawValue)
        if let timezone { add("timezone", timezone) }
        if let personality { add("personality", String(personality)) }
        if let workingDirectory { add("chdir", workingDirectory) }
        if let user { add("user", user) }
        consoleStreams.forEach { add("console-stream", String($0)) }
        descriptorRoles.forEach { add("fd", $0) }
        if let userRange {
            add("userns-base", String(userRange.base))
            add("userns-count", String(userRange.count))
        }
        if let (key, _) = fields.first(where: { $0.1.contains(0) }) {
            throw LaunchError("a value of the launch (\(key == "arg" ? "an argument" : key)) holds a NUL byte, which no program could be given")
        }
        return fields.flatMap { Array($0.0.utf8) + [0] + $0.1 + [0] }
    }

    init?(decoding bytes: [UInt8]) {
        let parts = bytes.split(separator: 0, omittingEmptySubsequences: false).map(Array.init)
        guard parts.count % 2 == 1, parts.last == [] else { return nil }
        var single: [String: [UInt8]] = [:]
        var spec = LaunchSpec(tree: RootTree(root: "/"), machineName: "", uuid: "", term: "")
        var bind = BindMount(source: "/", destination: "/", readOnly: false)
        var upper: FilePath?
        for i in stride(from: 0, to: parts.count - 1, by: 2) {
            let (key, value) = (String(decoding: parts[i], as: UTF8.self), parts[i + 1])
            let text = String(decoding: value, as: UTF8.self)
            switch key {
            case "arg": spec.arguments.append(text)
            case "env": spec.environment.append(text)
            case "lower": spec.tree.lowerLayers.append(FilePath(bytes: value))
            case "console-stream":
                guard let fd = Int32(text) else { return nil }
                spec.consoleStreams.append(fd)
            case "fd": spec.descriptorRoles.append(text)
            case "rlimit", "oom-score-adjust", "cpus":
                guard spec.processLimits.take(key, text) else { return nil }
            case "bind-source": bind.source = FilePath(bytes: value)
            case "bind-destination": bind.destination = FilePath(bytes: value)
            case "bind-in-image":
                bind.sourceInImage = true
                bind.recursive = text == "recursive"
            case "bind-ro":
                bind.readOnly = text == "1"
                spec.bindMounts.append(bind)
                bind = BindMount(source: "/", destination: "/", readOnly: false)
            case "tmpfs": spec.tmpfsMounts.append(TmpfsMount(path: FilePath(bytes: value), options: ""))
            case "tmpfs-options":
                guard !spec.tmpfsMounts.isEmpty else { return nil }
                spec.tmpfsMounts[spec.tmpfsMounts.count - 1].options = text
            case "inaccessible": spec.inaccessiblePaths.append(FilePath(bytes: value))
            case "v1-cgroup": spec.legacyCgroups.append(FilePath(bytes: value))
            case "overlay":
                spec.overlayMounts.append(OverlayMount(layers: [], layersInImage: [], destination: FilePath(bytes: value), readOnly: false))
            case "credential": spec.credentials.append(Credential(id: text))
            case "credential-value", "credential-file":
                guard !spec.credentials.isEmpty else { return nil }
                if key == "credential-value" { spec.credentials[spec.credentials.count - 1].value = text }
                else { spec.credentials[spec.credentials.count - 1].file = FilePath(bytes: value) }
            case "upper": upper = FilePath(bytes: value)
            case "work":
                guard let layer = upper else { return nil }
                spec.tree.upper = RootTree.WritableLayer(layer: layer, work: FilePath(bytes: value))
            default:
                guard single[key] == nil else { return nil }
                single[key] = value
            }
        }
        func text(_ key: String) -> String? { single[key].map { String(decoding: $0, as: UTF8.self) } }
        guard let root = single["root"], let machine = text("machine"), let hostname = text("hostname"),
              let uuid = text("uuid"), let term = text("term") else { return nil }
        spec.tree.root = FilePath(bytes: root)
        spec.machineName = machine
        spec.hostname = hostname
        spec.uuid = uuid
        spec.term = term
        spec.boot = text("boot") == "1"
        spec.asPID2 = text("as-pid2") == "1"
        spec.readOnly = text("read-only") == "1"
        spec.ephemeral = text("ephemeral") == "1"
        spec.privateNetwork = text("private-network") == "1"
        spec.awaitsNetwork = text("awaits-network") == "1"
        spec.workingDirectory = single["chdir"].map { FilePath(bytes: $0) }
        spec.user = text("user")
        func capabilities(_ key: String) -> Capabilities? { text(key).map { UInt64($0, radix: 16).map(Capabilities.init(rawValue:)) } ?? Capabilities() }
        guard let added = capabilities("caps-added"), let dropped = capabilities("caps-dropped"), let ambient = capabilities("caps-ambient") else {
            return nil
        }
        (spec.addedCapabilities, spec.droppedCapabilities, spec.ambientCapabilities) = (added, dropped, ambient)
        spec.noNewPrivileges = text("no-new-privileges") == "1"
        guard let changes = SyscallFilterChanges(encoded: text("filter-changes") ?? "") else { return nil }
        spec.filterChanges = changes
        guard let link = try? JournalLink(parsing: text("link-journal") ?? "auto"),
              let journal = JournalLink.TreePart(rawValue: text("journal-tree") ?? "nothing") else { return nil }
        (spec.journalLink, spec.journalTreePart) = (link, journal)
        spec.cgroupLayout = text("cgroup-layout") ?? ""
        guard let volatile = VolatileMode(rawValue: text("volatile") ?? "no") else { return nil }
        spec.volatile = volatile
        // Absent, they are off: the image's own files.
        let resolvAction = text("resolv-action").map { HostFileAction(rawValue: $0) } ?? .off
        let timezoneAction = text("timezone-action").map { HostFileAction(rawValue: $0) } ?? .off
        guard let resolvAction, let timezoneAction else { return nil }
        spec.resolvConfAction = resolvAction
        spec.resolvConf = single["resolv-source"].map { FilePath(bytes: $0) } ?? spec.resolvConf
        (spec.timezoneAction, spec.timezone) = (timezoneAction, text("timezone"))
        if let personality = text("personality") {
            guard let value = UInt(personality) else { return nil }
            spec.personality = value
        }
        if let base = text("userns-base") {
            guard let base = UInt32(base), let count = text("userns-count").flatMap({ UInt32($0) }) else { return nil }
            spec.userRange = IDRange(base: base, count: count)
        }
        self = spec
    }
}

extension FilePath {
    /// The path's bytes, without the terminating NUL.
    var bytes: [UInt8] { withPlatformString { Array(UnsafeRawBufferPointer(start: $0, count: strlen($0))) } }

    /// The path made of `bytes` (which hold no NUL).
    init(bytes: [UInt8]) {
        self = FilePath(platformString: bytes.map { CChar(bitPattern: $0) } + [0])
    }
}
