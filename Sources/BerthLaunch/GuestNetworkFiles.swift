import BerthSystem
import Glibc
import SystemPackage

/// The files a machine on a private network needs from the host: its /etc/resolv.conf, and a
/// networkd config for `host0` that agrees with what berth set up.
enum GuestNetworkFiles {
    /// The host's upstream name servers, with its search domains and options. A stub resolver on
    /// the host's loopback (systemd-resolved's 127.0.0.53, a local dnsmasq) is unreachable from a
    /// machine, so where /etc/resolv.conf names one, resolved's list of upstream servers is used.
    static func resolvConf(host: FilePath = "/etc/resolv.conf", resolved: FilePath = "/run/systemd/resolve/resolv.conf") -> String {
        func parse(_ path: FilePath) -> (servers: [IPAddress], other: [String]) {
            let text = (try? Descriptor.open(path, O_RDONLY).readAll(limit: 1 << 16)).map { String(decoding: $0, as: UTF8.self) } ?? ""
            var servers: [IPAddress] = [], other: [String] = []
            for line in text.split(separator: "\n") {
                let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
                guard let first = words.first else { continue }
                if first == "nameserver", words.count >= 2, let address = IPAddress(String(words[1].split(separator: "%")[0])) {
                    servers.append(address)
                } else if ["search", "domain", "options"].contains(String(first)) {
                    other.append(words.joined(separator: " "))
                }
            }
            return (servers, other)
        }
        var chosen = parse(host)
        if chosen.servers.contains(where: \.isLoopback) {
            let upstream = parse(resolved)
            if !upstream.servers.isEmpty { chosen = upstream }
        }
        let servers = chosen.servers.filter { !$0.isLoopback }
        var lines = ["# The host's upstream name servers, written by berth."]
        lines += servers.map { "nameserver \($0)" } + chosen.other
        if servers.isEmpty { lines.append("# The host names no name server a machine can reach.") }
        return lines.joined(separator: "\n") + "\n"
    }

    /// host0's static configuration as networkd writes it, or nil on a user's bridge.
    static func networkd(_ state: MachineNetworkState) -> String? {
        guard let machine4 = state.machine4, let host4 = state.host4 else { return nil }
        var lines = ["# Written by berth: host0 as berth configured it (no DHCP server answers on berth's links).",
                     "[Match]", "Name=host0", "", "[Network]", "Address=\(machine4)", "Gateway=\(host4.address)"]
        if let machine6 = state.machine6, let host6 = state.host6 { lines += ["Address=\(machine6)", "Gateway=\(host6.address)"] }
        // The host's upstream servers, for a guest whose resolv.conf is resolved's stub (nspawn's
        // guests get them by DHCP from the host's networkd, which no one runs here).
        lines += resolvConf().split(separator: "\n").filter { $0.hasPrefix("nameserver ") }.map { "DNS=" + $0.dropFirst("nameserver ".count) }
        lines += ["LinkLocalAddressing=ipv6", "KeepConfiguration=yes"]
        return lines.joined(separator: "\n") + "\n"
    }

    /// Where a guest's networkd finds host0's configuration before systemd's own for containers.
    static let networkdPath: FilePath = "run/systemd/network/10-berth-host0.network"

    /// Writes `config` into the machine's /run (a tmpfs of its own, which nothing in the machine
    /// has run in yet), its directories and file owned by the machine's root, host id `owner`,
    /// so systemd inside goes on to use /run/systemd as its own.
    static func place(networkd config: String, leader: pid_t, owner: UInt32) throws {
        var directory = try Directory(opening: FilePath("/proc/\(leader)/root/run"))
        for name in ["systemd", "network"] as [FilePath] {
            do {
                try directory.makeDirectory(name, mode: 0o755)
                try directory.setOwner(name, uid: owner, gid: owner)
            } catch let error as SystemError where error.errno == .fileExists {}
            directory = try directory.openDirectory(beneath: name)
        }
        let name: FilePath = "10-berth-host0.network"
        let file = try directory.createFile(name, mode: 0o644)
        try file.writeAll(config)
        try directory.setOwner(name, uid: owner, gid: owner)
    }
}
