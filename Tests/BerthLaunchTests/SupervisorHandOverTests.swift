import BerthSystem
@testable import BerthLaunch
import Glibc
import SystemPackage
import Testing

/// berth hands a started container to `berth-stage --supervise` as that command's arguments;
/// what the stage reads back must be what berth started, and damaged arguments refused.
@Suite struct SupervisorHandOverTests {
    private static func cgroup(_ unified: FilePath?, legacy: [FilePath]) -> ContainerCgroup {
        ContainerCgroup(unified: unified, intoCgroup: nil, legacy: legacy)
    }

    // A joined v1 hierarchy's path holds a comma.
    @Test(arguments: [
        (pid_t(1), false, false, "deb" as String?, "/sys/fs/cgroup/berth/0123" as FilePath?, [FilePath]()),
        (pid_t(4_194_304), true, false, "a machine with spaces, = and ünï", nil, ["/sys/fs/cgroup/devices/berth/0123"]),
        (pid_t(77), false, true, nil, "/sys/fs/cgroup/berth/x", ["/sys/fs/cgroup/devices/berth/x", "/sys/fs/cgroup/cpu,cpuacct/berth/x"]),
        (pid_t(2), true, true, "", nil, []),
    ])
    func withoutAConsoleItRoundTrips(_ pid: pid_t, _ boot: Bool, _ asPID2: Bool, _ machine: String?, _ unified: FilePath?, _ legacy: [FilePath]) throws {
        let started = Supervisor.Started(pid: pid, setup: pid + 1, boot: boot, asPID2: asPID2, machineName: machine,
                                         cgroup: Self.cgroup(unified, legacy: legacy), console: nil, userRangeLocks: [])
        let back = try #require(Supervisor.Started(arguments: started.arguments))
        #expect(back.pid == pid && back.setup == pid + 1 && back.boot == boot && back.asPID2 == asPID2)
        #expect(back.machineName == machine)
        #expect(back.cgroup.unified == unified && back.cgroup.legacy == legacy && back.cgroup.intoCgroup == nil)
        #expect(back.console == nil)
        #expect(back.arguments == started.arguments)
        #expect(started.descriptors.isEmpty)
    }

    /// The console's descriptors cross the exec by number. The decoded relay owns the same
    /// numbers as the original: it is kept from closing them (its object is leaked on purpose),
    /// so that only the original closes them, once.
    @Test(arguments: [(1 as Int32, true, true), (-1, false, false), (2, false, true)])
    func withAConsoleItRoundTrips(_ output: Int32, _ input: Bool, _ saved: Bool) throws {
        let master = try Descriptor.open("/dev/null", O_RDWR), slave = try Descriptor.open("/dev/null", O_RDWR)
        let (masterFD, slaveFD) = (master.rawValue, slave.rawValue)
        // Settings the relay restores on standard input when it goes: the terminal's own where it
        // is one, so that restoring them changes nothing.
        var settings = termios()
        _ = tcgetattr(0, &settings)
        let terminal: [UInt8]? = saved ? withUnsafeBytes(of: settings) { Array($0) } : nil
        let relay = ConsoleRelay(master: master, slave: slave, output: output, input: input, savedTerminal: terminal)
        let lock = try Descriptor.open("/dev/null", O_RDONLY)
        let started = Supervisor.Started(pid: 1234, setup: 0, boot: true, asPID2: false, machineName: "m", cgroup: Self.cgroup(nil, legacy: []),
                                         console: relay, userRangeLocks: [lock])
        #expect(started.descriptors == [masterFD, slaveFD, lock.rawValue])
        let back = try #require(Supervisor.Started(arguments: started.arguments))
        let console = try #require(back.console)
        _ = Unmanaged.passRetained(console)
        #expect(console.master.rawValue == masterFD && console.slave.rawValue == slaveFD)
        #expect(console.output == output && console.input == input)
        #expect(console.savedTerminal == terminal)
        #expect(back.arguments == started.arguments)
        // The lock crosses open but unnamed: nothing in the arguments for it.
        #expect(back.userRangeLocks.isEmpty)
    }

    @Test(arguments: [
        [String](),                              // nothing
        ["boot=1", "as-pid2=0"],                 // no pid
        ["pid="],                                // an empty pid
        ["pid=abc"],
        ["pid=12x"],
        ["pid=99999999999"],                     // beyond pid_t
        ["pid=-"],
        ["pid=1", "boot"],                       // a field without '='
        ["pid=1", ""],
        ["pid"],
        ["1234"],
        ["PID=1"],
    ])
    func damagedArgumentsAreRefused(_ arguments: [String]) {
        #expect(Supervisor.Started(arguments: arguments) == nil)
    }

    /// The supervisor signals its pid: kill(0) and kill(-1) reach the caller's process group or
    /// every process it may signal, and waitpid(-1) any child.
    @Test(arguments: ["pid=0", "pid=-1", "pid=-1234"])
    func aPidThatNamesNoSingleProcessIsRefused(_ pid: String) {
        #expect(Supervisor.Started(arguments: [pid]) == nil)
    }

    @Test func fieldsThatAreNotOneAreTakenAsFalse() throws {
        let back = try #require(Supervisor.Started(arguments: ["pid=5", "boot=yes", "as-pid2=true", "unknown=1"]))
        #expect(back.pid == 5 && !back.boot && !back.asPID2 && back.machineName == nil && back.console == nil)
    }

    @Test func aMachineNameThatIsNotHexadecimalIsDropped() throws {
        // The name only labels the closing status line; a damaged one loses the line, not the container.
        let back = try #require(Supervisor.Started(arguments: ["pid=5", "machine=zz"]))
        #expect(back.machineName == nil)
    }
}
