import BerthSystem
import Glibc
import Testing

/// Wait statuses as the kernel packs them (<bits/waitstatus.h>): an exit code in bits 8-15, a
/// signal in bits 0-6, bit 7 for a core dump.
@Suite struct ExitStatusTests {
    static func exited(_ code: Int32) -> Int32 { code << 8 }
    static func killed(_ signal: Int32, core: Bool = false) -> Int32 { signal | (core ? 0x80 : 0) }

    @Test(arguments: [0, 1, 2, 42, 127, 128, 255] as [Int32])
    func anExitIsItsCode(_ code: Int32) {
        for boot in [false, true] {
            let status = ExitStatus(waitStatus: Self.exited(code), boot: boot)
            #expect(status.ending == .exited(code))
            #expect(status.code == code)
        }
    }

    @Test(arguments: [SIGKILL, SIGTERM, SIGSEGV, SIGABRT, SIGPIPE, SIGUSR1, SIGRTMIN_PLUS_3])
    func aDeathIs128PlusTheSignal(_ signal: Int32) {
        for core in [false, true] {
            let status = ExitStatus(waitStatus: Self.killed(signal, core: core), boot: true)
            #expect(status.ending == .killed(signal))
            #expect(status.code == 128 + signal)
        }
    }

    /// reboot(2) in a PID namespace: SIGINT for power-off and halt, SIGHUP for reboot. Those
    /// are a booted system's ways to end; for a command they are deaths like any other.
    @Test func aBootedSystemPowersOffAndReboots() {
        #expect(ExitStatus(waitStatus: Self.killed(SIGINT), boot: true).ending == .poweredOff)
        #expect(ExitStatus(waitStatus: Self.killed(SIGINT), boot: true).code == 0)
        #expect(ExitStatus(waitStatus: Self.killed(SIGHUP), boot: true).ending == .rebooted)
        #expect(ExitStatus(waitStatus: Self.killed(SIGHUP), boot: true).code == 133)
        #expect(ExitStatus(waitStatus: Self.killed(SIGINT)).ending == .killed(SIGINT))
        #expect(ExitStatus(waitStatus: Self.killed(SIGINT)).code == 130)
        #expect(ExitStatus(waitStatus: Self.killed(SIGHUP)).code == 129)
    }

    /// 133 means a reboot only for a booted system, and only when it rebooted: a command's own
    /// 133 is its own, a booted init's own 133 is a failure (1), never taken for a reboot.
    @Test func onlyARebootIs133() {
        #expect(ExitStatus(waitStatus: Self.exited(133)).code == 133)
        #expect(ExitStatus(waitStatus: Self.exited(133)).ending == .exited(133))
        #expect(ExitStatus(waitStatus: Self.exited(133), boot: true).code == 1)
        #expect(ExitStatus(waitStatus: Self.exited(133), boot: true).ending != .rebooted)
        #expect(ExitStatus(waitStatus: Self.killed(SIGHUP)).code != 133)
    }

    @Test func theStatusOfARealChild() throws {
        for (command, expected) in [("exit 3", ExitStatus.Ending.exited(3)), ("kill -KILL $$", .killed(SIGKILL)), ("true", .exited(0))] {
            var pid: pid_t = 0
            let words: [String] = ["/bin/sh", "-c", command]
            let argv = words.map { strdup($0) } + [nil]
            defer { argv.forEach { free($0) } }
            #expect(posix_spawn(&pid, "/bin/sh", nil, nil, argv, nil) == 0)
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
            #expect(ExitStatus(waitStatus: status).ending == expected, "\(command)")
        }
    }

    @Test(arguments: [
        (exited(0), false, "Container deb exited successfully.\n"),
        (killed(SIGINT), true, "Container deb exited successfully.\n"),
        (exited(7), false, "Container deb failed with error code 7.\n"),
        (killed(SIGHUP), true, "Container deb is being rebooted.\n"),
        (killed(SIGKILL), false, "Container deb terminated by signal KILL.\n"),
        (killed(SIGTERM), true, "Container deb terminated by signal TERM.\n"),
        (killed(SIGHUP), false, "Container deb terminated by signal HUP.\n"),
        (killed(SIGUSR2), false, "Container deb terminated by signal \(SIGUSR2).\n"),
    ])
    func nspawnsClosingLine(_ waitStatus: Int32, _ boot: Bool, _ line: String) {
        #expect(ExitStatus(waitStatus: waitStatus, boot: boot).sentence(machine: "deb") == line)
    }
}

private let SIGRTMIN_PLUS_3 = Int32(34 + 3)

@Suite struct CapabilitiesTests {
    @Test func nspawnsDefaultBoundingSet() {
        // systemd-nspawn 252's CapBnd, as /proc/PID/status shows it in a container.
        #expect(Capabilities.nspawnDefault.rawValue == 0xfcec_afff)
        for dropped in [Capabilities.netAdmin, .ipcLock, .sysModule, .sysRawIO, .sysPacct, .sysResource, .sysTime, .syslog] {
            #expect(!Capabilities.nspawnDefault.contains(dropped))
        }
        for kept in [Capabilities.sysPtrace, .sysBoot, .sysTTYConfig, Capabilities(number: 21) /* CAP_SYS_ADMIN */] {
            #expect(Capabilities.nspawnDefault.contains(kept))
        }
    }

    @Test func numbersAreBits() {
        #expect(Capabilities(number: 0).rawValue == 1)
        #expect(Capabilities(number: 19) == .sysPtrace)
        #expect(Capabilities(number: 40).rawValue == 1 << 40)
    }
}
