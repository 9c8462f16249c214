import Glibc
import SystemPackage

/// A network interface, as RTM_GETLINK lists it.
public struct NetworkLink: Equatable, Sendable {
    public var index: Int32
    public var name: String
    public var flags: UInt32
    /// The bridge it is a port of (IFLA_MASTER), 0 for none.
    public var master: Int32
    /// IFLA_INFO_KIND: "veth", "bridge"; nil for a physical or loopback link.
    public var kind: String?
    public var isUp: Bool { flags & Netlink.interfaceUp != 0 }
}

/// An address on an interface (RTM_GETADDR).
public struct InterfaceAddress: Equatable, Sendable {
    public var index: Int32
    public var prefix: IPPrefix
}

/// A route (RTM_GETROUTE): its destination (nil for a default route), gateway and interface.
public struct NetworkRoute: Equatable, Sendable {
    public var destination: IPPrefix?
    public var gateway: IPAddress?
    public var outputIndex: Int32
    public var table: UInt32
}

extension RouteNetlink {
    // MARK: Links

    /// Makes a veth pair `name`/`peer`; the peer is moved straight into the network namespace
    /// open on `peerNamespace` (IFLA_NET_NS_FD), so it never appears in this one.
    public func createVeth(name: String, address: [UInt8]? = nil, peer: String, peerAddress: [UInt8]? = nil,
                           peerNamespace: Descriptor?) throws {
        var m = NetlinkMessage(type: Netlink.newLink, flags: Netlink.create | Netlink.exclusive)
        m.appendLinkHeader()
        m.append(Netlink.linkName, string: name)
        if let address { m.append(Netlink.linkAddress, bytes: address) }
        m.beginNest(Netlink.linkInfo)
        m.append(Netlink.infoKind, string: "veth")
        m.beginNest(Netlink.infoData)
        m.beginNest(Netlink.vethPeer)
        // VETH_INFO_PEER holds an ifinfomsg of its own before the peer's attributes.
        var header = NetlinkMessage(type: 0, flags: 0)
        header.appendLinkHeader()
        m.appendRaw(Array(header.bytes.dropFirst(16)))
        m.append(Netlink.linkName, string: peer)
        if let peerAddress { m.append(Netlink.linkAddress, bytes: peerAddress) }
        if let peerNamespace { m.append(Netlink.linkNamespaceFD, uint32: UInt32(bitPattern: peerNamespace.rawValue)) }
        m.endNest()
        m.endNest()
        m.endNest()
        try perform(m, what: "create veth \(name) (peer \(peer))")
    }

    /// Makes a bridge `name`.
    public func createBridge(name: String) throws {
        var m = NetlinkMessage(type: Netlink.newLink, flags: Netlink.create | Netlink.exclusive)
        m.appendLinkHeader()
        m.append(Netlink.linkName, string: name)
        m.beginNest(Netlink.linkInfo)
        m.append(Netlink.infoKind, string: "bridge")
        m.endNest()
        try perform(m, what: "create bridge \(name)")
    }

    /// Sets or clears IFF_UP on link `name`.
    public func setUp(_ name: String, _ up: Bool = true) throws {
        var m = NetlinkMessage(type: Netlink.setLink, flags: 0)
        m.appendLinkHeader(flags: up ? Netlink.interfaceUp : 0, change: Netlink.interfaceUp)
        m.append(Netlink.linkName, string: name)
        try perform(m, what: "set \(name) \(up ? "up" : "down")")
    }

    /// Makes link `name` a port of bridge `master` (its index).
    public func setMaster(_ name: String, master: Int32) throws {
        var m = NetlinkMessage(type: Netlink.setLink, flags: 0)
        m.appendLinkHeader()
        m.append(Netlink.linkName, string: name)
        m.append(Netlink.linkMaster, uint32: UInt32(bitPattern: master))
        try perform(m, what: "attach \(name) to bridge \(master)")
    }

    /// Deletes link `name` (a veth's peer goes with it); false when there was none.
    @discardableResult
    public func deleteLink(_ name: String) throws -> Bool {
        var m = NetlinkMessage(type: Netlink.deleteLink, flags: 0)
        m.appendLinkHeader()
        m.append(Netlink.linkName, string: name)
        do { try perform(m, what: "delete link \(name)") } catch let error as SystemError where error.errno.rawValue == ENODEV {
            return false
        }
        return true
    }

    public func links() throws -> [NetworkLink] {
        var m = NetlinkMessage(type: Netlink.getLink, flags: Netlink.dump)
        m.appendLinkHeader()
        return try dump(m, what: "list links").compactMap { reply in
            let p = reply.payload
            guard reply.type == Netlink.newLink, p.count >= 16 else { return nil }
            let attributes = NetlinkAttributes(p.dropFirst(16))
            return NetworkLink(index: Int32(bitPattern: Netlink.read32(p, p.startIndex + 4)), name: attributes.string(Netlink.linkName) ?? "",
                               flags: Netlink.read32(p, p.startIndex + 8), master: Int32(bitPattern: attributes.uint32(Netlink.linkMaster) ?? 0),
                               kind: attributes.nested(Netlink.linkInfo)?.string(Netlink.infoKind))
        }
    }

    public func link(named name: String) throws -> NetworkLink? { try links().first { $0.name == name } }

    // MARK: Addresses and routes

    /// Puts `prefix` on link `index` (again, if it is there). `noDAD` skips IPv6 duplicate address
    /// detection: the link is a veth berth just made, and DAD would hold the address for a second.
    public func addAddress(_ prefix: IPPrefix, index: Int32, noDAD: Bool = false) throws {
        var m = NetlinkMessage(type: Netlink.newAddress, flags: Netlink.create | Netlink.replace)
        m.appendAddressHeader(family: prefix.address.family, prefixLength: UInt8(prefix.length), index: index)
        m.append(Netlink.addressLocal, address: prefix.address)
        m.append(Netlink.addressAddress, address: prefix.address)
        if noDAD { m.append(Netlink.addressFlags, uint32: Netlink.addressNoDAD) }
        try perform(m, what: "add address \(prefix) to link \(index)")
    }

    public func addresses() throws -> [InterfaceAddress] {
        var m = NetlinkMessage(type: Netlink.getAddress, flags: Netlink.dump)
        m.appendAddressHeader(family: 0, prefixLength: 0, index: 0)
        return try dump(m, what: "list addresses").compactMap { reply in
            let p = reply.payload
            guard reply.type == Netlink.newAddress, p.count >= 8 else { return nil }
            let attributes = NetlinkAttributes(p.dropFirst(8))
            guard let address = attributes.address(Netlink.addressLocal) ?? attributes.address(Netlink.addressAddress),
                  let prefix = IPPrefix(address: address, length: Int(p[p.startIndex + 1])) else { return nil }
            return InterfaceAddress(index: Int32(bitPattern: Netlink.read32(p, p.startIndex + 4)), prefix: prefix)
        }
    }

    /// A default route (of `gateway`'s family) via `gateway` on link `index`.
    public func addDefaultRoute(via gateway: IPAddress, index: Int32) throws {
        var m = NetlinkMessage(type: Netlink.newRoute, flags: Netlink.create | Netlink.replace)
        m.appendRouteHeader(family: gateway.family)
        m.append(Netlink.routeGateway, address: gateway)
        m.append(Netlink.routeOutput, uint32: UInt32(bitPattern: index))
        try perform(m, what: "add default route via \(gateway)")
    }

    /// Every route of every table, both families.
    public func routes() throws -> [NetworkRoute] {
        var m = NetlinkMessage(type: Netlink.getRoute, flags: Netlink.dump)
        m.appendRouteHeader(family: 0, table: 0, protocol: 0, type: 0)
        return try dump(m, what: "list routes").compactMap { reply in
            let p = reply.payload
            guard reply.type == Netlink.newRoute, p.count >= 12 else { return nil }
            let attributes = NetlinkAttributes(p.dropFirst(12))
            let length = Int(p[p.startIndex + 1])
            let destination = attributes.address(Netlink.routeDestination).flatMap { IPPrefix(address: $0, length: length) }
            return NetworkRoute(destination: destination, gateway: attributes.address(Netlink.routeGateway),
                                outputIndex: Int32(bitPattern: attributes.uint32(Netlink.routeOutput) ?? 0),
                                table: attributes.uint32(Netlink.routeTable) ?? UInt32(p[p.startIndex + 4]))
        }
    }
}
