import Glibc
import SystemPackage

/// nf_tables' netlink numbers berth uses (<linux/netfilter/nfnetlink.h>,
/// <linux/netfilter/nf_tables.h>, <linux/netfilter.h>), repeated here so the Swift side needs no
/// kernel headers. Integers in nf_tables attributes are big-endian; data compared with packets
/// is in the packet's order, and a few kernel values (address types, conntrack status) in the
/// host's.
public enum NFTables {
    static let batchBegin: UInt16 = 0x10, batchEnd: UInt16 = 0x11, subsystem: UInt16 = 10
    static let newTable: UInt16 = 0, getTable: UInt16 = 1, deleteTable: UInt16 = 2
    static let newChain: UInt16 = 3, newRule: UInt16 = 6, getRule: UInt16 = 7, deleteRule: UInt16 = 8
    static let nested: UInt16 = 0x8000

    /// NFPROTO_*: the table's family, and NAT's.
    public static let inet: UInt8 = 1, ipv4: UInt8 = 2, ipv6: UInt8 = 10

    /// NF_INET_* hooks.
    public enum Hook: UInt32, Sendable { case prerouting = 0, input = 1, forward = 2, output = 3, postrouting = 4 }

    /// NFT_REG_*: the verdict register and the first two 16-byte data registers.
    public static let verdictRegister: UInt32 = 0, register1: UInt32 = 1, register2: UInt32 = 2
    /// NFT_META_*.
    public static let metaInputName: UInt32 = 6, metaOutputName: UInt32 = 7, metaFamily: UInt32 = 15, metaTransport: UInt32 = 16
    /// NFT_PAYLOAD_*_HEADER.
    public static let networkHeader: UInt32 = 1, transportHeader: UInt32 = 2
    /// NFTA_FIB_F_DADDR and NFT_FIB_RESULT_ADDRTYPE, and RTN_LOCAL, the address type it gives.
    public static let fibDestination: UInt32 = 1 << 1, fibAddressType: UInt32 = 3, routeLocal: UInt32 = 2
    /// NFT_CT_STATUS, and IPS_DST_NAT in it.
    public static let conntrackStatus: UInt32 = 2, statusDestinationNAT: UInt32 = 1 << 5
    /// NF_NAT_RANGE_PROTO_SPECIFIED.
    public static let natPortGiven: UInt32 = 0x2
}

/// One nf_tables expression of a rule, as nft compiles its rules (`nft --debug=netlink` shows them).
public enum NFTExpression: Equatable, Sendable {
    /// meta KEY => register.
    case meta(key: UInt32, into: UInt32)
    /// payload load LENGTH bytes at BASE + OFFSET => register.
    case payload(base: UInt32, offset: UInt32, length: UInt32, into: UInt32)
    /// cmp eq (or neq) register DATA.
    case compare(register: UInt32, equal: Bool, data: [UInt8])
    /// register = (register & MASK) ^ XOR.
    case bitwise(register: UInt32, mask: [UInt8], xor: [UInt8])
    /// immediate register DATA.
    case immediate(register: UInt32, data: [UInt8])
    /// The rule's verdict: drop, accept, or a jump to a chain.
    case verdict(NFTVerdict)
    /// dnat to the address in `address` and the port in `port` (NFPROTO_IPV4 or _IPV6).
    case destinationNAT(family: UInt8, address: UInt32, port: UInt32?)
    case masquerade
    /// fib RESULT of FLAGS => register.
    case fib(result: UInt32, flags: UInt32, into: UInt32)
    /// ct load KEY => register.
    case conntrack(key: UInt32, into: UInt32)
}

public enum NFTVerdict: Equatable, Sendable {
    case drop, accept
    case jump(String)
}

/// A rule for a chain, with its comment (nft's `comment "..."`, kept as the rule's user data).
public struct NFTRule: Equatable, Sendable {
    public var chain: String
    public var expressions: [NFTExpression]
    public var comment: String?

    public init(chain: String, _ expressions: [NFTExpression], comment: String? = nil) {
        self.chain = chain
        self.expressions = expressions
        self.comment = comment
    }
}

/// A rule as the kernel lists it: its chain, handle and comment.
public struct NFTListedRule: Equatable, Sendable {
    public var chain: String
    public var handle: UInt64
    public var comment: String?
}

/// A netfilter netlink socket (NETLINK_NETFILTER) for nf_tables: changes go in one batch, one
/// transaction the kernel commits whole or not at all, as `nft -f` sends them. Its start is a
/// socket, not an exec of nft, which costs a few milliseconds before it sends anything.
public final class NetfilterNetlink {
    let descriptor: Descriptor
    private var sequence: UInt32 = 0

    public init() throws {
        let fd = try retryingInterrupts("socket(AF_NETLINK, NETLINK_NETFILTER)") {
            socket(AF_NETLINK, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 12)
        }
        descriptor = Descriptor(owning: fd)
    }

    /// Changes to commit in one transaction.
    public struct Batch {
        let family: UInt8
        let table: String
        fileprivate(set) var messages: [NetlinkMessage] = []
        /// What each message does, for the error that names it.
        fileprivate(set) var descriptions: [String] = []

        public init(family: UInt8, table: String) {
            self.family = family
            self.table = table
        }

        public var isEmpty: Bool { messages.isEmpty }

        /// Makes the table, or leaves it as it is when it exists.
        public mutating func addTable() {
            var m = message(NFTables.newTable, flags: Netlink.create)
            m.append(1, string: table)  // NFTA_TABLE_NAME
            append(m, "add table \(table)")
        }

        public mutating func deleteTable() {
            var m = message(NFTables.deleteTable, flags: 0)
            m.append(1, string: table)
            append(m, "delete table \(table)")
        }

        /// Makes a chain: a base chain on `hook` (of `type`, "nat" or "filter", at `priority`, policy
        /// accept), or a regular one for jumps when `hook` is nil.
        public mutating func addChain(_ name: String, hook: (NFTables.Hook, type: String, priority: Int32)? = nil) {
            var m = message(NFTables.newChain, flags: Netlink.create)
            m.append(1, string: table)  // NFTA_CHAIN_TABLE
            m.append(3, string: name)  // NFTA_CHAIN_NAME
            if let hook {
                m.beginNest(4 | NFTables.nested)  // NFTA_CHAIN_HOOK
                m.append(1, bytes: bigEndian(hook.0.rawValue))  // NFTA_HOOK_HOOKNUM
                m.append(2, bytes: bigEndian(UInt32(bitPattern: hook.priority)))  // NFTA_HOOK_PRIORITY
                m.endNest()
                m.append(5, bytes: bigEndian(1))  // NFTA_CHAIN_POLICY: NF_ACCEPT
                m.append(7, string: hook.type)  // NFTA_CHAIN_TYPE
            }
            append(m, "add chain \(table) \(name)")
        }

        /// Appends `rule` to the end of its chain.
        public mutating func addRule(_ rule: NFTRule) {
            var m = message(NFTables.newRule, flags: Netlink.create | 0x800)  // NLM_F_APPEND
            m.append(1, string: table)  // NFTA_RULE_TABLE
            m.append(2, string: rule.chain)  // NFTA_RULE_CHAIN
            m.beginNest(4 | NFTables.nested)  // NFTA_RULE_EXPRESSIONS
            for expression in rule.expressions {
                m.beginNest(1 | NFTables.nested)  // NFTA_LIST_ELEM
                Self.encode(expression, into: &m)
                m.endNest()
            }
            m.endNest()
            if let comment = rule.comment {
                // libnftnl's user data: NFTNL_UDATA_RULE_COMMENT (0), its length, the string and its NUL.
                let text = Array(comment.utf8.prefix(127)) + [0]
                m.append(7, bytes: [0, UInt8(text.count)] + text)  // NFTA_RULE_USERDATA
            }
            append(m, "add rule \(table) \(rule.chain)")
        }

        public mutating func deleteRule(chain: String, handle: UInt64) {
            var m = message(NFTables.deleteRule, flags: 0)
            m.append(1, string: table)
            m.append(2, string: chain)
            m.append(3, bytes: bigEndian64(handle))  // NFTA_RULE_HANDLE
            append(m, "delete rule \(table) \(chain) handle \(handle)")
        }

        private func message(_ type: UInt16, flags: UInt16) -> NetlinkMessage {
            var m = NetlinkMessage(type: NFTables.subsystem << 8 | type, flags: flags | Netlink.ack)
            m.appendRaw([family, 0, 0, 0])  // struct nfgenmsg: family, version 0, resource id 0
            return m
        }

        private mutating func append(_ message: NetlinkMessage, _ description: String) {
            messages.append(message)
            descriptions.append(description)
        }

        private static func encode(_ expression: NFTExpression, into m: inout NetlinkMessage) {
            func name(_ text: String) {
                m.append(1, string: text)  // NFTA_EXPR_NAME
                m.beginNest(2 | NFTables.nested)  // NFTA_EXPR_DATA
            }
            func data(_ type: UInt16, _ bytes: [UInt8]) {
                m.beginNest(type | NFTables.nested)
                m.append(1, bytes: bytes)  // NFTA_DATA_VALUE
                m.endNest()
            }
            switch expression {
            case .meta(let key, let register):
                name("meta")
                m.append(2, bytes: bigEndian(key))  // NFTA_META_KEY
                m.append(1, bytes: bigEndian(register))  // NFTA_META_DREG
            case .payload(let base, let offset, let length, let register):
                name("payload")
                m.append(1, bytes: bigEndian(register))  // NFTA_PAYLOAD_DREG
                m.append(2, bytes: bigEndian(base))  // NFTA_PAYLOAD_BASE
                m.append(3, bytes: bigEndian(offset))  // NFTA_PAYLOAD_OFFSET
                m.append(4, bytes: bigEndian(length))  // NFTA_PAYLOAD_LEN
            case .compare(let register, let equal, let bytes):
                name("cmp")
                m.append(1, bytes: bigEndian(register))  // NFTA_CMP_SREG
                m.append(2, bytes: bigEndian(equal ? 0 : 1))  // NFTA_CMP_OP: NFT_CMP_EQ, NFT_CMP_NEQ
                data(3, bytes)  // NFTA_CMP_DATA
            case .bitwise(let register, let mask, let xor):
                name("bitwise")
                m.append(1, bytes: bigEndian(register))  // NFTA_BITWISE_SREG
                m.append(2, bytes: bigEndian(register))  // NFTA_BITWISE_DREG
                m.append(3, bytes: bigEndian(UInt32(mask.count)))  // NFTA_BITWISE_LEN
                data(4, mask)  // NFTA_BITWISE_MASK
                data(5, xor)  // NFTA_BITWISE_XOR
            case .immediate(let register, let bytes):
                name("immediate")
                m.append(1, bytes: bigEndian(register))  // NFTA_IMMEDIATE_DREG
                data(2, bytes)  // NFTA_IMMEDIATE_DATA
            case .verdict(let verdict):
                name("immediate")
                m.append(1, bytes: bigEndian(NFTables.verdictRegister))
                m.beginNest(2 | NFTables.nested)  // NFTA_IMMEDIATE_DATA
                m.beginNest(2 | NFTables.nested)  // NFTA_DATA_VERDICT
                switch verdict {
                case .drop: m.append(1, bytes: bigEndian(0))  // NFTA_VERDICT_CODE: NF_DROP
                case .accept: m.append(1, bytes: bigEndian(1))  // NF_ACCEPT
                case .jump(let chain):
                    m.append(1, bytes: bigEndian(UInt32(bitPattern: -3)))  // NFT_JUMP
                    m.append(2, string: chain)  // NFTA_VERDICT_CHAIN
                }
                m.endNest()
                m.endNest()
            case .destinationNAT(let family, let address, let port):
                name("nat")
                m.append(1, bytes: bigEndian(1))  // NFTA_NAT_TYPE: NFT_NAT_DNAT
                m.append(2, bytes: bigEndian(UInt32(family)))  // NFTA_NAT_FAMILY
                m.append(3, bytes: bigEndian(address))  // NFTA_NAT_REG_ADDR_MIN
                if let port {
                    m.append(5, bytes: bigEndian(port))  // NFTA_NAT_REG_PROTO_MIN
                    m.append(7, bytes: bigEndian(NFTables.natPortGiven))  // NFTA_NAT_FLAGS
                }
            case .masquerade:
                name("masq")
            case .fib(let result, let flags, let register):
                name("fib")
                m.append(1, bytes: bigEndian(register))  // NFTA_FIB_DREG
                m.append(2, bytes: bigEndian(result))  // NFTA_FIB_RESULT
                m.append(3, bytes: bigEndian(flags))  // NFTA_FIB_FLAGS
            case .conntrack(let key, let register):
                name("ct")
                m.append(1, bytes: bigEndian(register))  // NFTA_CT_DREG
                m.append(2, bytes: bigEndian(key))  // NFTA_CT_KEY
            }
            m.endNest()
        }
    }

    /// Commits `batch`; the first message the kernel refused is the error, and then nothing of
    /// the batch is done.
    public func commit(_ batch: Batch) throws {
        guard !batch.isEmpty else { return }
        var bytes: [UInt8] = []
        func frame(_ type: UInt16) -> [UInt8] {
            var m = NetlinkMessage(type: type, flags: 0)
            m.appendRaw([0, 0, 0, UInt8(NFTables.subsystem)])  // AF_UNSPEC, version 0, res_id htons(NFNL_SUBSYS_NFTABLES)
            sequence &+= 1
            m.finish(sequence: sequence)
            return m.bytes
        }
        bytes += frame(NFTables.batchBegin)
        let begin = sequence
        var sequences: [UInt32: String] = [:]
        for (message, description) in zip(batch.messages, batch.descriptions) {
            var message = message
            sequence &+= 1
            message.finish(sequence: sequence)
            sequences[sequence] = description
            bytes += message.bytes
        }
        bytes += frame(NFTables.batchEnd)
        try bytes.withUnsafeBytes { raw in
            _ = try retryingInterrupts("send(netfilter)") { send(descriptor.rawValue, raw.baseAddress, raw.count, 0) }
        }
        // One acknowledgement or error for every message asked for one.
        var refusal: SystemError?
        try receive { type, number, payload in
            // The whole batch refused (no CAP_NET_ADMIN): its first frame's error, and nothing else.
            if type == Netlink.messageError, number == begin {
                refusal = SystemError("begin an nf_tables transaction", Errno(rawValue: -Int32(bitPattern: Netlink.read32(payload, payload.startIndex))))
                return false
            }
            guard type == Netlink.messageError, let description = sequences.removeValue(forKey: number) else { return !sequences.isEmpty }
            let code = Int32(bitPattern: Netlink.read32(payload, payload.startIndex))
            if code != 0, refusal == nil { refusal = SystemError(description, Errno(rawValue: -code)) }
            return !sequences.isEmpty
        }
        if let refusal { throw refusal }
    }

    /// Whether table `name` of `family` exists.
    public func tableExists(_ name: String, family: UInt8) throws -> Bool {
        var m = NetlinkMessage(type: NFTables.subsystem << 8 | NFTables.getTable, flags: Netlink.ack)
        m.appendRaw([family, 0, 0, 0])
        m.append(1, string: name)
        sequence &+= 1
        let mine = sequence
        m.finish(sequence: mine)
        try m.bytes.withUnsafeBytes { raw in
            _ = try retryingInterrupts("send(netfilter)") { send(descriptor.rawValue, raw.baseAddress, raw.count, 0) }
        }
        var found: Bool?
        try receive { type, number, payload in
            guard number == mine else { return true }
            if type == NFTables.subsystem << 8 | NFTables.newTable {
                found = true
                return true  // its acknowledgement follows
            }
            guard type == Netlink.messageError else { return true }
            let code = Int32(bitPattern: Netlink.read32(payload, payload.startIndex))
            if code == 0 { found = found ?? true } else if -code == ENOENT { found = false } else {
                throw SystemError("list table \(name)", Errno(rawValue: -code))
            }
            return false
        }
        return found ?? false
    }

    /// Every rule of table `name`, with its chain, handle and comment.
    public func rules(ofTable name: String, family: UInt8) throws -> [NFTListedRule] {
        var m = NetlinkMessage(type: NFTables.subsystem << 8 | NFTables.getRule, flags: Netlink.dump)
        m.appendRaw([family, 0, 0, 0])
        m.append(1, string: name)  // NFTA_RULE_TABLE
        sequence &+= 1
        let mine = sequence
        m.finish(sequence: mine)
        try m.bytes.withUnsafeBytes { raw in
            _ = try retryingInterrupts("send(netfilter)") { send(descriptor.rawValue, raw.baseAddress, raw.count, 0) }
        }
        var rules: [NFTListedRule] = []
        try receive { type, number, payload in
            guard number == mine else { return true }
            if type == Netlink.messageDone { return false }
            if type == Netlink.messageError {
                let code = Int32(bitPattern: Netlink.read32(payload, payload.startIndex))
                if code == 0 || -code == ENOENT { return false }
                throw SystemError("list the rules of table \(name)", Errno(rawValue: -code))
            }
            guard type == NFTables.subsystem << 8 | NFTables.newRule, payload.count >= 4 else { return true }
            let attributes = NetlinkAttributes(payload.dropFirst(4))
            guard attributes.string(1) == name, let chain = attributes.string(2), let handle = attributes[3], handle.count == 8 else { return true }
            let value = handle.reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            var comment: String?
            if let data = attributes[7], data.count >= 2, data[data.startIndex] == 0 {
                let text = data.dropFirst(2).prefix(Int(data[data.startIndex + 1])).prefix { $0 != 0 }
                comment = String(decoding: text, as: UTF8.self)
            }
            rules.append(NFTListedRule(chain: chain, handle: value, comment: comment))
            return true
        }
        return rules
    }

    /// Reads messages, handing each (type, sequence number, payload) to `take` until it says stop.
    private func receive(_ take: (UInt16, UInt32, ArraySlice<UInt8>) throws -> Bool) throws {
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = try buffer.withUnsafeMutableBytes { raw in
                try retryingInterrupts("recv(netfilter)") { recv(descriptor.rawValue, raw.baseAddress, raw.count, 0) }
            }
            let datagram = buffer[0..<n]
            var i = datagram.startIndex
            while i + 16 <= datagram.endIndex {
                let length = Int(Netlink.read32(datagram, i))
                guard length >= 16, i + length <= datagram.endIndex else { break }
                let type = Netlink.read16(datagram, i + 4), number = Netlink.read32(datagram, i + 8)
                let payload = datagram[(i + 16)..<(i + length)]
                i += (length + 3) & ~3
                if try !take(type, number, payload) { return }
            }
        }
    }
}

private func bigEndian(_ value: UInt32) -> [UInt8] { withUnsafeBytes(of: value.bigEndian) { Array($0) } }
private func bigEndian64(_ value: UInt64) -> [UInt8] { withUnsafeBytes(of: value.bigEndian) { Array($0) } }
