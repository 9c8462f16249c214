import Glibc
import SystemPackage

/// Network interface names: what the kernel takes, and the names systemd-nspawn 252 gives a
/// machine's links, so `ve-NAME` is the same link name under berth and under nspawn.
public enum InterfaceName {
    /// IFNAMSIZ less the NUL.
    public static let maxLength = 15

    /// Why `name` can't name an interface, or nil when it can: 1 to 15 bytes of printable ASCII
    /// without '/', ':', '%' or spaces (sysfs paths, `ip` syntax, scoped addresses), not `.`,
    /// `..`, `all` or `default` (the names of /proc/sys/net/*/conf's own entries).
    public static func problem(_ name: String) -> String? {
        let bytes = Array(name.utf8)
        if bytes.isEmpty { return "an interface name can't be empty" }
        if bytes.count > maxLength { return "interface name '\(Printable.escaping(name))' is longer than \(maxLength) bytes" }
        if [".", "..", "all", "default"].contains(name) { return "'\(name)' can't name an interface" }
        if let bad = bytes.first(where: { $0 <= 32 || $0 >= 127 || $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: ":") || $0 == UInt8(ascii: "%") }) {
            return "interface name '\(Printable.escaping(name))' holds '\(Printable.escaping(String(decoding: [bad], as: UTF8.self)))'; use letters, digits, '.', '_' and '-'"
        }
        return nil
    }

    /// nspawn's shorten_ifname with NAMING_NSPAWN_LONG_HASH: a name of 16 bytes or more keeps
    /// its first 11 and ends in 4 URL-safe base64 digits of the SipHash-2-4 of the whole name.
    public static func shortened(_ name: String) -> String {
        let bytes = Array(name.utf8)
        guard bytes.count > maxLength else { return name }
        let h = SipHash24.hash(bytes, key: shortenKey)
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)
        let tail = [h >> 18, h >> 12, h >> 6, h].map { alphabet[Int($0 & 63)] }
        return String(decoding: bytes.prefix(maxLength - 4) + tail, as: UTF8.self)
    }

    /// The host's end of a machine's veth: `ve-NAME`, or `vb-NAME` when it joins a bridge or zone.
    public static func hostEnd(machine: String, bridged: Bool) -> String {
        shortened((bridged ? "vb-" : "ve-") + machine)
    }

    /// nspawn's generate_mac: a stable, locally administered unicast address from the host's
    /// machine id and the machine's name, so a machine's link-local IPv6 address survives restarts.
    public static func macAddress(machine: String, containerSide: Bool) -> [UInt8] {
        let id = hostMachineID()
        let h = SipHash24.hash(id + Array(machine.utf8), key: containerSide ? containerKey : hostKey)
        var mac = withUnsafeBytes(of: h.littleEndian) { Array($0.prefix(6)) }
        mac[0] = (mac[0] & 0xfe) | 0x02
        return mac
    }

    /// /etc/machine-id's 16 bytes; zeros when it is missing (the addresses are then stable per name only).
    static func hostMachineID() -> [UInt8] {
        let text = (try? Descriptor.open("/etc/machine-id", O_RDONLY).readAll(limit: 64)).map { String(decoding: $0, as: UTF8.self) } ?? ""
        let digits = text.filter { !$0.isWhitespace }
        return Hex.decode(digits.lowercased()).flatMap { $0.count == 16 ? $0 : nil } ?? [UInt8](repeating: 0, count: 16)
    }

    // nspawn-network.c's SHORTEN_IFNAME_HASH_KEY, HOST_HASH_KEY and CONTAINER_HASH_KEY.
    static let shortenKey: [UInt8] = [0xe1, 0x90, 0xa4, 0x04, 0xa8, 0xef, 0x4b, 0x51, 0x8c, 0xcc, 0xc3, 0x3a, 0x9f, 0x11, 0xfc, 0xa2]
    static let hostKey: [UInt8] = [0x1a, 0x37, 0x6f, 0xc7, 0x46, 0xec, 0x45, 0x0b, 0xad, 0xa3, 0xd5, 0x31, 0x06, 0x60, 0x5d, 0xb1]
    static let containerKey: [UInt8] = [0xc3, 0xc4, 0xf9, 0x19, 0xb5, 0x57, 0xb2, 0x1c, 0xe6, 0xcf, 0x14, 0x27, 0x03, 0x9c, 0xee, 0xa2]
}

/// SipHash-2-4 (Aumasson and Bernstein), the keyed hash systemd names links and addresses with.
public enum SipHash24 {
    public static func hash(_ message: [UInt8], key: [UInt8]) -> UInt64 {
        func word(_ b: ArraySlice<UInt8>) -> UInt64 { b.reversed().reduce(0) { $0 << 8 | UInt64($1) } }
        let k0 = word(key[0..<8]), k1 = word(key[8..<16])
        var v0 = k0 ^ 0x736f_6d65_7073_6575, v1 = k1 ^ 0x646f_7261_6e64_6f6d
        var v2 = k0 ^ 0x6c79_6765_6e65_7261, v3 = k1 ^ 0x7465_6462_7974_6573
        func rotate(_ x: UInt64, _ b: UInt64) -> UInt64 { x << b | x >> (64 - b) }
        func round() {
            v0 &+= v1; v1 = rotate(v1, 13); v1 ^= v0; v0 = rotate(v0, 32)
            v2 &+= v3; v3 = rotate(v3, 16); v3 ^= v2
            v0 &+= v3; v3 = rotate(v3, 21); v3 ^= v0
            v2 &+= v1; v1 = rotate(v1, 17); v1 ^= v2; v2 = rotate(v2, 32)
        }
        func absorb(_ m: UInt64) {
            v3 ^= m
            round(); round()
            v0 ^= m
        }
        let whole = message.count / 8 * 8
        for i in stride(from: 0, to: whole, by: 8) { absorb(word(message[i..<(i + 8)])) }
        absorb(UInt64(message.count & 0xff) << 56 | word(message[whole...]))
        v2 ^= 0xff
        round(); round(); round(); round()
        return v0 ^ v1 ^ v2 ^ v3
    }
}
