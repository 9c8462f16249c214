import BerthSystem
@testable import BerthLaunch
import CSeccomp
import Glibc
import Testing

/// The verdicts of nspawn's default system call filter, for each ABI this machine's kernel
/// takes, read from the tables and from the BPF program itself, run here over struct
/// seccomp_data by a small interpreter of the classic BPF instructions it may use.
@Suite struct SyscallFilterTests {
    static let allow = SCMP_ACT_ALLOW
    static func errno(_ e: Int32) -> UInt32 { cseccomp_action_errno(UInt16(e)) }

    static let program: [sock_filter] = {
        var program = SyscallFilter.Program()
        program.build(SyscallFilter.verdicts(capabilities: .nspawnDefault))
        return program.code
    }()

    /// What the program returns for a call numbered `number` of architecture `arch` with
    /// `arguments`; nil for an instruction it should not hold, or a run off its end.
    static func run(_ code: [sock_filter], number: UInt32, arch: UInt32, arguments: [UInt64] = []) -> UInt32? {
        let args = arguments + [UInt64](repeating: 0, count: 6 - arguments.count)
        func word(_ k: UInt32) -> UInt32? {
            switch k {
            case 0: return number
            case 4: return arch
            case 8, 12: return 0  // the instruction pointer
            case 16..<64 where k % 4 == 0:
                let arg = args[Int(k - 16) / 8]
                return (k - 16) % 8 == 0 ? UInt32(truncatingIfNeeded: arg) : UInt32(truncatingIfNeeded: arg >> 32)
            default: return nil
            }
        }
        var a: UInt32 = 0
        var pc = 0
        for _ in 0...code.count {
            guard code.indices.contains(pc) else { return nil }
            let insn = code[pc]
            pc += 1
            switch Int32(insn.code) {
            case BPF_LD | BPF_W | BPF_ABS:
                guard let value = word(insn.k) else { return nil }
                a = value
            case BPF_JMP | BPF_JEQ | BPF_K: pc += Int(a == insn.k ? insn.jt : insn.jf)
            case BPF_JMP | BPF_JGE | BPF_K: pc += Int(a >= insn.k ? insn.jt : insn.jf)
            case BPF_JMP | BPF_JSET | BPF_K: pc += Int(a & insn.k != 0 ? insn.jt : insn.jf)
            case BPF_JMP | BPF_JA: pc += Int(insn.k)
            case BPF_RET | BPF_K: return insn.k
            default: return nil
            }
        }
        return nil
    }

    static func number(_ name: String, _ abi: SyscallFilter.ABI) -> UInt32? {
        let n = seccomp_syscall_resolve_name_arch(abi.seccompArch, name)
        return n >= 0 ? UInt32(n) : nil
    }

    /// The verdict for `name` on every ABI that has it, from the program; at least one must.
    static func verdicts(_ name: String, code: [sock_filter] = program, arguments: [UInt64] = []) -> [UInt32?] {
        SyscallFilter.abis.compactMap { abi in number(name, abi).map { run(code, number: $0, arch: abi.auditArch, arguments: arguments) } }
    }

    @Test(arguments: ["open_by_handle_at", "keyctl", "add_key", "request_key", "bpf", "kexec_load", "kexec_file_load",
                      "perf_event_open", "fanotify_init", "quotactl", "swapon", "swapoff", "lookup_dcookie", "pkey_alloc",
                      "init_module", "finit_module", "delete_module", "iopl", "ioperm", "clock_settime", "settimeofday",
                      "mlock", "acct", "uselib", "_sysctl", "vm86", "modify_ldt"])
    func refusedWithEPERM(_ name: String) {
        let verdicts = Self.verdicts(name)
        #expect(!verdicts.isEmpty, "no ABI here has \(name)")
        #expect(verdicts.allSatisfy { $0 == Self.errno(EPERM) }, "\(name): \(verdicts)")
    }

    @Test(arguments: ["read", "write", "openat", "open", "close", "mount", "umount2", "clone", "clone3", "execve", "exit_group",
                      "mmap", "futex", "setns", "unshare", "pivot_root", "sethostname", "reboot", "vhangup", "chown", "mknodat",
                      "name_to_handle_at", "io_uring_setup", "seccomp", "process_vm_readv", "socketpair", "connect", "getrandom"])
    func allowed(_ name: String) {
        let verdicts = Self.verdicts(name)
        #expect(!verdicts.isEmpty, "no ABI here has \(name)")
        #expect(verdicts.allSatisfy { $0 == Self.allow }, "\(name): \(verdicts)")
    }

    /// ptrace is allowed only where CAP_SYS_PTRACE stays in the bounding set (nspawn's default
    /// keeps it); reboot likewise with CAP_SYS_BOOT, syslog with CAP_SYSLOG (which the default
    /// drops, as every capability from 32 up). process_vm_readv/writev need no capability: @ipc
    /// holds them.
    @Test(arguments: [("ptrace", Capabilities.sysPtrace), ("syslog", .syslog), ("reboot", .sysBoot),
                      ("vhangup", .sysTTYConfig), ("acct", .sysPacct), ("init_module", .sysModule), ("iopl", .sysRawIO),
                      ("settimeofday", .sysTime), ("mlockall", .ipcLock)])
    func aCallGuardedByACapabilityFollowsIt(_ name: String, _ capability: Capabilities) {
        for capabilities in [Capabilities.nspawnDefault.union(capability), Capabilities.nspawnDefault.subtracting(capability)] {
            var program = SyscallFilter.Program()
            program.build(SyscallFilter.verdicts(capabilities: capabilities))
            let expected = capabilities.contains(capability) ? Self.allow : Self.errno(EPERM)
            let verdicts = Self.verdicts(name, code: program.code)
            #expect(!verdicts.isEmpty && verdicts.allSatisfy { $0 == expected }, "\(name) with \(capabilities.contains(capability) ? "" : "no ")capability: \(verdicts)")
        }
        #expect(Self.verdicts("ptrace").allSatisfy { $0 == Self.allow }, "nspawn's default keeps CAP_SYS_PTRACE")
    }

    @Test func anAuditSocketFailsAsIfThereWereNoAudit() throws {
        let native = try #require(SyscallFilter.abis.first)
        let socket = try #require(Self.number("socket", native))
        let netlink = UInt64(AF_NETLINK), audit: UInt64 = 9
        #expect(Self.run(Self.program, number: socket, arch: native.auditArch, arguments: [netlink, UInt64(SOCK_RAW.rawValue), audit]) == Self.errno(EAFNOSUPPORT))
        for arguments in [[UInt64(AF_INET), UInt64(SOCK_STREAM.rawValue), 0], [netlink, UInt64(SOCK_RAW.rawValue), 0],
                          [UInt64(AF_UNIX), 1, audit], [netlink | 1 << 32, 3, audit], [netlink, 3, audit | 1 << 32]] {
            #expect(Self.run(Self.program, number: socket, arch: native.auditArch, arguments: arguments) == Self.allow, "socket\(arguments)")
        }
    }

    @Test func aCallNoNameGivesOrAnotherArchitectureFailsAsUnknown() throws {
        let native = try #require(SyscallFilter.abis.first)
        for number: UInt32 in [5000, 0x3fff_ffff, 0xffff_ffff] {
            #expect(Self.run(Self.program, number: number, arch: native.auditArch) == Self.errno(ENOSYS))
        }
        let foreign: UInt32 = 0xC000_00F3  // AUDIT_ARCH_RISCV64, which this filter never names
        #expect(!SyscallFilter.abis.contains { $0.auditArch == foreign })
        #expect(Self.run(Self.program, number: 0, arch: foreign) == Self.errno(ENOSYS))
    }

    /// Every number of every ABI: the program's answer is the table's.
    @Test func theProgramSaysWhatTheTablesSay() {
        let sections = SyscallFilter.verdicts(capabilities: .nspawnDefault)
        #expect(Self.program.count <= Int(BPF_MAXINSNS))
        for section in sections {
            let bit = section.abi.x32 ? SyscallFilter.Program.x32Bit : 0
            let numbered = section.table.enumerated().map { ($0.offset, $0.element) }
                + [(section.table.count, nil), (section.table.count + 100, nil)]
            for (index, verdict) in numbered {
                let expected: UInt32
                switch verdict ?? .unknown {
                case .allow, .socketButNotAudit, .allowWithoutFlags: expected = Self.allow
                case .refuse(let error): expected = Self.errno(error)
                }
                let got = Self.run(Self.program, number: UInt32(index) | bit, arch: section.abi.auditArch)
                #expect(got == expected, "call \(index) of ABI \(section.abi.seccompArch)\(section.abi.x32 ? " (x32)" : "")")
            }
        }
    }

    /// `--suppress-sync=yes`: the sync calls return 0 (ERRNO 0, done nothing), open and
    /// openat with O_SYNC or O_DSYNC fail with EINVAL and without them pass, on every ABI.
    @Test func suppressedSyncDoesNothingAndRefusesSynchronousOpens() throws {
        var program = SyscallFilter.Program()
        var changes = SyscallFilterChanges()
        changes.suppressSync = true
        program.build(SyscallFilter.verdicts(capabilities: .nspawnDefault, changes: changes))
        let code = program.code
        for abi in SyscallFilter.abis {
            let bit = abi.x32 ? SyscallFilter.Program.x32Bit : 0
            for name in ["fsync", "fdatasync", "sync", "syncfs", "msync"] {
                guard let n = Self.number(name, abi) else { continue }
                #expect(Self.run(code, number: n | bit, arch: abi.auditArch) == Self.errno(0), "\(name)")
            }
            for (name, position) in [("open", 1), ("openat", 2)] {
                guard let n = Self.number(name, abi) else { continue }
                func flags(_ value: Int32) -> [UInt64] { (0..<position).map { _ in 0 } + [UInt64(UInt32(bitPattern: value))] }
                #expect(Self.run(code, number: n | bit, arch: abi.auditArch, arguments: flags(O_WRONLY | O_SYNC)) == Self.errno(EINVAL))
                #expect(Self.run(code, number: n | bit, arch: abi.auditArch, arguments: flags(O_WRONLY | O_DSYNC)) == Self.errno(EINVAL))
                #expect(Self.run(code, number: n | bit, arch: abi.auditArch, arguments: flags(O_WRONLY | O_CREAT)) == Self.allow)
            }
        }
        // Without it, as nspawn's default: both open.
        guard let openat = Self.number("openat", SyscallFilter.abis[0]) else { return }
        #expect(Self.run(Self.program, number: openat, arch: SyscallFilter.abis[0].auditArch, arguments: [0, 0, UInt64(O_SYNC)]) == Self.allow)
    }

    /// `--system-call-filter=`: added calls and groups are allowed, a `~` list refused with
    /// EPERM even where the default or an added list allows it (the refusal wins, as in nspawn's
    /// filter), on every ABI; groups within groups count; nothing else changes.
    @Test func addedCallsAreAllowedAndRefusedOnesRefusedWhateverTheOrder() throws {
        var changes = SyscallFilterChanges()
        try changes.add(list: "@keyring swapon")
        try changes.add(list: "~sethostname @clock add_key")
        try changes.add(list: "@privileged")  // holds @swap, and sethostname, refused above
        var program = SyscallFilter.Program()
        program.build(SyscallFilter.verdicts(capabilities: .nspawnDefault, changes: changes))
        let code = program.code
        let expected: [(String, UInt32)] = [
            ("keyctl", Self.allow), ("request_key", Self.allow), ("swapon", Self.allow), ("swapoff", Self.allow),
            ("add_key", Self.errno(EPERM)), ("sethostname", Self.errno(EPERM)), ("clock_settime", Self.errno(EPERM)),
            ("read", Self.allow), ("kexec_load", Self.allow), ("bpf", Self.allow), ("perf_event_open", Self.errno(EPERM)),
        ]
        for abi in SyscallFilter.abis {
            let bit = abi.x32 ? SyscallFilter.Program.x32Bit : 0
            for (name, verdict) in expected {
                guard let n = Self.number(name, abi) else { continue }
                #expect(Self.run(code, number: n | bit, arch: abi.auditArch) == verdict, "\(name) on \(abi.seccompArch)")
                if ["keyctl", "swapon", "kexec_load", "bpf"].contains(name) {
                    #expect(Self.run(Self.program, number: n | bit, arch: abi.auditArch) == Self.errno(EPERM), "\(name): refused by default")
                }
            }
        }
        // The changes travel as one line, and come back the same.
        #expect(SyscallFilterChanges(encoded: changes.encoded) == changes)
        #expect(SyscallFilterChanges(encoded: "+../etc") == nil && SyscallFilterChanges(encoded: "bogus") == nil)
    }

    /// A name neither a group nor a call of this machine is refused (nspawn 252 passes over it,
    /// so a typo in a `~` list would leave the call allowed).
    @Test(arguments: ["bogus", "@bogus", "~sethostnme", "add_key ../x", "~@clock @nonsense"])
    func anUnknownNameIsRefused(_ list: String) {
        var changes = SyscallFilterChanges()
        #expect(throws: LaunchError.self) { try changes.add(list: list) }
        #expect(changes.isEmpty)
    }

    /// The calls the allow-list names one by one are calls systemd 252 knows by name: a name
    /// outside its list is a typo, or a call of a later systemd. (Its groups may name calls of
    /// other architectures that the list lacks, such as arm's set_tls.)
    @Test func everyCallTheFilterAllowsByNameIsOneSystemdKnows() {
        var known = Set<String>()
        SyscallFilter.forEachCall(SyscallFilter.knownCalls) { known.insert(String(cString: $0)) }
        #expect(known.count > 400 && known.contains("open_by_handle_at") && known.contains("read"))
        for entry in SyscallFilter.allowList {
            var names: [String] = []
            SyscallFilter.forEachCall(entry.name) { names.append(String(cString: $0)) }
            #expect(!names.isEmpty, "\(entry.name) names no call")
            if !entry.name.hasPrefix("@") { #expect(known.contains(entry.name), "\(entry.name) is allowed but systemd 252 does not know it") }
        }
    }
}
