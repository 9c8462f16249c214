import BerthSystem
import CBerth
import Glibc
import SystemPackage

/// The container's setup, in two processes, in nspawn's order (see `Supervisor.start`).
///
/// The setup process (outer) is a fresh exec of berth-stage, single-threaded, with no state from
/// the supervisor, still the host's root, in a mount namespace of its own. It receives the
/// launch description and the mounts the supervisor made (`PreparedMounts`), attaches them
/// beneath the root, and pivots into it. Then it makes PID 1 (inner) in new user, mount, PID,
/// UTS, IPC and cgroup namespaces (and network, with --private-network): the copy of its mount
/// namespace locks everything attached so far. It writes PID 1's id maps, reports its pid to the
/// supervisor, and ends once PID 1 has mounted its own /proc (and /sys), for which the kernel
/// wants fully visible instances in the namespace meanwhile: the outer process pins them and
/// takes them away again, its unmount reaching PID 1's copy by propagation.
///
/// PID 1 mounts what must be made from inside its namespaces (/proc, devpts, cgroup2, and
/// /sys with a private network), masks what nspawn masks, drops capabilities, installs the
/// system call filter, and execs the payload.
public enum ContainerStage {
    /// The hidden subcommand that runs this stage.
    public static let subcommand = "__container-stage"
    /// argv[1] of --as-pid2's init, run from its sealed copy.
    public static let initFlag = "--as-pid2-init"

    /// The capability bounding set the container keeps, as nspawn reckons it: its default, with
    /// CAP_NET_ADMIN when the network is the container's own (it may manage it), and what
    /// `--capability=` adds, less what `--drop-capability=` takes.
    public static func keptCapabilities(ownNetwork: Bool, adding added: Capabilities, dropping dropped: Capabilities) -> Capabilities {
        Capabilities.nspawnDefault.union(ownNetwork ? .netAdmin : []).union(added).subtracting(dropped)
    }

    static func keptCapabilities(_ spec: LaunchSpec) -> Capabilities {
        keptCapabilities(ownNetwork: spec.privateNetwork, adding: spec.addedCapabilities, dropping: spec.droppedCapabilities)
    }

    /// What the setup process tells the supervisor, in one message on descriptor 3: PID 1's pid,
    /// or why the container could not be set up.
    enum SetupReport {
        static func send(pid: pid_t, on socket: MessageSocket) throws {
            try socket.send(Array("pid=\(pid)".utf8), descriptors: [])
        }

        static func send(error: Error, on socket: MessageSocket) {
            _ = try? socket.send(Array("error=\(error)".utf8), descriptors: [])
        }

        /// PID 1's pid, or the setup's error thrown.
        static func receive(on socket: MessageSocket) throws -> pid_t {
            let text = String(decoding: try socket.receive(limit: 1 << 16).bytes, as: UTF8.self)
            if text.hasPrefix("pid="), let pid = pid_t(text.dropFirst(4)), pid > 0 { return pid }
            if text.hasPrefix("error=") { throw LaunchError("cannot start the container: \(text.dropFirst(6))") }
            throw LaunchError("cannot start the container: its setup ended without a word")
        }
    }

    /// The setup process: reads the spec from descriptor 3, sets up, makes PID 1. Never returns.
    public static func main() -> Never {
        let socket = MessageSocket(descriptor: Descriptor(owning: 3))
        let handshake: Handshake
        do {
            handshake = try setUp(reportingOn: socket)
        } catch {
            SetupReport.send(error: error, on: socket)
            _exit(1)
        }
        do {
            // The last change of ids (the file system's, back from the container's root) cleared it.
            _ = try retryingInterrupts("prctl(PR_SET_PDEATHSIG)") { cberth_set_parent_death_signal(SIGKILL) }
            try handshake.finish()
        } catch {
            // PID 1 waits for the word that never comes and ends: the supervisor then reports its
            // exit, and this says why.
            let text = "berth: error: cannot start the container: \(error)\n"
            _ = text.withCString { Glibc.write(2, $0, strlen($0)) }
            _exit(1)
        }
        _exit(0)
    }

    /// --as-pid2's init, from its sealed copy: `arguments` are `(berth-init) --as-pid2-init PROGRAM
    /// ARGV...`. It stays PID 1, runs PROGRAM as PID 2 in a session of its own (with the terminal
    /// on standard input as its controlling terminal, when there is one), reaps every orphan,
    /// passes each signal it gets on to PROGRAM, and exits with PROGRAM's status (128 plus the
    /// signal that killed it). Never returns.
    public static func runInit(_ arguments: [String]) -> Never {
        guard arguments.count >= 4 else { _exit(127) }
        var all = sigset_t()
        sigfillset(&all)
        sigprocmask(SIG_BLOCK, &all, nil)
        // Named before the payload starts, so it never sees another name; its exec renames it.
        _ = cberth_set_name("(berth-init)")
        let cArgs = arguments.dropFirst(3).map { strdup($0) } + [nil]
        var report: Int32 = -1
        let payload = cberth_spawn(0, -1, arguments[2], cArgs, environ, -1, -1, 1, &report)
        if payload < 0 || cberth_spawn_result(payload, report) != 0 {
            let text = "berth: error: cannot run \(arguments[2]): \(SystemError.last("execve").errno)\n"
            _ = text.withCString { Glibc.write(2, $0, strlen($0)) }
            _exit(127)
        }
        while true {
            var info = siginfo_t()
            let signal = sigwaitinfo(&all, &info)
            if signal < 0 { continue }
            if signal != SIGCHLD {
                kill(payload, signal)
                continue
            }
            var status: Int32 = 0
            while case let done = waitpid(-1, &status, WNOHANG), done > 0 {
                // The payload is gone: so is the container (the kernel ends the rest with PID 1).
                if done == payload { _exit(ExitStatus(waitStatus: status).code) }
            }
        }
    }

    /// The launch description and the descriptors that came with it, by role.
    private static func receive(on socket: MessageSocket) throws -> (LaunchSpec, [String: [Descriptor]]) {
        let (bytes, descriptors) = try socket.receive()
        guard let spec = LaunchSpec(decoding: bytes), spec.descriptorRoles.count == descriptors.count else {
            throw LaunchError("the launch description is damaged")
        }
        var byRole: [String: [Descriptor]] = [:]
        for (role, descriptor) in zip(spec.descriptorRoles, descriptors) { byRole[role, default: []].append(descriptor) }
        return (spec, byRole)
    }

    /// Where the outer process pins the fully visible proc and sysfs PID 1 needs to mount its
    /// own, beneath the container's /run (which it mounts, so the image holds none of this).
    private static let pins: [(name: FilePath, type: String)] = [(".berth-proc", "proc"), (".berth-sys", "sysfs")]

    /// The outer process's half: everything up to PID 1's start, which it reports. What it
    /// makes in the image (a bind's mount point) it makes as the container's root, whose ids
    /// the idmapped root can store.
    private static func setUp(reportingOn socket: MessageSocket) throws -> Handshake {
        let (spec, mounts) = try receive(on: socket)
        // Into the machine's v1 cgroups first, as the host's root: PID 1 is made from this
        // thread, in a cgroup namespace rooted at them. A thread that moves itself (`tasks`,
        // "0") takes no global lock; the supervisor's move of this process by its pid would wait
        // out an RCU grace period (8 ms here).
        for cgroup in spec.legacyCgroups {
            do { try Descriptor.open(cgroup.appending("tasks"), O_WRONLY).writeAll("0") } catch let error as SystemError {
                let why = error.errno == .invalidArgument ? " (a realtime process moves only into a cgroup with a realtime budget)" : ""
                throw LaunchError("cannot move into the machine's cgroup \(cgroup): \(error.errno)\(why)")
            }
        }
        return try spec.userRange.map { range in try range.asRoot { try setUp(spec, mounts, reportingOn: socket) } }
            ?? setUp(spec, mounts, reportingOn: socket)
    }

    private static func setUp(_ spec: LaunchSpec, _ mounts: [String: [Descriptor]], reportingOn socket: MessageSocket) throws -> Handshake {
        func mount(_ role: String) throws -> DetachedMount {
            guard let descriptor = mounts[role]?.first else { throw LaunchError("the launch description lacks its \(role)") }
            return DetachedMount(descriptor)
        }
        // If the supervisor dies, so does the setup.
        _ = try retryingInterrupts("prctl(PR_SET_PDEATHSIG)") { cberth_set_parent_death_signal(SIGKILL) }

        // Nothing done here reaches the host's mount namespace.
        try Mount.makePrivate("/")
        var root = try mount("root")
        try root.attach(onto: mount("root-target").descriptor)
        if spec.volatile == .yes { root = try volatileRoot(over: root, spec: spec) }
        let tree = Directory(root.descriptor, displayPath: spec.tree.root.string)
        if spec.volatile == .state {
            // nspawn's: a fresh /var over the read-only image, the container's root's.
            try Mount.make("tmpfs", onto: target("var", in: tree), flags: UInt(MS_STRICTATIME), options: tmpfsOwner(spec, mode: "755"))
        }
        try attachPreparedMounts(in: tree, spec: spec, mount: mount)
        var sources = (mounts["bind"] ?? [])[...]
        for bind in spec.bindMounts {
            if bind.sourceInImage {
                // nspawn's +PATH: a path of the tree itself, found as the container will find it.
                let found: Descriptor
                do { found = try tree.openPath(inRoot: bind.source) } catch let error as SystemError where error.errno == .noSuchFileOrDirectory {
                    throw LaunchError("--bind source +\(bind.source) is not in the image: give a path of its tree after the +")
                }
                let source = try DetachedMount.copy(of: found, recursive: bind.recursive)
                if bind.readOnly { try source.set(.readOnly, recursive: bind.recursive) }
                try attach(source, at: bind.destination, in: tree)
            } else if let source = sources.popFirst() {
                try attach(DetachedMount(source), at: bind.destination, in: tree)
            }
        }
        var overlays = (mounts["overlay"] ?? [])[...]
        for overlay in spec.overlayMounts {
            guard let made = overlays.popFirst() else { break }
            try attach(DetachedMount(made), at: overlay.destination, in: tree)
        }
        try placeJournal(in: tree, spec: spec, mount: mount)
        if !spec.rootIsWritable { try root.set(.readOnly, recursive: false) }

        // The container's /run, the container's root's, shared so that unmounting the pins
        // below reaches PID 1's copy of it.
        try Mount.make("tmpfs", onto: target("run", in: tree), flags: UInt(MS_NOSUID | MS_NODEV), options: tmpfsOwner(spec, mode: "755"))
        let pinned = spec.userRange == nil ? [] : pins.filter { $0.type == "proc" || spec.privateNetwork }
        let runDirectory = try tree.openDirectory(beneath: "run", pathOnly: true, crossingMounts: true)
        try makeRunHost(in: runDirectory, spec: spec, notify: spec.descriptorRoles.contains("notify") ? mount("notify") : nil)
        try mountTmpfsAndInaccessible(in: tree, spec: spec)
        if !pinned.isEmpty {
            for pin in pinned {
                try runDirectory.makeDirectory(pin.name, mode: 0o755)
                try Mount.make(pin.type, at: runDirectory.procPath(pin.name), flags: UInt(MS_NOSUID | MS_NODEV | MS_NOEXEC))
            }
            try Mount.makeShared(runDirectory.descriptor.procPath)
        }
        // Limits, OOM score and CPUs, which PID 1 inherits: set while this is the host's root
        // and /proc the host's.
        try spec.processLimits.apply()
        // The host's /proc, for PID 1's id maps: nothing of the host shows once the root is pivoted.
        let proc = Directory(try Descriptor.open("/proc", O_RDONLY | O_DIRECTORY), displayPath: "/proc")
        _ = try retryingInterrupts("fchdir") { fchdir(root.descriptor.rawValue) }
        try Mount.pivotRoot(to: ".")

        var namespaces: Namespaces = [.mount, .pid, .uts, .ipc, .cgroup]
        if spec.privateNetwork { namespaces.insert(.network) }
        if spec.userRange != nil { namespaces.insert(.user) }
        let toInner = try Pipe(), toOuter = try Pipe()
        // The container's user namespace is owned by the machine's own root on the host (its
        // range's first id), not by the host's root: the kernel counts what a namespace's
        // processes hold (inotify instances, above all, 128 by default) against the owner of
        // each namespace up the chain, so with root as every machine's owner a hundred booted
        // machines would share root's 128 and most of their systemds fail to start. This
        // process makes it with that effective id (its real and saved ids stay root, to come
        // back to), and the host's root writes its maps, as it may in any namespace below its own.
        if let range = spec.userRange {
            _ = try retryingInterrupts("seteuid") { seteuid(range.base) }
        }
        let cloned = Result { try retryingInterrupts("clone") { cberth_clone_process(namespaces.rawValue | UInt(CBERTH_CLONE_PARENT)) } }
        if let range = spec.userRange, (try? cloned.get()) != 0 {
            _ = try retryingInterrupts("seteuid") { seteuid(0) }
            _ = cberth_use_file_system_ids(range.base, range.base)  // what asRoot set, which the change of ids undid
            // A change of ids clears the parent-death signal.
            _ = try retryingInterrupts("prctl(PR_SET_PDEATHSIG)") { cberth_set_parent_death_signal(SIGKILL) }
        }
        let pid = try cloned.get()
        if pid == 0 {
            do {
                try startPID1(spec, mounts: mounts, from: toInner.reader, to: toOuter.writer)
            } catch {
                let text = "berth: error: cannot start the container: \(error)\n"
                _ = text.withCString { Glibc.write(2, $0, strlen($0)) }
                _exit(1)
            }
        }
        try SetupReport.send(pid: pid, on: socket)
        return Handshake(pid: pid, spec: spec, proc: proc, toInner: toInner.writer, fromInner: toOuter.reader, pinned: pinned.map(\.name),
                         supervisor: socket)
    }

    /// What the outer process does once PID 1 runs: its id maps, then the pins taken away once
    /// PID 1 has mounted its own instances, each step a byte on a pipe. Either side's end makes
    /// the other's read find the end of the file, and end too.
    struct Handshake {
        let pid: pid_t
        let spec: LaunchSpec
        let proc: Directory
        let toInner: Descriptor
        let fromInner: Descriptor
        let pinned: [FilePath]
        let supervisor: MessageSocket

        /// The supervisor's word that the machine's network is made, which PID 1 waits for.
        static let networkReady = Array("network-ready".utf8)

        func finish() throws {
            try spec.userRange?.writeMaps(of: pid, proc: proc)
            try toInner.writeAll("u")
            var byte: UInt8 = 0
            // PID 1 failed, and said why.
            guard try fromInner.read(into: &byte, count: 1) == 1 else { _exit(1) }
            for pin in pinned.reversed() {
                let path = FilePath("/run").appending(pin.components)
                try Mount.unmount(path, detach: true)
                _ = try path.withPlatformString { p in try retryingInterrupts("rmdir", path: path.string) { rmdir(p) } }
            }
            // The supervisor's failure to make it ends the container before its payload runs.
            if spec.awaitsNetwork, try supervisor.receive(limit: 64).bytes != Self.networkReady { _exit(1) }
            try toInner.writeAll("g")
        }
    }

    /// PID 1's half, from its start (in its new namespaces, the root already its own) to the exec.
    private static func startPID1(_ spec: LaunchSpec, mounts: [String: [Descriptor]], from outer: Descriptor, to reply: Descriptor) throws -> Never {
        _ = Glibc.close(3)
        var byte: UInt8 = 0
        // The outer process failed, and said why.
        guard try outer.read(into: &byte, count: 1) == 1 else { _exit(1) }
        if spec.userRange != nil {
            // The namespace's root, with its capabilities there, and no group of the host's.
            _ = try retryingInterrupts("become the user namespace's root") { cberth_become_namespace_root() }
        }
        // If the supervisor (its parent) dies, so does the container: PID 1's death ends the PID
        // namespace, and with its last process the mount namespace and every mount in it. Set
        // after the change of ids, which clears it.
        _ = try retryingInterrupts("prctl(PR_SET_PDEATHSIG)") { cberth_set_parent_death_signal(SIGKILL) }

        // A session of its own in every case: left in the caller's, it would keep the caller's
        // terminal as its controlling tty, which /dev/tty opens (and TIOCSTI types into) even
        // when no standard stream is that terminal.
        _ = try retryingInterrupts("setsid") { setsid() }
        if let console = mounts["console"]?.first {
            // The pty becomes the container's terminal, in place of each of the caller's streams
            // that is a terminal.
            _ = try retryingInterrupts("TIOCSCTTY") { cberth_set_controlling_terminal(console.rawValue) }
            for target in spec.consoleStreams { _ = try retryingInterrupts("dup2") { dup2(console.rawValue, target) } }
        }
        let tree = Directory(try Descriptor.open("/", CBERTH_O_PATH | O_DIRECTORY), displayPath: spec.tree.root.string)
        try mountAPIFileSystems(in: tree, spec: spec)
        try spec.hostname.withCString { name in
            _ = try retryingInterrupts("sethostname") { sethostname(name, strlen(name)) }
        }
        if spec.privateNetwork {
            _ = try retryingInterrupts("bring up lo") { cberth_interface_up("lo") }
        }
        try reply.writeAll("m")
        // The pins are gone once the outer process says so.
        guard try outer.read(into: &byte, count: 1) == 1 else { _exit(1) }
        let kept = try Capabilities.limitBoundingSet(to: keptCapabilities(spec))
        try exec(spec, capabilities: kept, initCopy: mounts["init"]?.first)
    }

    // MARK: File systems

    /// Opens (making it if missing) the directory or file `path` as the container will find it,
    /// for mount(2) to use as target through its /proc path: a symlink on the way, the last one
    /// too, is followed within the tree (RESOLVE_IN_ROOT), as nspawn resolves a destination, and
    /// never leads out of it. What is missing is made, directories 0755, a file 0644.
    static func target(_ path: FilePath, in tree: Directory, file: Bool = false) throws -> Descriptor {
        let components = Array(path.components)
        guard let last = components.last else { return tree.descriptor }
        do {
            let parent = try tree.openDirectory(inRoot: FilePath(root: nil, components.dropLast()), creating: true)
            let name = FilePath(root: nil, [last])
            if try parent.status(name) == nil {
                if file { _ = try parent.createFile(name, mode: 0o644) } else { try parent.makeDirectory(name, mode: 0o755) }
            }
            return try tree.openPath(inRoot: FilePath(root: nil, components))
        } catch let error as SystemError where error.errno == .readOnlyFileSystem {
            let shown = "/" + components.map(\.string).joined(separator: "/")
            throw LaunchError("the image has no \(shown) to mount on, and a read-only image cannot be given one: mount onto a path it has, or run without --read-only")
        }
    }

    /// Attaches `mount` at `path` beneath the root, made of the mount's kind (file or directory)
    /// where missing, without following any symlink the image holds.
    private static func attach(_ mount: DetachedMount, at path: FilePath, in tree: Directory) throws {
        let isDirectory = try mount.descriptor.status().kind == .directory
        try mount.attach(onto: target(path, in: tree, file: !isDirectory))
    }

    /// The outer process's mounts beneath the root, before the pivot: what the supervisor made
    /// (/dev, the host network's /sys, the console, resolv.conf and localtime), and the mask over /sys/firmware.
    /// PID 1's copy of the namespace locks every one of them.
    private static func attachPreparedMounts(in tree: Directory, spec: LaunchSpec, mount: (String) throws -> DetachedMount) throws {
        let nosuid = UInt(MS_NOSUID), nodev = UInt(MS_NODEV)
        if !spec.privateNetwork {
            try mount("sys").attach(onto: target("sys", in: tree))
            try maskFirmware(in: tree)
        }
        try mount("dev").attach(onto: target("dev", in: tree))
        // The console: the container's own pty when berth relays one (otherwise the supervisor
        // made it a null device of the container's own). Never a host file: systemd chowns and
        // chmods /dev/console, which through a bind of the host's /dev/null (or the caller's
        // terminal) would change the host's.
        if spec.descriptorRoles.contains("console-mount") {
            let dev = try tree.openDirectory(beneath: "dev", pathOnly: true, crossingMounts: true)
            try mount("console-mount").attach(onto: dev.openFile("console", CBERTH_O_PATH))
        }
        try Mount.make("tmpfs", onto: target("tmp", in: tree), flags: nosuid | nodev, options: tmpfsOwner(spec, mode: "1777"))

        try placeHostFiles(in: tree, spec: spec, mount: mount)
    }

    /// The tree's part of `--link-journal=` (`JournalLink`): its /var/log/journal, the machine's
    /// directory there, the host's bound onto it. A tree that cannot be written (--read-only,
    /// before the root is made so, a read-only image) leaves a tolerant link undone, as nspawn.
    private static func placeJournal(in tree: Directory, spec: LaunchSpec, mount: (String) throws -> DetachedMount) throws {
        let part = spec.journalTreePart
        guard part != .nothing else { return }
        var path: FilePath = "var/log/journal"
        if part != .directories { path.append(spec.uuid.filter { $0 != "-" }) }
        let directory: Directory
        do {
            directory = try tree.openDirectory(inRoot: path, creating: spec.rootIsWritable || spec.volatile == .state)
        } catch let error as SystemError where [.readOnlyFileSystem, .noSuchFileOrDirectory].contains(error.errno) {
            if spec.journalLink.tolerant { return }
            throw LaunchError("cannot link the machine's journal (--link-journal=\(spec.journalLink.encoded)): the tree has no /\(path) and cannot be given one: \(error)")
        }
        if part == .hostDirectory { try mount("journal").attach(onto: directory.descriptor) }
    }

    /// `--volatile=yes`: a fresh tmpfs over `image` (attached already) becomes the root, holding
    /// the image's /usr read-only and what nspawn makes beside it (systemd's base file system:
    /// /etc, /var, /root, and /bin, /sbin, /lib, /lib64 as links into /usr). As nspawn, only for
    /// an image whose /bin, /sbin and /lib are in /usr: otherwise nothing would run.
    private static func volatileRoot(over image: DetachedMount, spec: LaunchSpec) throws -> DetachedMount {
        let imageTree = Directory(image.descriptor, displayPath: spec.tree.root.string)
        for name in ["bin", "sbin", "lib", "lib64"] where try imageTree.status(FilePath(name)).map({ $0.kind != .symlink }) ?? false {
            throw LaunchError("--volatile=yes needs an image whose /bin, /sbin, /lib and /lib64 are in /usr (merged /usr), as nspawn does; this one has /\(name) of its own: use --volatile=state or overlay")
        }
        guard try imageTree.status("usr")?.kind == .directory else {
            throw LaunchError("--volatile=yes needs an image with /usr, which it keeps; this one has none")
        }
        let usr = try DetachedMount.copy(of: imageTree.openPath(beneath: "usr"), recursive: true)
        try usr.set(.readOnly, recursive: true)
        let hasLib64 = try imageTree.status("usr/lib64")?.kind == .directory
        let base = spec.userRange?.base ?? 0
        let tmpfs = try DetachedMount.fileSystem("tmpfs", options: [("mode", "0755"), ("uid", "\(base)"), ("gid", "\(base)")])
        try tmpfs.attach(onto: image.descriptor)
        let root = Directory(tmpfs.descriptor, displayPath: "the volatile root")
        for (name, mode) in [("usr", 0o755), ("etc", 0o755), ("var", 0o755), ("root", 0o750)] as [(FilePath, mode_t)] {
            try root.makeDirectory(name, mode: mode)
            try root.setMode(name, mode)
        }
        try usr.attach(onto: root.openFile("usr", CBERTH_O_PATH | O_DIRECTORY))
        for name in ["bin", "sbin", "lib"] + (hasLib64 ? ["lib64"] : []) {
            try "usr/\(name)".withCString { try root.makeSymlink(FilePath(name), target: $0) }
        }
        return tmpfs
    }

    /// tmpfs options for a directory the container's root owns.
    private static func tmpfsOwner(_ spec: LaunchSpec, mode: String) -> String {
        let base = spec.userRange?.base ?? 0
        return "mode=\(mode),uid=\(base),gid=\(base)"
    }

    /// The firmware's tables (ACPI, EFI, DMI) are the host's: nothing of them shows inside.
    private static func maskFirmware(in tree: Directory) throws {
        let sys = try tree.openDirectory(beneath: "sys", pathOnly: true, crossingMounts: true)
        if try sys.status("firmware")?.kind == .directory {
            try Mount.make("tmpfs", at: sys.procPath("firmware"), flags: UInt(MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC),
                           options: "mode=555")
        }
    }

    /// /sys of the container's own network namespace, as nspawn shows it there: a read-only
    /// tmpfs holding only block, bus, class, dev, devices and kernel of a fresh sysfs, and
    /// fs/cgroup and fs/selinux to mount on (as nspawn makes them); the host's firmware tables, modules, power and hypervisor stay out.
    private static func mountOwnSysfs(in tree: Directory) throws {
        let flags = UInt(MS_NOSUID | MS_NODEV | MS_NOEXEC)
        try Mount.make("tmpfs", onto: target("sys", in: tree), flags: flags, options: "mode=555")
        let sys = try tree.openDirectory(beneath: "sys", crossingMounts: true)
        let full = try DetachedMount.fileSystem("sysfs", attributes: [.readOnly, .noSetUID, .noDevices, .noExec])
        let fresh = Directory(full.descriptor, displayPath: "the container's sysfs")
        for name in ["block", "bus", "class", "dev", "devices", "kernel"] where try fresh.status(FilePath(name))?.kind == .directory {
            try sys.makeDirectory(FilePath(name), mode: 0o755)
            let part = try DetachedMount.copy(of: fresh.openPath(beneath: FilePath(name)), recursive: false)
            try part.attach(onto: sys.openFile(FilePath(name), CBERTH_O_PATH | O_DIRECTORY))
        }
        try sys.makeDirectory("fs", mode: 0o755)
        for name in ["cgroup", "selinux"] { try sys.openDirectory(beneath: "fs").makeDirectory(FilePath(name), mode: 0o755) }
        try Mount.remountReadOnly(sys.descriptor.procPath, extraFlags: flags)
    }

    /// PID 1's mounts, made from inside its namespaces: /proc of its PID namespace, masked as
    /// nspawn masks it; /sys of its network namespace with --private-network; cgroup2 of its
    /// cgroup namespace; devpts, shm and mqueue of its own.
    private static func mountAPIFileSystems(in tree: Directory, spec: LaunchSpec) throws {
        let nosuid = UInt(MS_NOSUID), nodev = UInt(MS_NODEV), noexec = UInt(MS_NOEXEC)

        // Through the mount API: before it is mounted there is no /proc to name descriptors by.
        try DetachedMount.fileSystem("proc", attributes: [.noSetUID, .noDevices, .noExec]).attach(onto: target("proc", in: tree))
        // What a container must not change or read of the host's kernel, as nspawn protects it.
        let proc = try tree.openDirectory(beneath: "proc", pathOnly: true, crossingMounts: true)
        try mountOwnBootID(proc: proc, run: tree.openDirectory(beneath: "run", pathOnly: true, crossingMounts: true))
        for name in ["kcore", "keys", "kallsyms", "timer_list", "sched_debug", "latency_stats", "key-users", "config.gz"]
            where try proc.status(FilePath(name))?.kind == .regular {
            try Mount.bind("/dev/null", at: proc.procPath(FilePath(name)), recursive: false)
        }
        // Read-only, as nspawn's: the kernel's settings and the hardware's (/proc/fs holds a
        // file system's tunables, /proc/irq the interrupts' CPUs).
        for name in ["sys", "sysrq-trigger", "fs", "bus", "irq"] where try proc.status(FilePath(name)) != nil {
            let p = proc.procPath(FilePath(name))
            try Mount.bind(p, at: p, recursive: name == "sys")
            try Mount.remountReadOnly(p, extraFlags: nosuid | nodev | noexec)
        }
        // Hidden, as docker hides them: what nspawn leaves readable of the host's firmware tables
        // and disks.
        for name in ["acpi", "scsi"] where try proc.status(FilePath(name))?.kind == .directory {
            try Mount.make("tmpfs", at: proc.procPath(FilePath(name)),
                           flags: UInt(MS_RDONLY) | nosuid | nodev | noexec, options: "mode=555")
        }

        if spec.privateNetwork { try mountOwnSysfs(in: tree) }
        let sys = try tree.openDirectory(beneath: "sys", pathOnly: true, crossingMounts: true)
        // A command gets nspawn's cgroup tree, each hierarchy rooted at the machine's own cgroup
        // (its cgroup namespace's root). A booted systemd mounts the tree it wants itself.
        if !spec.boot, try sys.status("fs/cgroup")?.kind == .directory {
            let cgroup = try sys.openDirectory(beneath: "fs/cgroup", pathOnly: true, crossingMounts: true)
            switch spec.cgroupLayout {
            case "unified": try Mount.make("cgroup2", onto: cgroup.descriptor, flags: nosuid | nodev | noexec)
            case "legacy", "hybrid": try mountLegacyCgroups(onto: cgroup, in: sys, unified: spec.cgroupLayout == "hybrid" && imageTakesHybridCgroups())
            default: break
            }
        }

        let dev = try tree.openDirectory(beneath: "dev", pathOnly: true, crossingMounts: true)
        try Mount.make("devpts", at: dev.procPath("pts"), flags: nosuid | noexec,
                       options: "newinstance,ptmxmode=0666,mode=620,gid=5")
        try Mount.make("tmpfs", at: dev.procPath("shm"), flags: nosuid | nodev, options: "mode=1777")
        try Mount.make("mqueue", at: dev.procPath("mqueue"), flags: nosuid | nodev | noexec)
    }

    /// nspawn's tree on a cgroup v1 host: a tmpfs, read-only once made; in it each kernel
    /// controller's hierarchy read-only (a joined one, "cpu,cpuacct", with a symlink for each
    /// controller), name=systemd writable, and on a hybrid host the unified hierarchy writable
    /// when `unified`. The hierarchies are those PID 1 is in, from its own /proc/self/cgroup.
    private static func mountLegacyCgroups(onto mountPoint: Directory, in sys: Directory, unified: Bool) throws {
        let flags = UInt(MS_NOSUID | MS_NODEV | MS_NOEXEC)
        let size = "mode=755,size=4096k,nr_inodes=1024"
        try Mount.make("tmpfs", onto: mountPoint.descriptor, flags: flags | UInt(MS_STRICTATIME), options: size)
        let top = try sys.openDirectory(beneath: "fs/cgroup", pathOnly: true, crossingMounts: true)
        let hierarchies = LegacyCgroupHierarchy.memberships(try LegacyCgroupHierarchy.cgroupFile(of: "self")).map(\.controllers)
        for controllers in hierarchies where !controllers.hasPrefix("name=") {
            try top.makeDirectory(FilePath(controllers), mode: 0o755)
            let path = top.procPath(FilePath(controllers))
            try Mount.make("cgroup", at: path, flags: flags, options: controllers)
            try Mount.remountReadOnly(path, extraFlags: flags)
            let joined = controllers.split(separator: ",")
            for controller in joined where joined.count > 1 { try top.makeSymlink(FilePath(String(controller)), target: controllers) }
        }
        if unified {
            try top.makeDirectory("unified", mode: 0o755)
            try Mount.make("cgroup2", source: "cgroup", at: top.procPath("unified"), flags: flags)
        }
        if hierarchies.contains("name=systemd") {
            try top.makeDirectory("systemd", mode: 0o755)
            try Mount.make("cgroup", at: top.procPath("systemd"), flags: flags, options: "none,name=systemd")
        }
        try Mount.make("tmpfs", at: top.descriptor.procPath, flags: UInt(MS_REMOUNT | MS_RDONLY | MS_STRICTATIME) | flags, options: size)
    }

    /// Whether the image's systemd takes a hybrid host's cgroup tree (version 233 or later), as
    /// nspawn decides it: by the version in its libsystemd-shared's name. Read in the image.
    private static func imageTakesHybridCgroups() -> Bool {
        let patterns = ["lib", "lib64", "usr/lib", "usr/lib64", "usr/lib/*"].map { "/\($0)/systemd/libsystemd-shared-*.so" }
        return patterns.contains { pattern in
            var found = glob_t()
            defer { globfree(&found) }
            guard glob(pattern, 0, nil, &found) == 0 else { return false }
            return (0..<Int(found.gl_pathc)).contains { i in
                guard let path = found.gl_pathv[i].map({ String(cString: $0) }),
                      let version = path.split(separator: "/").last?.dropFirst("libsystemd-shared-".count).prefix(while: \.isNumber) else { return false }
                return (Int(version) ?? 0) >= 233
            }
        }
    }

    // MARK: The payload

    static let defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

    private static func exec(_ spec: LaunchSpec, capabilities: Capabilities, initCopy: Descriptor?) throws -> Never {
        let user = try ImageUser.lookup(spec.user ?? "root")
        if spec.user != nil { try user.makeHome() }
        if !spec.credentials.isEmpty { try sealCredentials(for: user) }
        // nspawn 252's: LANG=C.UTF-8 whatever the caller's, and no SHELL.
        var environment = user.environment(term: spec.term, shell: false) + ["LANG=C.UTF-8", "container_uuid=\(spec.uuid)"]
            + (spec.descriptorRoles.contains("notify") ? ["NOTIFY_SOCKET=/run/host/notify"] : [])
            + (spec.credentials.isEmpty ? [] : ["CREDENTIALS_DIRECTORY=\(credentialsDirectory)"])
        for setting in spec.environment {
            let key = setting.prefix { $0 != "=" }
            environment.removeAll { $0.hasPrefix(key + "=") }
            environment.append(setting)
        }

        var argv: [String]
        var program: String
        if spec.boot {
            guard let initPath = ["/usr/lib/systemd/systemd", "/lib/systemd/systemd", "/sbin/init"].first(where: { (path: String) in access(path, X_OK) == 0 }) else {
                throw LaunchError("the image has no init (/usr/lib/systemd/systemd, /lib/systemd/systemd or /sbin/init)")
            }
            program = initPath
            argv = [initPath] + spec.arguments
        } else if spec.arguments.isEmpty {
            // The user's login shell, in their home, as nspawn starts it.
            program = user.shell
            argv = [user.loginShellName]
        } else {
            program = try resolve(spec.arguments[0])
            argv = spec.arguments
        }

        let directory = spec.workingDirectory?.string ?? (spec.arguments.isEmpty && !spec.boot ? user.home : "/")
        if chdir(directory) != 0 { throw LaunchError("cannot change to \(directory) in the container: \(SystemError.last("chdir").errno)") }

        try SyscallFilter.install(capabilities: capabilities, changes: spec.filterChanges)
        // As nspawn: root's bounding set is inheritable too (what an image's program with file
        // capabilities may gain); another user's inheritable set is the ambient one, which
        // survives the change of user.
        try (user.uid == 0 ? capabilities : spec.ambientCapabilities.intersection(capabilities)).makeInheritable()
        if user.uid != 0 || spec.user != nil {
            if !spec.ambientCapabilities.isEmpty { _ = try retryingInterrupts("prctl(PR_SET_KEEPCAPS)") { cberth_keep_capabilities(1) } }
            try user.become()
            // A change of ids clears the parent-death signal: set it again.
            _ = try retryingInterrupts("prctl(PR_SET_PDEATHSIG)") { cberth_set_parent_death_signal(SIGKILL) }
        }
        try spec.ambientCapabilities.intersection(capabilities).raiseAmbient()
        if spec.noNewPrivileges { _ = try retryingInterrupts("prctl(PR_SET_NO_NEW_PRIVS)") { cberth_set_no_new_privileges() } }
        if let personality = spec.personality, cberth_set_personality(personality) == -1 {
            throw LaunchError("cannot set the personality \(personality): \(SystemError.last("personality").errno)")
        }
        // --as-pid2: PID 1 becomes the init from its sealed copy; it runs `program` as PID 2.
        if initCopy != nil {
            argv = ["(berth-init)", initFlag, program] + argv
            program = "--as-pid2's init"
        }
        // Every descriptor above the standard streams closes; the init's copy, moved to 3, at
        // its exec.
        if let initCopy {
            _ = try retryingInterrupts("dup2") { dup2(initCopy.rawValue, 3) }
            _ = fcntl(3, F_SETFD, FD_CLOEXEC)
        }
        _ = cberth_close_from(initCopy == nil ? 3 : 4)

        let cArgs = argv.map { strdup($0) } + [nil]
        let cEnv = environment.map { strdup($0) } + [nil]
        if initCopy != nil {
            _ = cberth_execveat_empty(3, cArgs, cEnv)
        } else {
            execve(program, cArgs, cEnv)
        }
        throw LaunchError("cannot run \(program): \(SystemError.last("execve").errno)")
    }

    /// `name` as execvp would find it on the container's PATH.
    static func resolve(_ name: String) throws -> String {
        if name.contains("/") { return name }
        for dir in defaultPath.split(separator: ":") {
            let candidate = "\(dir)/\(name)"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        throw LaunchError("\(name) is not in the container's PATH")
    }
}
