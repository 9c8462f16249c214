import BerthSystem
import Glibc
import SystemPackage

/// A settings file (`NspawnSettings`) applied to a run line, as nspawn 252 merges one: each key
/// stands for a run option, and belongs to a group of them; a group the command line set keeps
/// the command line's values (with `--settings=override` the file's replace them); a file that
/// is not trusted may not set the privileged keys, which could widen what the container reaches
/// (binds, capabilities, the network, limits, its machine id), and each one it tries is a
/// warning. Debian's nspawn 252 counts `Ephemeral=` among them, and so does berth.
extension RunCommandLine {
    /// What a key stands for.
    enum SettingsTranslation {
        /// `--OPTION=VALUE`.
        case value(String)
        /// A boolean: yes gives `--OPTION`, no nothing.
        case flag(String)
        /// `--OPTION=` with the value's words joined by commas (capability and CPU lists).
        case commaList(String)
        /// One `--OPTION=WORD` for each word (Environment=).
        case each(String)
        /// `--rlimit=NAME=VALUE`.
        case limit(String)
        /// Not something berth does: a warning.
        case unsupported
    }

    struct SettingsKey {
        let translation: SettingsTranslation
        let group: String
        let privileged: Bool
        init(_ translation: SettingsTranslation, group: String, privileged: Bool = false) {
            (self.translation, self.group, self.privileged) = (translation, group, privileged)
        }
    }

    /// systemd.nspawn(5)'s keys in nspawn 252, by section.
    static let settingsKeys: [String: [String: SettingsKey]] = {
        var exec: [String: SettingsKey] = [
            "Boot": SettingsKey(.flag("boot"), group: "start"),
            "ProcessTwo": SettingsKey(.flag("as-pid2"), group: "start"),
            "Environment": SettingsKey(.each("setenv"), group: "environment"),
            "User": SettingsKey(.value("user"), group: "user"),
            "WorkingDirectory": SettingsKey(.value("chdir"), group: "chdir"),
            "Capability": SettingsKey(.commaList("capability"), group: "capability", privileged: true),
            "AmbientCapability": SettingsKey(.commaList("ambient-capability"), group: "capability", privileged: true),
            "DropCapability": SettingsKey(.commaList("drop-capability"), group: "capability"),
            "KillSignal": SettingsKey(.value("kill-signal"), group: "kill-signal"),
            "Personality": SettingsKey(.value("personality"), group: "personality"),
            "MachineID": SettingsKey(.value("uuid"), group: "uuid", privileged: true),
            "PrivateUsers": SettingsKey(.value("private-users"), group: "userns", privileged: true),
            "SystemCallFilter": SettingsKey(.value("system-call-filter"), group: "system-call-filter", privileged: true),
            "Hostname": SettingsKey(.value("hostname"), group: "hostname"),
            "NoNewPrivileges": SettingsKey(.value("no-new-privileges"), group: "no-new-privileges"),
            "OOMScoreAdjust": SettingsKey(.value("oom-score-adjust"), group: "oom-score-adjust", privileged: true),
            "CPUAffinity": SettingsKey(.commaList("cpu-affinity"), group: "cpu-affinity", privileged: true),
            "ResolvConf": SettingsKey(.value("resolv-conf"), group: "resolv-conf"),
            "LinkJournal": SettingsKey(.value("link-journal"), group: "link-journal", privileged: true),
            "Timezone": SettingsKey(.value("timezone"), group: "timezone"),
            "SuppressSync": SettingsKey(.value("suppress-sync"), group: "suppress-sync"),
            "Ephemeral": SettingsKey(.flag("ephemeral"), group: "ephemeral", privileged: true),
            "NotifyReady": SettingsKey(.value("notify-ready"), group: "notify-ready"),
            "PivotRoot": SettingsKey(.unsupported, group: "pivot-root"),
        ]
        for name in ["CPU", "FSIZE", "DATA", "STACK", "CORE", "RSS", "NOFILE", "AS", "NPROC", "MEMLOCK", "LOCKS", "SIGPENDING",
                     "MSGQUEUE", "NICE", "RTPRIO", "RTTIME"] {
            exec["Limit" + name] = SettingsKey(.limit(name), group: "rlimit-" + name, privileged: true)
        }
        let files: [String: SettingsKey] = [
            "ReadOnly": SettingsKey(.flag("read-only"), group: "read-only"),
            "Bind": SettingsKey(.value("bind"), group: "mounts", privileged: true),
            "BindReadOnly": SettingsKey(.value("bind-ro"), group: "mounts", privileged: true),
            "TemporaryFileSystem": SettingsKey(.value("tmpfs"), group: "mounts", privileged: true),
            "Inaccessible": SettingsKey(.value("inaccessible"), group: "mounts", privileged: true),
            "Overlay": SettingsKey(.value("overlay"), group: "mounts", privileged: true),
            "OverlayReadOnly": SettingsKey(.value("overlay-ro"), group: "mounts", privileged: true),
            "PrivateUsersOwnership": SettingsKey(.value("private-users-ownership"), group: "userns", privileged: true),
            "PrivateUsersChown": SettingsKey(.unsupported, group: "userns", privileged: true),
            "Volatile": SettingsKey(.value("volatile"), group: "volatile"),
            "BindUser": SettingsKey(.unsupported, group: "bind-user", privileged: true),
        ]
        let network: [String: SettingsKey] = [
            "Private": SettingsKey(.flag("private-network"), group: "network", privileged: true),
            "VirtualEthernet": SettingsKey(.flag("network-veth"), group: "network", privileged: true),
            "Bridge": SettingsKey(.value("network-bridge"), group: "network", privileged: true),
            "Zone": SettingsKey(.value("network-zone"), group: "network", privileged: true),
            "Port": SettingsKey(.value("port"), group: "port", privileged: true),
            "Interface": SettingsKey(.unsupported, group: "network", privileged: true),
            "MACVLAN": SettingsKey(.unsupported, group: "network", privileged: true),
            "IPVLAN": SettingsKey(.unsupported, group: "network", privileged: true),
            "VirtualEthernetExtra": SettingsKey(.unsupported, group: "network", privileged: true),
        ]
        return ["Exec": exec, "Files": files, "Network": network]
    }()

    /// The group of settings a command-line option (by its long name, or its letter) belongs
    /// to: set on the command line, it masks the file's keys of that group.
    static func settingsGroup(ofOption name: String, value: String) -> String {
        switch name {
        case "boot", "b", "as-pid2", "a": return "start"
        case "setenv", "E": return "environment"
        case "user", "u": return "user"
        case "capability", "drop-capability", "ambient-capability": return "capability"
        case "private-users", "private-users-ownership", "U": return "userns"
        case "bind", "bind-ro", "tmpfs", "inaccessible", "overlay", "overlay-ro": return "mounts"
        case "private-network", "network-veth", "n", "network-bridge", "network-zone": return "network"
        case "port", "p": return "port"
        case "link-journal", "j": return "link-journal"
        case "ephemeral", "x": return "ephemeral"
        case "machine", "M": return "machine"
        case "rlimit":
            var resource = value.prefix { $0 != "=" }.uppercased()
            for prefix in ["RLIMIT_", "LIMIT"] where resource.hasPrefix(prefix) { resource = String(resource.dropFirst(prefix.count)) }
            return "rlimit-" + resource
        default: return name
        }
    }

    /// Finds the settings file for this run (`--settings=`, the machine's name, where its tree
    /// is) and applies it.
    mutating func applySettingsFile() throws {
        let mode = try settingsMode.map { try NspawnSettings.Mode(parsing: $0) } ?? .yes
        var name: String, beside: String?
        if let directory {
            // A directory --template is yet to make is found by its name as given.
            guard let path = Self.absolutePath(directory) else { return }
            name = machine ?? NspawnSettings.machineName(ofDirectory: path)
            let parent = String(path[..<(path.lastIndex(of: "/") ?? path.startIndex)])
            beside = path == "/" ? nil : parent.isEmpty ? "/" : parent
        } else if let machine {
            name = machine
            beside = StoreOptions.path(store)
        } else {
            return
        }
        guard !name.isEmpty, !name.contains("/"),
              let file = try NspawnSettings.find(name: name, beside: beside, mode: mode, warn: Self.warn) else { return }
        try apply(file, override: mode == .override)
    }

    /// `path` without symlinks where it exists; else its parent's real path and its last name
    /// (a directory --template will make); nil when neither is there.
    static func absolutePath(_ path: String) -> String? {
        if let real = realPath(FilePath(path)) { return real.string }
        let trimmed = path.hasSuffix("/") ? String(path.dropLast()) : path
        let slash = trimmed.lastIndex(of: "/")
        let parent = slash.map { trimmed[..<$0].isEmpty ? "/" : String(trimmed[..<$0]) } ?? "."
        let name = slash.map { String(trimmed[trimmed.index(after: $0)...]) } ?? trimmed
        guard !name.isEmpty, let base = realPath(FilePath(parent))?.string else { return nil }
        return (base == "/" ? "" : base) + "/" + name
    }

    private static func warn(_ message: String) {
        _ = "berth: warning: \(message)\n".withCString { write(2, $0, strlen($0)) }
    }

    private mutating func apply(_ file: NspawnSettings, override: Bool) throws {
        var replaced: Set<String> = []
        for setting in file.settings where !setting.key.hasPrefix("X-") && !setting.section.hasPrefix("X-") {
            let place = "\(file.path):\(setting.line)"
            guard let keys = Self.settingsKeys[setting.section] else { continue }  // warned of as it was read
            // Parameters= counts only beside Boot= or ProcessTwo=, as in nspawn.
            if setting.section == "Exec" && setting.key == "Parameters" {
                // The command only beside a Boot= or ProcessTwo= that reads as a boolean.
                let starts = file.settings.contains {
                    $0.section == "Exec" && ($0.key == "Boot" || $0.key == "ProcessTwo") && RunValueChecks.boolean($0.value) != nil
                }
                guard starts, override || !givenGroups.contains("start") else { continue }
                arguments = NspawnSettings.words(setting.value)
                continue
            }
            guard let key = keys[setting.key] else {
                Self.warn("\(place): unknown key \(setting.key) in [\(setting.section)], ignored")
                continue
            }
            guard override || !givenGroups.contains(key.group) else { continue }
            let privileged = key.privileged && !(setting.key == "SystemCallFilter" && setting.value.hasPrefix("~"))
            if privileged && !file.trusted {
                Self.warn("\(place): \(setting.key)= ignored: \(file.path) is not trusted (files in /etc/systemd/nspawn and /run/systemd/nspawn are; --settings=trusted trusts this one)")
                continue
            }
            if override && givenGroups.contains(key.group) && replaced.insert(key.group).inserted { resetSettingsGroup(key.group) }
            do {
                // A value the run would refuse is this key's warning, never the run's end.
                try Self.checkSettingValue(key.translation, setting.value)
                try applySetting(key.translation, setting.value, place: place, key: setting.key)
            } catch let error as UsageError {
                Self.warn("\(place): \(setting.key)=\(setting.value) ignored: \(error.message)")
            } catch {
                Self.warn("\(place): \(setting.key)=\(setting.value) ignored: \(error)")
            }
        }
    }

    /// What the command line checks once it is read (checkValues), checked here key by key.
    private static func checkSettingValue(_ translation: SettingsTranslation, _ value: String) throws {
        switch translation {
        case .value("hostname") where value.isEmpty, .value("chdir") where value.isEmpty:
            break  // the default again (applySetting)
        case .value("hostname"):
            if let problem = RunValueChecks.hostnameProblem(value) { throw UsageError("not a valid hostname: \(problem)") }
        case .value("chdir"):
            if let problem = RunValueChecks.chdirProblem(value) { throw UsageError(problem) }
        case .value("volatile") where value.isEmpty:
            throw UsageError("takes yes, no, state or overlay")
        default: break
        }
    }

    private mutating func applySetting(_ translation: SettingsTranslation, _ value: String, place: String, key: String) throws {
        func option(_ name: String, _ value: String) throws {
            guard let option = Self.options.first(where: { $0.long == name }) else { return }
            try option.apply(&self, value)
        }
        switch translation {
        case .value(let name) where value.isEmpty:
            // An empty value is the default again, as systemd reads one.
            switch name {
            case "user": user = nil
            case "chdir": chdir = nil
            case "hostname": hostname = nil
            default: break
            }
        case .value(let name): try option(name, value)
        case .flag(let name):
            guard let on = RunValueChecks.boolean(value) else { throw UsageError("takes yes or no") }
            if on { try option(name, "") } else if name == "boot" { boot = false } else if name == "read-only" { readOnly = false }
        case .commaList(let name): try option(name, NspawnSettings.words(value).joined(separator: ","))
        case .each(let name):
            for word in NspawnSettings.words(value) {
                // NAME=VALUE only: a bare NAME would copy berth's own environment (the caller's,
                // as root) into the container on a file's word, which nspawn never does.
                guard name != "setenv" || (word.contains("=") && RunValueChecks.isEnvironmentName(word.prefix { $0 != "=" })) else {
                    Self.warn("\(place): '\(word)' in \(key)= ignored: it is not NAME=VALUE")
                    continue
                }
                try option(name, word)
            }
        case .limit(let resource): try option("rlimit", "\(resource)=\(value)")
        case .unsupported: Self.warn("\(place): \(key)= is not supported by berth, ignored")
        }
    }

    /// With `--settings=override`, the command line's values of a group the file sets go.
    private mutating func resetSettingsGroup(_ group: String) {
        switch group {
        case "environment": setenv = []
        case "mounts": (bind, bindReadOnly, tmpfs, inaccessible, overlays) = ([], [], [], [], [])
        case "capability": (addedCapabilities, droppedCapabilities, ambientCapabilities) = (Capabilities(), Capabilities(), Capabilities())
        case "network": (network, privateNetwork) = (nil, false)
        case "port": ports = []
        default: break  // a single value, which the file's replaces
        }
    }
}
