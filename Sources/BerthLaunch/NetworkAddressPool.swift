import BerthSystem
import Glibc
import SystemPackage

/// Hands out address slots from the pool and remembers them in a small file (`KEY SLOT` lines,
/// keys in hexadecimal), so a machine or zone keeps its addresses across restarts of itself and
/// of the host. A slot is a /28 of the IPv4 pool and the /64 of the same number below the IPv6
/// /48. A new key starts at the slot its name hashes to and takes the next one that no other
/// key holds and that overlaps no prefix routed on the host; a kept slot the host has since
/// routed elsewhere is given up for a new one. The caller holds the network lock.
struct NetworkAddressPool {
    let settings: NetworkSettings
    static let slotLength = 28

    var slotCount: Int { 1 << (Self.slotLength - settings.pool.length) }

    /// The slot of `key` ("veth NAME", "zone Z"), kept or newly chosen, avoiding `routed`.
    func slot(for key: String, avoiding routed: [IPPrefix]) throws -> Int {
        var table = try read()
        if let kept = table[key], kept < slotCount, !overlapsRoute(kept, routed) { return kept }
        let taken = Set(table.filter { $0.key != key && !$0.key.hasPrefix("member ") }.values)
        let start = Int(SipHash24.hash(Array(key.utf8), key: Self.hashKey) % UInt64(slotCount))
        for step in 0..<slotCount {
            let candidate = (start + step) % slotCount
            if taken.contains(candidate) || overlapsRoute(candidate, routed) { continue }
            table[key] = candidate
            try write(table)
            return candidate
        }
        throw LaunchError("the network pool \(settings.pool) has no free /\(Self.slotLength) left; set a larger one with BERTH_NETWORK_POOL")
    }

    /// A machine's host number (2 to 14) in zone `zone`'s slot, kept across restarts.
    func member(_ machine: String, ofZone zone: String) throws -> Int {
        var table = try read()
        let key = "member \(zone) \(machine)"
        if let kept = table[key] { return kept }
        let taken = Set(table.filter { $0.key.hasPrefix("member \(zone) ") }.values)
        guard let free = (2...14).first(where: { !taken.contains($0) }) else {
            throw LaunchError("network zone '\(zone)' has room for 13 machines; use another zone")
        }
        table[key] = free
        try write(table)
        return free
    }

    /// The /28 of `slot`, and host number `n` in it with the slot's prefix length.
    func ipv4(slot: Int, host n: Int) -> IPPrefix? {
        IPPrefix(address: settings.pool.network.address.adding(UInt64(slot) << 4 + UInt64(n)), length: Self.slotLength)
    }

    func ipv6(slot: Int, host n: Int) -> IPPrefix? {
        IPPrefix(address: settings.pool6.network.address.adding(UInt64(n)).adding64(UInt64(slot)), length: 64)
    }

    private func overlapsRoute(_ slot: Int, _ routed: [IPPrefix]) -> Bool {
        guard let subnet = ipv4(slot: slot, host: 0)?.network else { return true }
        return routed.contains { $0.overlaps(subnet) }
    }

    // MARK: The file

    private func read() throws -> [String: Int] {
        guard let file = try? Descriptor.open(settings.allocations, O_RDONLY) else { return [:] }
        var table: [String: Int] = [:]
        for line in String(decoding: try file.readAll(limit: 1 << 20), as: UTF8.self).split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count == 2, let key = Hex.decode(String(fields[0])), let slot = Int(fields[1]), slot >= 0 else { continue }
            table[String(decoding: key, as: UTF8.self)] = slot
        }
        return table
    }

    private func write(_ table: [String: Int]) throws {
        let parent = settings.allocations.removingLastComponent()
        let made = parent.withPlatformString { mkdir($0, 0o755) }
        if made != 0 && errno != EEXIST { throw SystemError.last("mkdir", path: parent.string) }
        let text = table.sorted { $0.key < $1.key }.map { "\(Hex.encode(Array($0.key.utf8))) \($0.value)\n" }.joined()
        let temporary = FilePath(settings.allocations.string + ".new-\(getpid())")
        let file = try Descriptor.open(temporary, O_WRONLY | O_CREAT | O_TRUNC, mode: 0o644)
        try file.writeAll(text)
        try file.sync()
        _ = try temporary.withPlatformString { t in
            try settings.allocations.withPlatformString { f in try retryingInterrupts("rename", path: settings.allocations.string) { rename(t, f) } }
        }
    }

    /// Any fixed key: it only spreads names over the pool.
    private static let hashKey: [UInt8] = Array("berth-net-pool-1".utf8)
}

extension IPAddress {
    /// Adds `value` to the upper 64 bits of an IPv6 address (the /64 of a slot).
    fileprivate func adding64(_ value: UInt64) -> IPAddress {
        guard !isIPv4 else { return self }
        var high = bytes.prefix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        high &+= value
        let top = (0..<8).map { UInt8(truncatingIfNeeded: high >> (56 - 8 * UInt64($0))) }
        return IPAddress(bytes: top + bytes.suffix(8)) ?? self
    }
}
