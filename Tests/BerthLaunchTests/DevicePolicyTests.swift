@testable import BerthLaunch
import Testing

/// nspawn's device allow-list, as the BPF device program the kernel runs and as the v1 devices
/// controller's rules. The program is run here by a small interpreter of the few eBPF
/// instructions it may use: an instruction outside them fails the test.
@Suite struct DevicePolicyTests {
    static let block: UInt32 = 1, character: UInt32 = 2  // BPF_DEVCG_DEV_*
    static let mknod: UInt32 = 1, read: UInt32 = 2, write: UInt32 = 4  // BPF_DEVCG_ACC_*

    /// Runs the program over struct bpf_cgroup_dev_ctx; nil when it does something else than
    /// load the context, mask, compare, set r0 and exit, or runs off its end.
    static func run(_ program: [UInt64], type: UInt32, access: UInt32, major: UInt32, minor: UInt32) -> UInt64? {
        let context = [access << 16 | type, major, minor]
        var r = [UInt64](repeating: 0, count: 11)
        var pc = 0
        for _ in 0..<program.count + 1 {
            guard program.indices.contains(pc) else { return nil }
            let insn = program[pc]
            let code = UInt8(insn & 0xff), dst = Int((insn >> 8) & 0xf), src = Int((insn >> 12) & 0xf)
            let offset = Int(Int16(bitPattern: UInt16((insn >> 16) & 0xffff)))
            let imm = Int32(bitPattern: UInt32(insn >> 32))
            pc += 1
            switch code {
            case 0x61:  // ldx w [src + off]: only the context, r1, at a field's offset
                guard src == 1, offset >= 0, offset % 4 == 0, offset / 4 < context.count else { return nil }
                r[dst] = UInt64(context[offset / 4])
            case 0x74: r[dst] = UInt64(UInt32(truncatingIfNeeded: r[dst]) >> UInt32(bitPattern: imm))
            case 0x54: r[dst] = UInt64(UInt32(truncatingIfNeeded: r[dst]) & UInt32(bitPattern: imm))
            case 0x55: if r[dst] != UInt64(bitPattern: Int64(imm)) { pc += offset }
            case 0xb7: r[dst] = UInt64(bitPattern: Int64(imm))
            case 0x95: return dst == 0 ? r[0] : nil
            default: return nil
            }
        }
        return nil
    }

    @Test func theProgramHasOneTestPerFieldOfEachRuleAndEndsInDenial() throws {
        let program = DevicePolicy.program()
        // Five loads, the mask and the shift, the placeholders' rule (three tests, "r0 = 1;
        // exit"), each rule's tests with "r0 = 1; exit", then "r0 = 0; exit": 62 for nspawn's
        // ten rules, one of them (the ptys) for any minor.
        let expected = 6 + 5 + DevicePolicy.allowed.reduce(0) { $0 + ($1.minor == nil ? 4 : 5) } + 2
        #expect(DevicePolicy.allowed.count == 10)
        #expect(program.count == expected)
        #expect(program.count == 62)
        #expect(program.suffix(2) == [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095])  // r0 = 0; exit
        for (index, insn) in program.enumerated() where insn & 0xff == 0x55 {
            let offset = Int(Int16(bitPattern: UInt16((insn >> 16) & 0xffff)))
            let target = index + 1 + offset
            #expect(offset > 0 && program.indices.contains(target), "the jump at \(index) lands at \(target) of \(program.count)")
            // A mismatch lands on the next rule's first test, or on the denial.
            #expect(program[target] & 0xff == 0x55 || target == program.count - 2, "the jump at \(index) lands mid-rule")
        }
    }

    @Test(arguments: [(UInt32(1), UInt32(3)), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 1), (5, 2), (10, 200),
                      (136, 0), (136, 1), (136, 4095), (136, 1_048_575)])
    func theListsDevicesAreAllowedForEveryAccess(_ major: UInt32, _ minor: UInt32) {
        let program = DevicePolicy.program()
        for access in [Self.read, Self.write, Self.mknod, Self.read | Self.write, Self.read | Self.write | Self.mknod] {
            #expect(Self.run(program, type: Self.character, access: access, major: major, minor: minor) == 1)
        }
    }

    @Test(arguments: [
        (DevicePolicyTests.character, UInt32(1), UInt32(1)),  // /dev/mem
        (DevicePolicyTests.character, 1, 2), (DevicePolicyTests.character, 1, 4), (DevicePolicyTests.character, 1, 11),  // kmem, port, kmsg
        (DevicePolicyTests.character, 4, 1), (DevicePolicyTests.character, 5, 3), (DevicePolicyTests.character, 10, 201),
        (DevicePolicyTests.character, 137, 0), (DevicePolicyTests.character, 135, 0), (DevicePolicyTests.character, 0, 1),
        (DevicePolicyTests.character, 200, 3), (DevicePolicyTests.character, 3, 1), (DevicePolicyTests.character, 10, 3),
        (DevicePolicyTests.block, 1, 3), (DevicePolicyTests.block, 136, 0), (DevicePolicyTests.block, 8, 0),  // the same numbers, block devices
        (DevicePolicyTests.block, 7, 0), (DevicePolicyTests.block, 259, 0),
        (3, 1, 3), (0, 1, 3),                                 // no such type
    ])
    func everyOtherDeviceIsRefused(_ type: UInt32, _ major: UInt32, _ minor: UInt32) {
        let program = DevicePolicy.program()
        for access in [Self.read, Self.write, Self.mknod, Self.read | Self.write | Self.mknod] {
            #expect(Self.run(program, type: type, access: access, major: major, minor: minor) == 0)
        }
    }

    /// 0:0, systemd's placeholder of each type (which no driver has), may be made and never
    /// opened: nothing else of the program allows a mknod without the rest.
    @Test func thePlaceholderMayBeMadeAndNotOpened() {
        let program = DevicePolicy.program()
        for type in [Self.character, Self.block] {
            #expect(Self.run(program, type: type, access: Self.mknod, major: 0, minor: 0) == 1)
            for access in [Self.read, Self.write, Self.read | Self.write, Self.read | Self.mknod, Self.write | Self.mknod] {
                #expect(Self.run(program, type: type, access: access, major: 0, minor: 0) == 0)
            }
            for (major, minor) in [(UInt32(0), UInt32(1)), (1, 0), (8, 0)] {
                #expect(Self.run(program, type: type, access: Self.mknod, major: major, minor: minor) == 0)
            }
        }
    }

    @Test func theLegacyRulesAreTheSameList() {
        #expect(DevicePolicy.legacyRules == [
            "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm",
            "c 5:0 rwm", "c 5:1 rwm", "c 5:2 rwm", "c 10:200 rwm", "c 136:* rwm", "c 0:0 m", "b 0:0 m",
        ])
    }
}
