/// One rtnetlink request as bytes: the 16-byte nlmsghdr, the family's fixed header
/// (ifinfomsg, ifaddrmsg, rtmsg), then attributes, each 4-aligned, nests holding attributes.
/// Integers are in host order, as the kernel reads them (addresses are network order bytes).
public struct NetlinkMessage {
    public private(set) var bytes: [UInt8]
    private var openNests: [Int] = []

    /// A request of `type` (RTM_*) with `flags` (NLM_F_REQUEST is always added).
    public init(type: UInt16, flags: UInt16) {
        bytes = [UInt8](repeating: 0, count: 16)
        put16(type, at: 4)
        put16(flags | Netlink.request, at: 6)
    }

    /// The sequence number and length are filled in by the socket when it sends.
    mutating func addFlags(_ flags: UInt16) {
        put16((UInt16(bytes[6]) | UInt16(bytes[7]) << 8) | flags, at: 6)
    }

    mutating func finish(sequence: UInt32) {
        put32(UInt32(bytes.count), at: 0)
        put32(sequence, at: 8)
    }

    // MARK: Fixed headers

    /// struct ifinfomsg: family, type, index, flags and the mask of flags to change.
    public mutating func appendLinkHeader(family: UInt8 = 0, index: Int32 = 0, flags: UInt32 = 0, change: UInt32 = 0) {
        bytes += [family, 0, 0, 0]
        append32(UInt32(bitPattern: index))
        append32(flags)
        append32(change)
    }

    /// struct ifaddrmsg.
    public mutating func appendAddressHeader(family: UInt8, prefixLength: UInt8, flags: UInt8 = 0, scope: UInt8 = 0, index: Int32) {
        bytes += [family, prefixLength, flags, scope]
        append32(UInt32(bitPattern: index))
    }

    /// struct rtmsg.
    public mutating func appendRouteHeader(family: UInt8, destinationLength: UInt8 = 0, table: UInt8 = Netlink.mainTable,
                                           protocol: UInt8 = Netlink.protocolStatic, scope: UInt8 = 0, type: UInt8 = Netlink.unicast) {
        bytes += [family, destinationLength, 0, 0, table, `protocol`, scope, type]
        append32(0)
    }

    // MARK: Attributes

    public mutating func append(_ type: UInt16, bytes payload: [UInt8]) {
        let length = 4 + payload.count
        append16(UInt16(length))
        append16(type)
        bytes += payload
        pad()
    }

    /// A NUL-terminated string, as IFLA_IFNAME and IFLA_INFO_KIND are.
    public mutating func append(_ type: UInt16, string: String) { append(type, bytes: Array(string.utf8) + [0]) }

    public mutating func append(_ type: UInt16, uint32 value: UInt32) {
        append(type, bytes: withUnsafeBytes(of: value) { Array($0) })
    }

    public mutating func append(_ type: UInt16, address: IPAddress) { append(type, bytes: address.bytes) }

    /// Opens a nested attribute; what is appended until `endNest` goes inside it.
    public mutating func beginNest(_ type: UInt16) {
        openNests.append(bytes.count)
        append16(0)
        append16(type)
    }

    public mutating func endNest() {
        guard let start = openNests.popLast() else { return }
        put16(UInt16(bytes.count - start), at: start)
    }

    /// Raw bytes inside a nest (VETH_INFO_PEER's payload begins with an ifinfomsg).
    public mutating func appendRaw(_ payload: [UInt8]) { bytes += payload }

    // MARK: Bytes

    private mutating func pad() { while bytes.count % 4 != 0 { bytes.append(0) } }
    private mutating func append16(_ v: UInt16) { bytes += withUnsafeBytes(of: v) { Array($0) } }
    private mutating func append32(_ v: UInt32) { bytes += withUnsafeBytes(of: v) { Array($0) } }
    private mutating func put16(_ v: UInt16, at i: Int) { withUnsafeBytes(of: v) { for k in 0..<2 { bytes[i + k] = $0[k] } } }
    private mutating func put32(_ v: UInt32, at i: Int) { withUnsafeBytes(of: v) { for k in 0..<4 { bytes[i + k] = $0[k] } } }
}

/// Attributes read from a reply: type (with NLA_F_NESTED and NLA_F_NET_BYTEORDER masked off) to payload.
public struct NetlinkAttributes {
    public private(set) var entries: [(type: UInt16, payload: ArraySlice<UInt8>)] = []

    /// Parses the attributes in `bytes` from `offset` on; a malformed tail ends the list.
    public init(_ bytes: ArraySlice<UInt8>) {
        var i = bytes.startIndex
        while i + 4 <= bytes.endIndex {
            let length = Int(Netlink.read16(bytes, i))
            let type = Netlink.read16(bytes, i + 2) & 0x3fff
            guard length >= 4, i + length <= bytes.endIndex else { break }
            entries.append((type, bytes[(i + 4)..<(i + length)]))
            i += (length + 3) & ~3
        }
    }

    public subscript(_ type: UInt16) -> ArraySlice<UInt8>? { entries.first { $0.type == type }?.payload }

    public func string(_ type: UInt16) -> String? {
        self[type].map { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    }

    public func uint32(_ type: UInt16) -> UInt32? {
        guard let p = self[type], p.count >= 4 else { return nil }
        return Netlink.read32(p, p.startIndex)
    }

    public func address(_ type: UInt16) -> IPAddress? { self[type].flatMap { IPAddress(bytes: Array($0)) } }

    public func nested(_ type: UInt16) -> NetlinkAttributes? { self[type].map { NetlinkAttributes($0) } }
}
