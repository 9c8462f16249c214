import BerthLaunch
import BerthStore
import BerthSystem
import Glibc
import SystemPackage

/// The command line of `berth run` and `berth boot`, read by hand rather than by
/// swift-argument-parser. Run is the command that has to start fast, and the parser's reflection
/// over its property wrappers cost 3.5 ms of a 13 ms container start (measured with perf; see
/// docs/design-notes.md). The other subcommands keep swift-argument-parser.
///
/// The rules are systemd-nspawn's getopt's (`+` mode): options come first, `--long VALUE`,
/// `--long=VALUE`, `-x VALUE`, `-xVALUE` and clusters such as `-bD DIR`; the first argument that
/// is not an option, or the one after `--`, starts the command (with `-b`, init's arguments).
/// `--store` is taken here too, so it goes anywhere before the command.
struct RunCommandLine {
    var store: String?
    var directory: String?
    var machine: String?
    var boot = false
    var ephemeral = false
    var readOnly = false
    var setenv: [String] = []
    var bind: [String] = []
    var bindReadOnly: [String] = []
    var tmpfs: [String] = []
    /// `--set-credential=`, `--load-credential=`.
    var credentials: [LaunchSpec.Credential] = []
    var inaccessible: [String] = []
    /// `--overlay=`, `--overlay-ro=`, with whether each is read-only.
    var overlays: [(spec: String, readOnly: Bool)] = []
    var chdir: String?
    var user: String?
    var hostname: String?
    var privateNetwork = false
    /// `-n/--network-veth`, `--network-bridge=BR`, `--network-zone=Z`: the last one given.
    var network: NetworkRequest.Mode?
    /// `-p/--port`s.
    var ports: [String] = []
    var privateUsers: String?
    var privateUsersOwnership: String?
    var asPID2 = false
    var console: String?
    /// `--property=NAME=VALUE` resource limits, in systemd's words.
    var properties: [String] = []
    /// `--rlimit=`, `--oom-score-adjust=`, `--cpu-affinity=`.
    var processLimits = ProcessLimits()
    /// `--uuid=`: the machine's id, as `container_uuid` gives it (8-4-4-4-12, lower case).
    var uuid: String?
    /// `--capability=`, `--drop-capability=`, `--ambient-capability=`, `--no-new-privileges=`,
    /// `--personality=`, as LaunchSpec holds them.
    var addedCapabilities = Capabilities()
    var droppedCapabilities = Capabilities()
    var ambientCapabilities = Capabilities()
    var noNewPrivileges = false
    /// `--system-call-filter=`, `--suppress-sync=`.
    var filterChanges = SyscallFilterChanges()
    var personality: UInt?
    /// `--resolv-conf=`, `--timezone=`: nspawn's modes.
    var resolvConfMode = "auto"
    /// `--template=DIR`: what a missing -D directory is made a copy of.
    var template: String?
    /// `--notify-ready=yes`: a machine in the background is up only once it says READY=1.
    var notifyReady = false
    /// `--volatile[=MODE]`.
    var volatile = VolatileMode.no
    /// `--link-journal=`, `-j`.
    var journalLink = JournalLink.automatic
    var timezoneMode = "auto"
    /// `--kill-signal=`: what PID 1 is sent when berth is asked to stop the container.
    var killSignal: Int32?
    var quiet = false
    var help = false
    /// In the background (`start`, `-d`): berth returns once the machine is up.
    var detach = false
    /// How long `start` waits for the machine to be up, in seconds.
    var timeout: Double = 90
    /// The command and its arguments, or with -b init's arguments.
    var arguments: [String] = []
    /// `--settings=`: yes, no, trusted or override (RunCommandLine+Settings).
    var settingsMode: String?
    /// The groups of settings the command line set, which a settings file's keys leave alone.
    var givenGroups: Set<String> = []

    /// The run or boot line in berth's arguments, or nil when they name another subcommand (or
    /// ask for berth's own help or version), which swift-argument-parser then reads. Run is the
    /// default subcommand, as systemd-nspawn's command line is: `berth -bD DIR`.
    static func parse(_ arguments: [String]) throws -> RunCommandLine? {
        // --store may come before the subcommand's name.
        var i = 0
        while i < arguments.count, arguments[i] == "--store" || arguments[i].hasPrefix("--store=") {
            i += arguments[i] == "--store" ? 2 : 1
        }
        // A bare `berth` (or `berth --store S`) is a request for the usage, which
        // swift-argument-parser prints: a run needs -D or -M anyway.
        guard i < arguments.count else { return nil }
        let leading = Array(arguments[..<i])
        switch arguments[i] {
        case "run": return try RunCommandLine(leading + arguments[(i + 1)...], boot: false)
        case "boot": return try RunCommandLine(leading + arguments[(i + 1)...], boot: true)
        case "start":
            var line = try RunCommandLine(leading + arguments[(i + 1)...], boot: true, verb: "start")
            line.detach = true
            return line
        case "help" where i + 1 < arguments.count && ["run", "boot", "start"].contains(arguments[i + 1]):
            return try RunCommandLine(["--help"], boot: arguments[i + 1] == "boot")
        case "help" where i + 1 < arguments.count && !otherSubcommands.contains(arguments[i + 1]) && arguments[i + 1] != "help":
            throw unknownCommand(arguments[i + 1])
        case "help", "-h", "--help", "--version", "--generate-completion-script", "--experimental-dump-help":
            return nil
        case let word where !word.hasPrefix("-") && otherSubcommands.contains(word):
            return nil
        case let word where !word.hasPrefix("-"):
            // Run is the default subcommand only with its options first (`berth -D DIR ls`), as
            // nspawn's command line is: a leading word that is no subcommand is a mistyped one.
            throw unknownCommand(word)
        default:
            return try RunCommandLine(arguments, boot: false)
        }
    }

    private static func unknownCommand(_ word: String) -> UsageError {
        let names = Berth.configuration.subcommands.compactMap { $0.configuration.commandName }
        let hint = CommandSuggestion.forWord(word, among: names).map { "; did you mean '\($0)'?" } ?? ""
        return UsageError("unknown command '\(word)'\(hint) (see 'berth --help')")
    }

    /// The subcommands swift-argument-parser reads.
    static var otherSubcommands: Set<String> {
        Set(Berth.configuration.subcommands.compactMap { $0.configuration.commandName }).subtracting(["run", "boot", "start"])
    }

    private init(_ line: [String], boot bootLine: Bool, verb: String = "boot") throws {
        var i = 0
        func value(for name: String, inline: String?) throws -> String {
            if let inline { return inline }
            i += 1
            guard i < line.count else { throw Self.usageError("\(name) needs a value") }
            return line[i]
        }
        scan: while i < line.count {
            let argument = line[i]
            if argument == "--" {
                i += 1
                break scan
            } else if argument.hasPrefix("--") {
                let body = argument.dropFirst(2)
                let name = String(body.prefix { $0 != "=" })
                let inline = body.firstIndex(of: "=").map { String(body[body.index(after: $0)...]) }
                guard let option = Self.options.first(where: { $0.long == name }) else {
                    throw Self.usageError("unknown option '--\(name)'")
                }
                if option.valueName != nil {
                    let given = option.valueIsOptional ? inline ?? "" : try value(for: "--\(name)", inline: inline)
                    try option.apply(&self, given)
                    givenGroups.insert(Self.settingsGroup(ofOption: name, value: given))
                } else if inline != nil {
                    throw Self.usageError("--\(name) takes no value")
                } else {
                    try option.apply(&self, "")
                    givenGroups.insert(Self.settingsGroup(ofOption: name, value: ""))
                }
            } else if argument.hasPrefix("-") && argument.count > 1 {
                var letters = argument.dropFirst()
                while let letter = letters.popFirst() {
                    guard let option = Self.options.first(where: { $0.short == letter }) else {
                        throw Self.usageError("unknown option '-\(letter)'")
                    }
                    if option.valueName != nil {
                        let given = try value(for: "-\(letter)", inline: letters.isEmpty ? nil : String(letters))
                        try option.apply(&self, given)
                        givenGroups.insert(Self.settingsGroup(ofOption: option.long ?? String(letter), value: given))
                        break
                    }
                    try option.apply(&self, "")
                    givenGroups.insert(Self.settingsGroup(ofOption: option.long ?? String(letter), value: ""))
                }
            } else {
                break scan
            }
            i += 1
        }
        var rest = Array(line[min(i, line.count)...])
        if bootLine && !help {
            guard directory == nil && machine == nil else {
                throw Self.usageError("\(verb) takes the image's name, not -D or -M (for a directory: berth -bD DIR)")
            }
            guard !rest.isEmpty else { throw Self.usageError("\(verb) needs the name of an image") }
            machine = rest.removeFirst()
            boot = true
        }
        arguments = rest
        if help { return }
        // A command, or the boot verb, is the command line's choice of what starts.
        if !rest.isEmpty || bootLine { givenGroups.insert("start") }
        try applySettingsFile()
        if asPID2 && boot { throw UsageError("--as-pid2 and --boot exclude each other: with -b the image's init is PID 1") }
        try checkValues()
    }

    /// The values nspawn checks as it reads its command line, checked here likewise: the run
    /// is refused before anything is opened, with one line naming the value.
    private mutating func checkValues() throws {
        if hostname == "" { hostname = nil }  // nspawn: an empty --hostname= means the default
        if let hostname, let problem = RunValueChecks.hostnameProblem(hostname) {
            throw UsageError("--hostname '\(hostname)' is not a valid hostname: \(problem)")
        }
        for setting in setenv {
            let name = setting.prefix { $0 != "=" }
            guard RunValueChecks.isEnvironmentName(name) else {
                throw UsageError("-E '\(setting)' is not NAME=VALUE or NAME: a name is letters, digits and '_', not starting with a digit")
            }
        }
        if let chdir, let problem = RunValueChecks.chdirProblem(chdir) {
            throw UsageError("--chdir '\(chdir)' is refused: \(problem); give the directory in the container from its root")
        }
        let kept = ContainerStage.keptCapabilities(ownNetwork: privateNetwork || network != nil, adding: addedCapabilities,
                                                   dropping: droppedCapabilities)
        if !ambientCapabilities.subtracting(kept).isEmpty {
            let missing = ambientCapabilities.subtracting(kept)
            let names = (0..<Capabilities.names.count).filter { missing.contains(Capabilities(number: $0)) }.map { "CAP_" + Capabilities.names[$0].uppercased() }
            throw UsageError("--ambient-capability names capabilities the container does not keep (\(names.joined(separator: ","))): give them with --capability= too")
        }
        try Self.asUsage {  // parsed again where they are used; a wrong one is a usage error, found here
            _ = try privateUsers.map { try PrivateUsers(parsing: $0) }
            _ = try privateUsersOwnership.map { try PrivateUsersOwnership(parsing: $0) }
            _ = try console.map { try ConsoleMode(parsing: $0) }
            _ = try properties.map { try CgroupLimit(parsing: $0) }
            _ = try networkRequest()
        }
    }

    /// A credential whose id is a file's name (as systemd's) and not given already.
    private mutating func addCredential(_ credential: LaunchSpec.Credential) throws {
        let id = credential.id
        guard !id.isEmpty, id != ".", id != "..", !id.contains("/"), id.utf8.count <= 255 else {
            throw UsageError("credential name '\(id)' is not valid: it is a file's name, without '/'")
        }
        guard !credentials.contains(where: { $0.id == id }) else { throw UsageError("credential '\(id)' is given twice") }
        credentials.append(credential)
    }

    /// A boolean as systemd reads one, or one line that says what it takes.
    private static func boolean(_ text: String, for option: String) throws -> Bool {
        guard let value = RunValueChecks.boolean(text) else { throw UsageError("\(option) takes yes or no, not '\(text)'") }
        return value
    }

    /// A list of capabilities, or one line that says what it takes.
    private static func capabilities(_ list: String, for option: String) throws -> Capabilities {
        guard let set = Capabilities(parsingList: list) else {
            throw UsageError("\(option) takes capabilities by name, as CAP_SYS_TIME,CAP_NET_ADMIN (or numbers, or all), not '\(list)'")
        }
        return set
    }

    /// The network the line asks berth to make, nil for the host's or `--private-network`.
    func networkRequest() throws -> NetworkRequest? {
        let forwards = try ports.map { try PortForward(parsing: $0) }
        guard let network else {
            if !forwards.isEmpty { throw LaunchError("--port needs a network of the machine's own: add -n (--network-veth) or --network-zone=ZONE") }
            return nil
        }
        return NetworkRequest(mode: network, ports: forwards)
    }

    /// What `body` throws as a LaunchError (a value's parser's), as the usage error it is here.
    private static func asUsage(_ body: () throws -> Void) throws {
        do { try body() } catch let error as LaunchError { throw UsageError(error.message) }
    }

    /// An nspawn option berth refuses, saying why: `what` goes on from "--LONG".
    private static func notSupported(short: Character? = nil, long: String, valueName: String, _ what: String) -> Option {
        Option(short: short, long: long, valueName: valueName, help: "Refused, with the reason: not supported by berth.") { _, _ in
            throw UsageError("--\(long) \(what)")
        }
    }

    private static func usageError(_ message: String) -> UsageError {
        UsageError("\(message) (see 'berth run --help')")
    }

    struct Option: Sendable {
        var short: Character?
        var long: String?
        /// What the option takes, for the help; nil for a flag.
        var valueName: String?
        /// Given only as `--name=VALUE`: `--name` alone is the flag (nspawn's optional_argument).
        var valueIsOptional = false
        var help: String
        var apply: @Sendable (inout RunCommandLine, String) throws -> Void
    }

    static let options: [Option] = [
        Option(short: "D", long: "directory", valueName: "DIR", help: "The directory tree to run.") { $0.directory = $1 },
        Option(short: "M", long: "machine", valueName: "NAME", help: "The image in the store to run.") { $0.machine = $1 },
        Option(short: "b", long: "boot", help: "Boot the image's init; the arguments go to it.") { line, _ in line.boot = true },
        Option(short: "x", long: "ephemeral", help: "Run on a throwaway layer over the image, discarded at exit.") { line, _ in
            line.ephemeral = true
        },
        Option(long: "read-only", help: "Mount the tree read-only.") { line, _ in line.readOnly = true },
        Option(long: "template", valueName: "DIR", help: "Make the -D directory, where it does not exist, a copy of DIR first.") {
            $0.template = $1
        },
        Option(long: "volatile", valueName: "MODE", valueIsOptional: true,
               help: "Keep no change: yes (a tmpfs root with the image's /usr), state (a tmpfs /var over the read-only image), overlay (a tmpfs layer), no.") {
            line, value in try Self.asUsage { line.volatile = try VolatileMode(parsing: value.isEmpty ? "yes" : value) }
        },
        Option(short: "E", long: "setenv", valueName: "NAME[=VALUE]", help: "Set NAME=VALUE (NAME alone copies berth's own).") {
            $0.setenv.append($1)
        },
        Option(long: "bind", valueName: "SRC[:DST[:OPTIONS]]",
               help: "Bind SRC from the host (+SRC: from the tree itself), writable; OPTIONS: rbind (the default), norbind, idmap (the default), noidmap; \\: is a colon in a path.") {
            $0.bind.append($1)
        },
        Option(long: "bind-ro", valueName: "SRC[:DST[:OPTIONS]]", help: "Bind SRC from the host, read-only.") { $0.bindReadOnly.append($1) },
        Option(long: "tmpfs", valueName: "PATH[:OPTIONS]", help: "A fresh tmpfs at PATH in the container (mode=0755 unless OPTIONS say).") {
            $0.tmpfs.append($1)
        },
        Option(long: "overlay", valueName: "LOWER[:...]:UPPER[:DST]",
               help: "An overlay of host directories (+PATH: the tree's) at DST, lowest first, writes going to UPPER (empty: a fresh directory).") {
            $0.overlays.append(($1, false))
        },
        Option(long: "overlay-ro", valueName: "LOWER[:...]:TOP[:DST]", help: "A read-only overlay of these directories at DST.") {
            $0.overlays.append(($1, true))
        },
        Option(long: "inaccessible", valueName: "PATH", help: "Cover PATH in the container with an empty entry nobody may open.") {
            $0.inaccessible.append($1)
        },
        Option(long: "set-credential", valueName: "ID:VALUE", help: "A credential ID with VALUE, in $CREDENTIALS_DIRECTORY (/run/host/credentials).") {
            line, value in
            guard let colon = value.firstIndex(of: ":") else { throw UsageError("--set-credential takes ID:VALUE, not '\(value)'") }
            try line.addCredential(LaunchSpec.Credential(id: String(value[..<colon]), value: String(value[value.index(after: colon)...])))
        },
        Option(long: "load-credential", valueName: "ID:PATH", help: "A credential ID read from the host's file PATH.") {
            line, value in
            guard let colon = value.firstIndex(of: ":"), value[value.index(after: colon)...].hasPrefix("/") else {
                throw UsageError("--load-credential takes ID:PATH with the host's absolute PATH, not '\(value)'")
            }
            let path = String(value[value.index(after: colon)...])
            guard access(path, R_OK) == 0 else { throw UsageError("--load-credential cannot read \(path): give a readable file") }
            try line.addCredential(LaunchSpec.Credential(id: String(value[..<colon]), file: FilePath(path)))
        },
        Option(long: "chdir", valueName: "DIR", help: "The working directory in the container.") { $0.chdir = $1 },
        Option(short: "u", long: "user", valueName: "USER", help: "Run as USER from the image's user database.") { $0.user = $1 },
        Option(long: "hostname", valueName: "NAME", help: "The container's hostname (default: the machine name).") {
            $0.hostname = $1
        },
        Option(long: "private-network", help: "Only a loopback interface.") { line, _ in line.privateNetwork = true },
        Option(short: "n", long: "network-veth", help: "A veth link: ve-NAME on the host, host0 inside, addressed and routed by berth, with NAT.") {
            line, _ in line.network = .veth
        },
        Option(long: "network-bridge", valueName: "BR", help: "A veth link whose host end joins the existing bridge BR.") {
            $0.network = .bridge($1)
        },
        Option(long: "network-zone", valueName: "ZONE", help: "A veth link on the bridge vz-ZONE, which berth makes (with a subnet) and removes when empty.") {
            $0.network = .zone($1)
        },
        Option(short: "p", long: "port", valueName: "[tcp|udp:]HOST[:CONTAINER]",
               help: "Forward the host's port (on its addresses, 127.0.0.1 and ::1) to the machine's; needs -n or --network-zone.") {
            $0.ports.append($1)
        },
        Option(short: "U", long: nil, help: "A user namespace with a range of ids picked for the machine (the default).") { line, _ in
            line.privateUsers = "pick"
        },
        Option(long: "private-users", valueName: "no|pick|identity|BASE[:COUNT]",
               help: "The container's user namespace (default pick); no runs it as the host's root, which is not a security boundary.") {
            $0.privateUsers = $1
        },
        Option(long: "private-users-ownership", valueName: "map|auto",
               help: "How the image's owners reach the namespace: idmapped mounts, the image unchanged on disk.") {
            $0.privateUsersOwnership = $1
        },
        Option(short: "a", long: "as-pid2", help: "Run the command as PID 2 under a minimal init that reaps orphans and passes signals on.") {
            line, _ in line.asPID2 = true
        },
        Option(long: "console", valueName: "interactive|read-only|passive|pipe",
               help: "How the container's console reaches berth's streams (default: a pty for those that are terminals).") {
            $0.console = $1
        },
        Option(short: "P", long: "pipe", help: "--console=pipe: the container takes berth's streams (never a terminal).") { line, _ in
            line.console = "pipe"
        },
        Option(long: "property", valueName: "NAME=VALUE",
               help: "A limit on the machine's cgroup: MemoryMax=, MemoryHigh=, CPUQuota=, CPUWeight=, TasksMax=, IOWeight= (as systemd's).") {
            $0.properties.append($1)
        },
        Option(long: "rlimit", valueName: "NAME=SOFT[:HARD]",
               help: "A resource limit, as nspawn's (NOFILE=4096, RLIMIT_NPROC=512:1024, AS=2G, CPU=infinity); the rest are nspawn's defaults.") {
            line, value in try Self.asUsage { try line.processLimits.addLimit(parsing: value) }
        },
        Option(long: "oom-score-adjust", valueName: "N", help: "The container's OOM score adjustment, -1000 to 1000.") {
            line, value in try Self.asUsage { try line.processLimits.setOOMScoreAdjust(parsing: value) }
        },
        Option(long: "cpu-affinity", valueName: "CPUS", help: "The CPUs the container runs on (0-3,6).") {
            line, value in try Self.asUsage { try line.processLimits.setCPUs(parsing: value) }
        },
        Option(long: "uuid", valueName: "UUID", help: "The machine's id (container_uuid; a booted systemd's machine id when the image has none).") {
            line, value in
            guard let uuid = RunValueChecks.uuid(value) else {
                throw UsageError("--uuid '\(value)' is not a machine id: 32 hexadecimal digits, not all zero, dashes allowed as 8-4-4-4-12")
            }
            line.uuid = uuid
        },
        Option(long: "kill-signal", valueName: "SIGNAL",
               help: "What PID 1 is sent when berth is asked to stop (SIGTERM, SIGINT; poweroff of a command too); default SIGRTMIN+3 with -b, else SIGKILL.") {
            line, value in
            guard let number = KillCommand.signalNumber(value) else {
                throw UsageError("--kill-signal takes a signal's name (SIGTERM, RTMIN+3) or number, not '\(value)'")
            }
            line.killSignal = number
        },
        Option(long: "register", valueName: "BOOL", help: "Accepted as no: berth registers machines with no machined ('berth ps' lists them).") {
            _, value in
            if try Self.boolean(value, for: "--register") {
                throw UsageError("--register=yes would register the machine with systemd-machined, which berth does without ('berth ps' lists its machines); leave it out or say --register=no")
            }
        },
        Option(long: "capability", valueName: "CAPS", help: "Keep these capabilities too (CAP_NET_ADMIN,CAP_SYS_TIME, or all), as nspawn's.") {
            $0.addedCapabilities.formUnion(try Self.capabilities($1, for: "--capability"))
        },
        Option(long: "drop-capability", valueName: "CAPS", help: "Drop these capabilities from the container's (or all).") {
            $0.droppedCapabilities.formUnion(try Self.capabilities($1, for: "--drop-capability"))
        },
        Option(long: "ambient-capability", valueName: "CAPS", help: "Give the command these (kept) capabilities as ambient ones, whichever user runs it.") {
            $0.ambientCapabilities.formUnion(try Self.capabilities($1, for: "--ambient-capability"))
        },
        Option(long: "no-new-privileges", valueName: "BOOL", help: "With yes, no program in the container gains privileges (setuid bits, file capabilities).") {
            $0.noNewPrivileges = try Self.boolean($1, for: "--no-new-privileges")
        },
        Option(long: "suppress-sync", valueName: "BOOL", help: "With yes, sync(2), fsync(2) and the like do nothing in the container (fast, not crash safe).") {
            $0.filterChanges.suppressSync = try Self.boolean($1, for: "--suppress-sync")
        },
        Option(long: "system-call-filter", valueName: "LIST",
               help: "Also allow these system calls and @groups, or with a leading ~ refuse them (refusals win), over nspawn's default filter.") {
            line, value in try Self.asUsage { try line.filterChanges.add(list: value) }
        },
        Option(long: "personality", valueName: "ARCH", help: "The execution domain uname reports: x86 (32-bit) or x86-64.") {
            line, value in
            #if arch(x86_64)
            let domains: [String: UInt] = ["x86": 0x0008, "x86-64": 0]  // PER_LINUX32, PER_LINUX
            #elseif arch(arm64)
            let domains: [String: UInt] = ["arm": 0x0008, "arm64": 0]
            #else
            let domains: [String: UInt] = [:]
            #endif
            guard let domain = domains[value] else {
                throw UsageError("--personality takes \(domains.keys.sorted().joined(separator: " or ")) on this machine, not '\(value)'")
            }
            line.personality = domain == 0 ? nil : domain
        },
        Option(long: "resolv-conf", valueName: "MODE",
               help: "The machine's /etc/resolv.conf, nspawn's modes: auto (the default), off, delete, copy-host, replace-host, bind-host (-static, -uplink, -stub too).") {
            guard HostFiles.isResolvConfMode($1) else {
                throw UsageError("--resolv-conf takes auto, off, delete, or copy-, replace- or bind- with host, static, uplink or stub, not '\($1)'")
            }
            $0.resolvConfMode = $1
        },
        Option(long: "timezone", valueName: "MODE", help: "The machine's /etc/localtime from the host's: auto (the default), off, copy, bind, symlink, delete.") {
            guard HostFiles.isTimezoneMode($1) else { throw UsageError("--timezone takes auto, off, copy, bind, symlink or delete, not '\($1)'") }
            $0.timezoneMode = $1
        },
        Option(long: "link-journal", valueName: "MODE",
               help: "Show the machine's journal on the host's /var/log/journal/ID: no, auto (the default), host, try-host, guest, try-guest.") {
            line, value in try Self.asUsage { line.journalLink = try JournalLink(parsing: value) }
        },
        Option(short: "j", long: nil, help: "--link-journal=try-guest.") { line, _ in line.journalLink = JournalLink(trying: .guest) },
        Option(long: "settings", valueName: "yes|no|trusted|override",
               help: "Read NAME.nspawn (/etc/systemd/nspawn, /run/systemd/nspawn, else beside the tree): yes (the default), no, trusted, override.") {
            $0.settingsMode = $1
            _ = try NspawnSettings.Mode(parsing: $1)
        },
        Option(long: "notify-ready", valueName: "BOOL",
               help: "With yes, berth's own manager, and 'berth run -d' or 'start', take the machine as up only once its payload says READY=1 on $NOTIFY_SOCKET.") {
            $0.notifyReady = try Self.boolean($1, for: "--notify-ready")
        },
        Option(long: "keep-unit", help: "Accepted, and nothing to do: berth makes no systemd scope to leave.") { _, _ in },
        Option(short: "i", long: "image", valueName: "FILE", help: "Not supported yet: disk images (berth runs directory trees and its store's images).") {
            _, value in
            throw UsageError("-i/--image runs a disk image ('\(value)'), which berth does not support yet: mount it and give its tree with -D, or import the tree into the store")
        },
        Option(long: "no-pager", help: "Accepted, and nothing to do: berth pages nothing.") { _, _ in },
        Self.notSupported(long: "bind-user", valueName: "USER", "binds a host user's home and user record in, which berth does not support yet: --bind the home, and add the user to the image"),
        Self.notSupported(short: "S", long: "slice", valueName: "SLICE", "places the machine in a systemd slice, which berth, without systemd, has none of: leave it out (--property= sets its limits)"),
        Self.notSupported(long: "oci-bundle", valueName: "PATH", "runs an OCI bundle, which berth does not support yet: give the bundle's root file system with -D"),
        Self.notSupported(long: "pivot-root", valueName: "PATH", "picks the root inside the image, which berth does not support yet: give that directory with -D"),
        Self.notSupported(short: "Z", long: "selinux-context", valueName: "CONTEXT", "sets an SELinux label, which berth does not apply: leave it out"),
        Self.notSupported(short: "L", long: "selinux-apifs-context", valueName: "CONTEXT", "sets an SELinux label, which berth does not apply: leave it out"),
        Self.notSupported(long: "root-hash", valueName: "HASH", "verifies a disk image (-i), which berth does not support yet: mount it and give its tree with -D"),
        Self.notSupported(long: "root-hash-sig", valueName: "SIG", "verifies a disk image (-i), which berth does not support yet: mount it and give its tree with -D"),
        Self.notSupported(long: "verity-data", valueName: "PATH", "verifies a disk image (-i), which berth does not support yet: mount it and give its tree with -D"),
        Self.notSupported(long: "network-interface", valueName: "IF", "moves a host interface into the machine, which berth does not support yet: -n/--network-veth, --network-bridge or --network-zone connect it"),
        Self.notSupported(long: "network-macvlan", valueName: "IF", "gives the machine a MACVLAN interface over a host's, which berth does not support yet: -n/--network-veth, --network-bridge or --network-zone connect it"),
        Self.notSupported(long: "network-ipvlan", valueName: "IF", "gives the machine an IPVLAN interface over a host's, which berth does not support yet: -n/--network-veth, --network-bridge or --network-zone connect it"),
        Self.notSupported(long: "network-veth-extra", valueName: "PAIR", "adds a veth pair of the given names, which berth does not support yet: -n/--network-veth gives one veth pair"),
        Self.notSupported(long: "network-namespace-path", valueName: "PATH", "joins a network namespace of the host's, which berth does not support yet: --private-network, -n or --network-bridge"),
        Option(short: "q", long: "quiet", help: "Print no status messages.") { line, _ in line.quiet = true },
        Option(short: "d", long: "detach", help: "Run in the background; berth returns once it is up ('berth start' is 'berth boot -d').") {
            line, _ in line.detach = true
        },
        Option(long: "timeout", valueName: "SECONDS", help: "How long -d waits for the machine to be up (default 90).") {
            guard let seconds = Double($1), seconds > 0 else { throw UsageError("--timeout takes a number of seconds, not '\($1)'") }
            $0.timeout = seconds
        },
        Option(long: "store", valueName: "DIR", help: "The image store (default: $BERTH_STORE, else /var/lib/machines).") {
            $0.store = $1
        },
        Option(short: "h", long: "help", help: "Show this help.") { line, _ in line.help = true },
    ]

    /// What `berth run --help` prints.
    static var helpText: String {
        var text = """
            USAGE: berth [run] [OPTIONS] (-D DIR | -M NAME) [COMMAND [ARG...]]
                   berth boot [OPTIONS] NAME [ARG...]
                   berth start [OPTIONS] NAME [ARG...]

            Run a command (by default the root user's login shell), or with -b the image's init, in
            a container over a directory tree or an image in the store, as systemd-nspawn does.
            `boot NAME` is `run -b -M NAME`; `start NAME` is `boot -d NAME`, in the background until
            `berth poweroff NAME`. Options end at the first argument that is not one, or at `--`.

            OPTIONS:

            """
        let labels = options.map { option in
            [option.short.map { "-\($0)" + (option.long == nil ? "" : ", ") } ?? "    ", option.long.map { "--\($0)" } ?? "",
             option.valueName.map { option.valueIsOptional ? "[=\($0)]" : " \($0)" } ?? ""].joined()
        }
        let width = labels.map(\.count).max() ?? 0
        for (label, option) in zip(labels, options) {
            text += "  \(label)\(String(repeating: " ", count: width - label.count))  \(option.help)\n"
        }
        return text
    }
}
