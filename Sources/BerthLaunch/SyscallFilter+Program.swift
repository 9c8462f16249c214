import BerthSystem
import CSeccomp
import Glibc
import SystemPackage

extension SyscallFilter {
    /// Loads the filter into this process, for it and everything it execs. A process with
    /// CAP_SYS_ADMIN may do so without PR_SET_NO_NEW_PRIVS, which the container must not get
    /// (its setuid programs must work), so this runs before any change of user.
    ///
    /// libseccomp gives each ABI's numbers for the names; the BPF program is written here.
    /// libseccomp's own compiler took 40 to 70 ms for this list on three ABIs (it snapshots its
    /// whole rule database at each rule), ten times a container's start; this takes 0.5 ms,
    /// the kernel's load of the 841 instructions included.
    static func install(capabilities: Capabilities, changes: SyscallFilterChanges) throws {
        try install(program(capabilities: capabilities, changes: changes))
    }

    /// The filter's program for a container that keeps `capabilities`, with the run's `changes`.
    static func program(capabilities: Capabilities, changes: SyscallFilterChanges = SyscallFilterChanges()) -> [sock_filter] {
        var program = Program()
        program.build(verdicts(capabilities: capabilities, changes: changes))
        return program.code
    }

    /// Loads `code`, a program `program(capabilities:)` made.
    static func install(_ code: [sock_filter]) throws {
        guard !code.isEmpty, code.count <= Int(BPF_MAXINSNS) else {
            throw LaunchError("cannot install the system call filter: \(code.count) instructions is not a program")
        }
        let rc = code.withUnsafeBufferPointer { cseccomp_load_program($0.baseAddress, UInt16($0.count)) }
        if rc != 0 { throw LaunchError("cannot install the system call filter: \(Errno(rawValue: errno))") }
    }

    /// What the filter does with one call.
    enum Verdict: Hashable {
        case allow, refuse(Int32)
        /// socket(2): allowed, but an audit socket fails with EAFNOSUPPORT.
        case socketButNotAudit
        /// Allowed, but EINVAL when the flags in argument `argument` hold any bit of `flags`.
        case allowWithoutFlags(argument: UInt32, flags: UInt32)

        static let unknown = Verdict.refuse(ENOSYS)
    }

    /// One ABI whose calls the kernel takes: libseccomp's name for it, the architecture the
    /// kernel reports its calls with, and for x32 the bit its numbers carry.
    struct ABI {
        let seccompArch: UInt32
        let auditArch: UInt32
        let x32: Bool
    }

    /// On x86-64 also i386's (int 0x80, sysenter) and x32's; on arm64 also 32-bit arm's. Each
    /// gets the same rules by name, so none is a way around them.
    static var abis: [ABI] {
        #if arch(x86_64)
        [ABI(seccompArch: cseccomp_arch_x86_64(), auditArch: cseccomp_arch_x86_64(), x32: false),
         ABI(seccompArch: cseccomp_arch_x32(), auditArch: cseccomp_arch_x86_64(), x32: true),
         ABI(seccompArch: cseccomp_arch_x86(), auditArch: cseccomp_arch_x86(), x32: false)]
        #elseif arch(arm64)
        [ABI(seccompArch: cseccomp_arch_aarch64(), auditArch: cseccomp_arch_aarch64(), x32: false),
         ABI(seccompArch: cseccomp_arch_arm(), auditArch: cseccomp_arch_arm(), x32: false)]
        #else
        [ABI(seccompArch: seccomp_arch_native(), auditArch: seccomp_arch_native(), x32: false)]
        #endif
    }

    /// Each ABI's verdicts, indexed by call number (x32's without its bit): the allowed calls
    /// first, then EPERM for every other known call. Of `changes`, the refused calls come before
    /// anything (nspawn takes them out of every allow list); with `suppressSync` (nspawn's
    /// `--suppress-sync=yes`) the @sync calls succeed doing nothing and open(2) and openat(2)
    /// with O_SYNC or O_DSYNC fail with EINVAL, as nspawn's filter makes them; the calls added
    /// are allowed whatever the container's capabilities, as nspawn allows them. A name the ABI lacks, or libseccomp does
    /// not know, is skipped; a number no name gave is nil, `Verdict.unknown`. Names go to
    /// libseccomp straight from the list's bytes: making Swift strings and sets of them took
    /// longer than the rest of the work together.
    static func verdicts(capabilities: Capabilities, changes: SyscallFilterChanges = SyscallFilterChanges()) -> [(abi: ABI, table: [Verdict?])] {
        var sections = abis.map { (abi: $0, table: [Verdict?](repeating: nil, count: 512)) }
        func give(_ verdict: Verdict) -> (UnsafePointer<CChar>) -> Void {
            { name in
                for i in sections.indices {
                    let number = seccomp_syscall_resolve_name_arch(sections[i].abi.seccompArch, name)
                    guard number >= 0 else { continue }
                    let index = Int(UInt32(number) & ~Program.x32Bit)
                    if index >= sections[i].table.count {
                        sections[i].table += [Verdict?](repeating: nil, count: index + 1 - sections[i].table.count)
                    }
                    if sections[i].table[index] == nil { sections[i].table[index] = verdict }
                }
            }
        }
        // The first verdict a call gets stands.
        for name in changes.denied { forEachCall(name, give(.refuse(EPERM))) }
        if changes.suppressSync {
            forEachCall("@sync", give(.refuse(0)))
            forEachCall("open", give(.allowWithoutFlags(argument: 1, flags: UInt32(O_DSYNC))))  // O_SYNC holds O_DSYNC's bit
            forEachCall("openat", give(.allowWithoutFlags(argument: 2, flags: UInt32(O_DSYNC))))
        }
        for entry in allowList {
            if let capability = entry.capability, !capabilities.contains(capability) { continue }
            forEachCall(entry.name, give(.allow))
        }
        for name in changes.allowed { forEachCall(name, give(.allow)) }
        forEachCall(knownCalls, give(.refuse(EPERM)))
        forEachCall("@obsolete", give(.refuse(EPERM)))
        for i in sections.indices {
            // Where sockets can also be made through socketcall(2) (i386), their arguments cannot
            // be told reliably; libseccomp refuses the rule there and nspawn goes without it.
            let arch = sections[i].abi.seccompArch
            let socket = seccomp_syscall_resolve_name_arch(arch, "socket")
            guard socket >= 0, seccomp_syscall_resolve_name_arch(arch, "socketcall") < 0 else { continue }
            let index = Int(UInt32(socket) & ~Program.x32Bit)
            if sections[i].table[index] == .allow { sections[i].table[index] = .socketButNotAudit }
        }
        return sections
    }
}

extension SyscallFilter {
    /// A classic BPF program over the kernel's struct seccomp_data: the call's number at offset
    /// 0, the architecture at 4, the arguments from 16, eight bytes each, low half first.
    struct Program {
        private(set) var code: [sock_filter] = []

        private static let load = UInt16(BPF_LD | BPF_W | BPF_ABS), ret = UInt16(BPF_RET | BPF_K)
        private static let jeq = UInt16(BPF_JMP | BPF_JEQ | BPF_K), jge = UInt16(BPF_JMP | BPF_JGE | BPF_K)
        private static let ja = UInt16(BPF_JMP | BPF_JA), jset = UInt16(BPF_JMP | BPF_JSET | BPF_K)
        static let x32Bit: UInt32 = 0x4000_0000

        /// Dispatches on the architecture, then searches each ABI's numbers. A call of any other
        /// architecture gets ENOSYS, as a call this kernel does not have.
        mutating func build(_ sections: [(abi: ABI, table: [Verdict?])]) {
            var arches: [UInt32] = []
            for section in sections where !arches.contains(section.abi.auditArch) { arches.append(section.abi.auditArch) }
            emit(Self.load, k: 4)
            let entries = arches.map { jump(if: Self.jeq, $0) }
            leaf(.unknown)
            for (arch, entry) in zip(arches, entries) {
                patch(entry)
                emit(Self.load, k: 0)
                let native = sections.first { $0.abi.auditArch == arch && !$0.abi.x32 }?.table ?? []
                if let x32 = sections.first(where: { $0.abi.auditArch == arch && $0.abi.x32 })?.table {
                    // x32's numbers are x86-64's with bit 30 set.
                    let toX32 = jump(if: Self.jge, Self.x32Bit)
                    search(Self.ranges(native))
                    patch(toX32)
                    search(Self.ranges(x32, from: Self.x32Bit))
                } else {
                    search(Self.ranges(native))
                }
            }
        }

        /// The numbers from 0 up as runs of one verdict: (first number, verdict), each run up to
        /// the next one's first number; `table[i]` is the verdict for `base + i`.
        static func ranges(_ table: [Verdict?], from base: UInt32 = 0) -> [(start: UInt32, verdict: Verdict)] {
            var ranges: [(start: UInt32, verdict: Verdict)] = base > 0 ? [(0, .unknown)] : []
            for (index, verdict) in table.enumerated() where ranges.last?.verdict != verdict ?? .unknown {
                ranges.append((base + UInt32(index), verdict ?? .unknown))
            }
            if ranges.last?.verdict != .unknown { ranges.append((base + UInt32(table.count), .unknown)) }
            return ranges
        }

        /// A binary search over the runs, the call's number in the accumulator.
        private mutating func search(_ ranges: [(start: UInt32, verdict: Verdict)]) {
            func node(_ low: Int, _ high: Int) {
                if low == high { return leaf(ranges[low].verdict) }
                let middle = (low + high + 1) / 2
                let upper = jump(if: Self.jge, ranges[middle].start)
                node(low, middle - 1)
                patch(upper)
                node(middle, high)
            }
            node(0, ranges.count - 1)
        }

        private mutating func leaf(_ verdict: Verdict) {
            switch verdict {
            case .allow: emit(Self.ret, k: SCMP_ACT_ALLOW)
            case .refuse(let error): emit(Self.ret, k: cseccomp_action_errno(UInt16(error)))
            case .socketButNotAudit:
                // socket(AF_NETLINK, *, NETLINK_AUDIT), both compared as 64-bit values as
                // nspawn's rule compares them; any other socket goes through (to offset +9).
                let netlinkAudit: UInt32 = 9 // <linux/netlink.h>
                emit(Self.load, k: 16); emit(Self.jeq, jf: 7, k: UInt32(AF_NETLINK))
                emit(Self.load, k: 20); emit(Self.jeq, jf: 5, k: 0)
                emit(Self.load, k: 32); emit(Self.jeq, jf: 3, k: netlinkAudit)
                emit(Self.load, k: 36); emit(Self.jeq, jf: 1, k: 0)
                emit(Self.ret, k: cseccomp_action_errno(UInt16(EAFNOSUPPORT)))
                emit(Self.ret, k: SCMP_ACT_ALLOW)
            case .allowWithoutFlags(let argument, let flags):
                // The flags' low half (open's flags are an int): any bit of them is refused.
                emit(Self.load, k: 16 + 8 * argument)
                emit(Self.jset, jf: 1, k: flags)
                emit(Self.ret, k: cseccomp_action_errno(UInt16(EINVAL)))
                emit(Self.ret, k: SCMP_ACT_ALLOW)
            }
        }

        /// `if A <op> k` falls into the following code when false; when true it takes an
        /// unconditional jump, set by `patch` (conditional jumps reach only 255 ahead).
        private mutating func jump(if op: UInt16, _ k: UInt32) -> Int {
            emit(op, jf: 1, k: k)
            emit(Self.ja, k: 0)
            return code.count - 1
        }

        /// Points the jump at `index` to the next instruction emitted.
        private mutating func patch(_ index: Int) {
            code[index].k = UInt32(code.count - index - 1)
        }

        private mutating func emit(_ op: UInt16, jf: UInt8 = 0, k: UInt32) {
            code.append(sock_filter(code: op, jt: 0, jf: jf, k: k))
        }
    }
}
