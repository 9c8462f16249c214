import BerthSystem
import CBerth
import Glibc

/// The devices a container may open, enforced by the kernel: systemd-nspawn's set (the pseudo
/// devices, the terminal and console, ptmx and the container's own ptys, /dev/net/tun), every other device
/// refused for any access. Without it, root in a container could mknod a host disk, or find one
/// in the image's tree, and read it. One list, written two ways: a BPF device program on the
/// unified cgroup hierarchy, and the v1 devices controller's rules where that is all there is.
enum DevicePolicy {
    /// Character devices by major and minor (nil: any minor).
    static let allowed: [(major: Int32, minor: Int32?)] = [
        (1, 3), (1, 5), (1, 7), (1, 8), (1, 9),  // null, zero, full, random, urandom
        (5, 0), (5, 1), (5, 2),                  // tty, console, ptmx
        (10, 200),                               // net/tun
        (136, nil),                              // the ptys
    ]

    /// The v1 devices controller's rules for `devices.allow`.
    static var legacyRules: [String] { allowed.map { "c \($0.major):\($0.minor.map(String.init) ?? "*") rwm" } + ["c 0:0 m", "b 0:0 m"] }

    /// Makes the program the one attached to the cgroup `cgroup` is open on (berth's parent of
    /// every machine's), with BPF_F_ALLOW_MULTI, so a booted systemd can attach its own below;
    /// each must allow a device. One an earlier berth attached stays when it is this very
    /// program, and otherwise gives way to it, so a new policy reaches a host at once.
    static func attach(to cgroup: Descriptor) throws {
        let code = program()
        let loaded = code.withUnsafeBytes { cberth_bpf_load_device_program($0.baseAddress, UInt32(code.count)) }
        guard loaded >= 0 else { throw SystemError.last("bpf(BPF_PROG_LOAD)") }
        let program = Descriptor(owning: loaded)
        _ = try retryingInterrupts("bpf(BPF_PROG_ATTACH)") { cberth_bpf_settle_device_program(cgroup.rawValue, program.rawValue) }
    }

    /// The program (BPF_PROG_TYPE_CGROUP_DEVICE): it compares the device's type, major and minor
    /// with each rule and returns 1 (allow) on a match, 0 (deny) otherwise. Its context is struct
    /// bpf_cgroup_dev_ctx: access_type (the device type in the low 16 bits, the access in the
    /// high ones), major, minor, 32 bits each.
    static func program() -> [UInt64] {
        var code = [
            load(.r2, offset: 0),               // r2 = access_type
            instruction(aluAndImmediate, .r2, immediate: 0xffff),  // r2 &= 0xffff: the type
            load(.r3, offset: 4),               // r3 = major
            load(.r4, offset: 8),               // r4 = minor
            load(.r5, offset: 0),
            instruction(shiftRightImmediate, .r5, immediate: 16),  // r5 = the access
        ]
        // The placeholder nodes, 0:0 of either type, may be made (not opened): systemd's
        // "inaccessible" entries, which /run/host holds and systemd inside binds over what a
        // unit may not reach. No driver has the number: such a node opens nothing.
        code += [instruction(jumpIfNotEqual, .r5, offset: 4, immediate: mknodAccess), instruction(jumpIfNotEqual, .r3, offset: 3),
                 instruction(jumpIfNotEqual, .r4, offset: 2), instruction(moveImmediate, .r0, immediate: 1), instruction(exit, .r0)]
        for rule in allowed {
            // A mismatch jumps past the rest of this rule: its other tests, then "r0 = 1; exit".
            let tests = rule.minor == nil ? 2 : 3
            code.append(instruction(jumpIfNotEqual, .r2, offset: Int16(tests + 1), immediate: characterDevice))
            code.append(instruction(jumpIfNotEqual, .r3, offset: Int16(tests), immediate: rule.major))
            if let minor = rule.minor { code.append(instruction(jumpIfNotEqual, .r4, offset: 2, immediate: minor)) }
            code += [instruction(moveImmediate, .r0, immediate: 1), instruction(exit, .r0)]
        }
        return code + [instruction(moveImmediate, .r0, immediate: 0), instruction(exit, .r0)]
    }

    // MARK: eBPF, as far as this program needs it (<linux/bpf.h>, <linux/bpf_common.h>)

    private enum Register: UInt8 { case r0, r1, r2, r3, r4, r5 }

    private static let loadWordFromMemory: UInt8 = 0x61  // BPF_LDX | BPF_W | BPF_MEM
    private static let aluAndImmediate: UInt8 = 0x54     // BPF_ALU | BPF_AND | BPF_K
    private static let jumpIfNotEqual: UInt8 = 0x55      // BPF_JMP | BPF_JNE | BPF_K
    private static let shiftRightImmediate: UInt8 = 0x74  // BPF_ALU | BPF_RSH | BPF_K
    private static let mknodAccess: Int32 = 1             // BPF_DEVCG_ACC_MKNOD, alone
    private static let moveImmediate: UInt8 = 0xb7       // BPF_ALU64 | BPF_MOV | BPF_K
    private static let exit: UInt8 = 0x95                // BPF_JMP | BPF_EXIT
    private static let characterDevice: Int32 = 2        // BPF_DEVCG_DEV_CHAR

    /// One struct bpf_insn, as the little-endian machine lays it out: code, then the destination
    /// register in the low nibble and the source in the high one, a 16-bit offset, a 32-bit
    /// immediate.
    private static func instruction(_ code: UInt8, _ destination: Register, source: Register = .r0,
                                    offset: Int16 = 0, immediate: Int32 = 0) -> UInt64 {
        UInt64(code) | UInt64(source.rawValue << 4 | destination.rawValue) << 8
            | UInt64(UInt16(bitPattern: offset)) << 16 | UInt64(UInt32(bitPattern: immediate)) << 32
    }

    /// `destination = *(u32 *)(r1 + offset)`: a field of the context.
    private static func load(_ destination: Register, offset: Int16) -> UInt64 {
        instruction(loadWordFromMemory, destination, source: .r1, offset: offset)
    }
}
