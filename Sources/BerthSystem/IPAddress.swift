import Glibc

/// An IPv4 or IPv6 address, held as its bytes in network order (4 or 16 of them), as netlink
/// carries it in IFA_ADDRESS and RTA_GATEWAY.
public struct IPAddress: Hashable, Sendable, CustomStringConvertible, Comparable {
    public let bytes: [UInt8]

    public init?(bytes: [UInt8]) {
        guard bytes.count == 4 || bytes.count == 16 else { return nil }
        self.bytes = bytes
    }

    /// Parses dotted IPv4 or textual IPv6 (inet_pton).
    public init?(_ text: String) {
        var buffer = [UInt8](repeating: 0, count: 16)
        if text.contains(":") {
            guard inet_pton(AF_INET6, text, &buffer) == 1 else { return nil }
            bytes = buffer
        } else {
            guard inet_pton(AF_INET, text, &buffer) == 1 else { return nil }
            bytes = Array(buffer.prefix(4))
        }
    }

    /// An IPv4 address from its 32-bit value in host order.
    public init(ipv4 value: UInt32) {
        bytes = [UInt8(value >> 24), UInt8(value >> 16 & 0xff), UInt8(value >> 8 & 0xff), UInt8(value & 0xff)]
    }

    public var isIPv4: Bool { bytes.count == 4 }
    /// AF_INET or AF_INET6.
    public var family: UInt8 { isIPv4 ? UInt8(AF_INET) : UInt8(AF_INET6) }
    public var bitCount: Int { bytes.count * 8 }

    /// The IPv4 address as a number in host order; nil for IPv6.
    public var ipv4Value: UInt32? {
        guard isIPv4 else { return nil }
        return bytes.reduce(0) { $0 << 8 | UInt32($1) }
    }

    /// 127.0.0.0/8 or ::1: a resolver there is the host's own and unreachable from a machine.
    public var isLoopback: Bool { isIPv4 ? bytes[0] == 127 : bytes == [UInt8](repeating: 0, count: 15) + [1] }
    /// fe80::/10.
    public var isLinkLocal: Bool { !isIPv4 && bytes[0] == 0xfe && bytes[1] & 0xc0 == 0x80 }

    public var description: String {
        var buffer = [CChar](repeating: 0, count: 64)
        let family = isIPv4 ? AF_INET : AF_INET6
        guard inet_ntop(family, bytes, &buffer, socklen_t(buffer.count)) != nil else { return "?" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The first `length` bits kept, the rest zero.
    public func masked(to length: Int) -> IPAddress {
        var out = bytes
        for i in out.indices {
            let keep = max(0, min(8, length - i * 8))
            out[i] &= keep == 8 ? 0xff : ~(UInt8(0xff) >> UInt8(keep))
        }
        return IPAddress(bytes: out) ?? self
    }

    /// This address plus `offset`, carried across bytes (the host and machine ends of a subnet).
    public func adding(_ offset: UInt64) -> IPAddress {
        var out = bytes
        var carry = offset
        for i in out.indices.reversed() where carry > 0 {
            let sum = UInt64(out[i]) + (carry & 0xff)
            out[i] = UInt8(sum & 0xff)
            carry = (carry >> 8) + (sum >> 8)
        }
        return IPAddress(bytes: out) ?? self
    }

    public static func < (a: IPAddress, b: IPAddress) -> Bool {
        a.bytes.count != b.bytes.count ? a.bytes.count < b.bytes.count : a.bytes.lexicographicallyPrecedes(b.bytes)
    }
}

/// An address with a prefix length: `10.200.0.1/30`, a subnet `10.200.0.0/16`.
public struct IPPrefix: Hashable, Sendable, CustomStringConvertible {
    public let address: IPAddress
    public let length: Int

    public init?(address: IPAddress, length: Int) {
        guard (0...address.bitCount).contains(length) else { return nil }
        self.address = address
        self.length = length
    }

    /// Parses `ADDRESS/LENGTH` (a bare address is a host prefix).
    public init?(_ text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2, let address = IPAddress(String(parts[0])) else { return nil }
        let length = parts.count == 2 ? Int(parts[1]) : address.bitCount
        guard let length, String(length) == (parts.count == 2 ? String(parts[1]) : String(length)) else { return nil }
        self.init(address: address, length: length)
    }

    /// The network this prefix is in (host bits zero).
    public var network: IPPrefix { IPPrefix(address: address.masked(to: length), length: length) ?? self }

    /// Whether `other` lies in this prefix.
    public func contains(_ other: IPAddress) -> Bool {
        other.bytes.count == address.bytes.count && other.masked(to: length) == address.masked(to: length)
    }

    /// Whether the two prefixes share any address (one contains the other's network).
    public func overlaps(_ other: IPPrefix) -> Bool {
        guard other.address.bytes.count == address.bytes.count else { return false }
        let shorter = min(length, other.length)
        return address.masked(to: shorter) == other.address.masked(to: shorter)
    }

    public var description: String { "\(address)/\(length)" }
}
