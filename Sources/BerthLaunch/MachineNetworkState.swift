import BerthSystem
import Glibc
import SystemPackage

/// What berth made for one machine's network, in `/run/berth/network/NAME` (key=value lines),
/// written before anything is made, so whoever finds it after a killed supervisor can undo all
/// of it: the host's end, the zone's bridge when it is left empty, the machine's NAT and ports.
struct MachineNetworkState: Equatable {
    var machine: String
    var mode: NetworkRequest.Mode
    var hostLink: String
    var host4: IPPrefix?, machine4: IPPrefix?, host6: IPPrefix?, machine6: IPPrefix?
    var ports: [PortForward]

    /// The host's link the machine's traffic comes in on: its veth, or its zone's bridge.
    var outerLink: String {
        if case .zone(let zone) = mode { return "vz-" + zone }
        return hostLink
    }

    var zone: String? {
        if case .zone(let zone) = mode { return zone }
        return nil
    }

    static func path(_ machine: String, in settings: NetworkSettings) -> FilePath {
        settings.runtimeDirectory.appending(MachineRecord.entry(machine))
    }

    func write(in settings: NetworkSettings) throws {
        var fields = [("machine", Hex.encode(Array(machine.utf8))), ("link", hostLink)]
        switch mode {
        case .veth: fields.append(("mode", "veth"))
        case .bridge(let name): fields += [("mode", "bridge"), ("bridge", name)]
        case .zone(let zone): fields += [("mode", "zone"), ("zone", zone)]
        }
        for (key, value) in [("host4", host4), ("machine4", machine4), ("host6", host6), ("machine6", machine6)] {
            if let value { fields.append((key, value.description)) }
        }
        fields += ports.map { ("port", $0.description) }
        let final = Self.path(machine, in: settings)
        let temporary = FilePath(final.string + ".new-\(getpid())")
        let file = try Descriptor.open(temporary, O_WRONLY | O_CREAT | O_TRUNC, mode: 0o600)
        try file.writeAll(fields.map { "\($0.0)=\($0.1)\n" }.joined())
        _ = try temporary.withPlatformString { t in
            try final.withPlatformString { f in try retryingInterrupts("rename", path: final.string) { rename(t, f) } }
        }
    }

    static func read(_ path: FilePath) -> MachineNetworkState? {
        guard let bytes = try? Descriptor.open(path, O_RDONLY).readAll(limit: 1 << 16) else { return nil }
        var fields: [String: String] = [:], ports: [PortForward] = []
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
            guard let equals = line.firstIndex(of: "=") else { continue }
            let key = String(line[..<equals]), value = String(line[line.index(after: equals)...])
            if key == "port" {
                let parts = value.split(separator: ":")
                guard parts.count == 3, let host = UInt16(parts[1]), let container = UInt16(parts[2]) else { continue }
                ports.append(PortForward(udp: parts[0] == "udp", host: host, container: container))
            } else {
                fields[key] = value
            }
        }
        guard let name = fields["machine"].flatMap({ Hex.decode($0) }).map({ String(decoding: $0, as: UTF8.self) }),
              let link = fields["link"], InterfaceName.problem(link) == nil else { return nil }
        let mode: NetworkRequest.Mode
        switch fields["mode"] {
        case "veth": mode = .veth
        case "bridge":
            guard let bridge = fields["bridge"], InterfaceName.problem(bridge) == nil else { return nil }
            mode = .bridge(bridge)
        case "zone":
            guard let zone = fields["zone"], InterfaceName.problem("vz-" + zone) == nil else { return nil }
            mode = .zone(zone)
        default: return nil
        }
        return MachineNetworkState(machine: name, mode: mode, hostLink: link, host4: fields["host4"].flatMap(IPPrefix.init),
                                   machine4: fields["machine4"].flatMap(IPPrefix.init), host6: fields["host6"].flatMap(IPPrefix.init),
                                   machine6: fields["machine6"].flatMap(IPPrefix.init), ports: ports)
    }

    /// Every machine's state under `settings`' directory.
    static func all(in settings: NetworkSettings) -> [(path: FilePath, state: MachineNetworkState)] {
        guard let directory = try? Directory(opening: settings.runtimeDirectory), let names = try? directory.entryNames() else { return [] }
        return names.compactMap { entry in
            guard !entry.string.hasPrefix("."), !entry.string.contains(".new-") else { return nil }
            let path = settings.runtimeDirectory.appending(entry.string)
            return read(path).map { (path, $0) }
        }
    }
}
