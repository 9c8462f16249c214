import BerthSystem
import BerthTestSupport
import Foundation
import Testing

/// nspawn's security options, side by side with nspawn on the same trees: the capability sets
/// (bounding, permitted, effective, inheritable, ambient), no_new_privs, the personality, and
/// the users `-u` makes.
extension NspawnOptionTests {
    /// A store's Debian image, with a user alice (uid 1234, in the audio and users groups, whose
    /// home is missing), made once for these tests.
    static let debian: String = {
        let imported = try! berth(["import", "-q", Fixtures.debianZstd, "deb"], store: shared)
        precondition(imported.status == 0, "\(imported)")
        let tree = shared.appending("store/deb").string
        let made = try! berth(["run", "-q", "-D", tree, "/usr/sbin/useradd", "-u", "1234", "-G", "audio,users", "-M", "-s", "/bin/bash", "alice"],
                              store: shared)
        precondition(made.status == 0, "\(made)")
        return tree
    }()

    static let capabilityProbe = "grep -E '^(Cap|NoNewPrivs)' /proc/self/status; uname -m"

    @Test(arguments: [
        ["--capability=CAP_NET_ADMIN,cap_sys_time,38"], ["--drop-capability=CAP_CHOWN,CAP_KILL"], ["--drop-capability=all"],
        ["--capability=CAP_SYS_MODULE", "--drop-capability=CAP_SYS_MODULE"], ["--capability=12", "--capability=CAP_SYS_NICE"],
        ["--private-network", "--drop-capability=CAP_NET_ADMIN"], ["--private-network"],
        ["--ambient-capability=CAP_CHOWN"], ["--no-new-privileges=yes"], ["--no-new-privileges=no"],
        ["--personality=x86"], ["--personality=x86-64"],
    ])
    func aSecurityOptionGivesNspawnsCapabilities(_ options: [String]) throws {
        let ours = try inBerth(options, Self.capabilityProbe), theirs = try inNspawn(options, Self.capabilityProbe)
        #expect(ours.status == 0 && theirs.status == 0, "berth: \(ours)\nnspawn: \(theirs)")
        #expect(ours.stdout == theirs.stdout, "berth:\n\(ours.stdout)\nnspawn:\n\(theirs.stdout)")
        #expect(ours.stdout.contains("CapBnd:"))
    }

    /// `--capability=all` keeps every capability the caller has: in berth's own user namespace
    /// that is every one (a new namespace's root starts with all, CAP_SYS_RESOURCE included,
    /// which this host's root may lack), so it is compared without one, where both keep the host
    /// root's own.
    @Test func allCapabilitiesAreTheCallersOwn() throws {
        let ours = try inBerth(["--private-users=no", "--capability=all"], Self.capabilityProbe)
        let theirs = try inNspawn(["--capability=all"], Self.capabilityProbe)
        #expect(ours.status == 0 && ours.stdout == theirs.stdout, "berth:\n\(ours)\nnspawn:\n\(theirs.stdout)")
    }

    /// A user of the image gets nspawn's: ids and groups (none but the primary one when given by
    /// number, and USER the number), the environment, the capabilities (the ambient ones, and
    /// those inheritable), and a home made where the image has none.
    @Test(arguments: [["-u", "alice"], ["-u", "1234"], ["-u", "nobody", "--ambient-capability=CAP_NET_RAW,CAP_CHOWN"], ["-u", "daemon"]])
    func aUserGetsWhatNspawnGives(_ options: [String]) throws {
        let probe = """
            id; env | grep -E '^(USER|HOME|LOGNAME|SHELL)=' | sort; grep -E '^Cap' /proc/self/status; pwd
            stat -c '%n %A %U %G' "$HOME" /home
            """
        let tree = Self.debian
        // Each starts without the homes, which either makes.
        func removeHomes() { for home in ["home/alice", "nonexistent"] { try? FileManager.default.removeItem(atPath: "\(tree)/\(home)") } }
        removeHomes()
        defer { removeHomes() }
        let ours = try inBerth(options, probe, in: tree)
        removeHomes()
        let theirs = try inNspawn(options, probe, in: tree)
        #expect(ours.status == 0 && theirs.status == 0, "berth: \(ours)\nnspawn: \(theirs)")
        #expect(ours.stdout == theirs.stdout, "berth:\n\(ours.stdout)\nnspawn:\n\(theirs.stdout)")
        #expect(ours.stdout.contains("uid=") && !ours.stdout.contains("No such file"), "\(ours.stdout)")
    }

    /// What nspawn refuses of these, berth refuses too, in one line: an unknown capability, an
    /// ambient one the container does not keep, a personality not of this machine, a boolean
    /// that is none.
    @Test(arguments: [
        ["--capability=CAP_BOGUS"], ["--capability=sys_time"], ["--drop-capability=99"], ["--ambient-capability=CAP_SYS_TIME"],
        ["--personality=arm64"], ["--personality="], ["--no-new-privileges=maybe"],
    ])
    func aSecurityValueNspawnRefusesIsRefused(_ options: [String]) throws {
        try aValueNspawnRefusesIsRefused(options)
    }
}

extension NspawnOptionTests {
    static let credentialProbe = """
        echo "$CREDENTIALS_DIRECTORY"; stat -c '%n %a %U %F' /run/host/credentials /run/host/credentials/* 2>&1
        cat /run/host/credentials/a /run/host/credentials/b 2>&1; (echo x > /run/host/credentials/a) 2>/dev/null || echo sealed
        """

    /// `--set-credential=` and `--load-credential=`: the files nspawn makes, where it makes them,
    /// read-only, for root; a `-u` user gets them as their own, which nspawn 252 leaves root's
    /// (unreadable by the user they are for: a deliberate difference).
    @Test func credentialsAreWhereNspawnPutsThemAndTheUsersToRead() throws {
        let scratch = try TemporaryDirectory("credentials")
        let file = scratch.appending("secret").string
        try Data("secret\n".utf8).write(to: URL(fileURLWithPath: file))
        let options = ["--set-credential=a:hello", "--load-credential=b:\(file)"]
        let ours = try inBerth(options, Self.credentialProbe), theirs = try inNspawn(options, Self.credentialProbe)
        #expect(ours.status == 0 && ours.stdout == theirs.stdout, "berth:\n\(ours)\nnspawn:\n\(theirs.stdout)")
        #expect(ours.stdout.contains("/run/host/credentials/a 400 root regular file\n") && ours.stdout.contains("hellosecret\nsealed\n"), "\(ours.stdout)")
        let user = try inBerth(options + ["-u", "alice"], Self.credentialProbe, in: Self.debian)
        #expect(user.status == 0 && user.stdout.contains("/run/host/credentials/b 400 alice regular file\n"), "\(user)")
        #expect(user.stdout.contains("hellosecret\nsealed\n"), "\(user.stdout)")
        #expect(!(try inBerth([], "echo ${CREDENTIALS_DIRECTORY-none}; ls /run/host")).stdout.contains("credentials"))
    }

    /// Credentials nspawn refuses, berth refuses: a name that is no file's, one given twice, no
    /// value, a file that is not there.
    @Test(arguments: [
        ["--set-credential=a:x", "--set-credential=a:y"], ["--set-credential=bad/id:x"], ["--set-credential=novalue"],
        ["--load-credential=c:/nonexistent/file"],
    ])
    func aCredentialNspawnRefusesIsRefused(_ options: [String]) throws {
        try aValueNspawnRefusesIsRefused(options)
    }
}

extension NspawnOptionTests {
    static let syncProbe = """
        for flag in sync dsync direct; do dd if=/dev/zero of=/tmp/f-$flag oflag=$flag bs=4096 count=1 2>&1 | grep -o 'Invalid argument' || echo "$flag opened"; done
        sync && echo synced; grep -c . /proc/self/status >/dev/null
        """

    /// `--suppress-sync=yes`, as nspawn's filter makes it: O_SYNC and O_DSYNC opens fail with
    /// EINVAL, the sync calls succeed and do nothing; without it both open. `berth shell` into a
    /// machine started so gets the same filter.
    @Test(arguments: [["--suppress-sync=yes"], ["--suppress-sync=no"]])
    func suppressSyncIsNspawns(_ options: [String]) throws {
        let ours = try inBerth(options, Self.syncProbe, in: Self.debian), theirs = try inNspawn(options, Self.syncProbe, in: Self.debian)
        #expect(ours.status == 0 && ours.stdout == theirs.stdout, "berth:\n\(ours)\nnspawn:\n\(theirs.stdout)")
        let suppressed = options == ["--suppress-sync=yes"]
        #expect(ours.stdout.hasPrefix(suppressed ? "Invalid argument\nInvalid argument\n" : "sync opened\ndsync opened\n"), "\(ours.stdout)")
        let name = "nspawn-sync-\(Hex.random(4))"
        let started = try berth(["run", "-d", "-q"] + options + ["-M", name, "-D", Self.debian, "/bin/sleep", "60"], store: Self.shared)
        #expect(started.status == 0, "\(started)")
        defer { _ = try? berth(["terminate", name], store: Self.shared) }
        let shell = try berth(["shell", name, "/bin/sh", "-c", Self.syncProbe], store: Self.shared)
        #expect(shell.status == 0 && shell.stdout == ours.stdout, "shell:\n\(shell)\nrun:\n\(ours.stdout)")
    }
}

extension NspawnOptionTests {
    /// A dropped capability is gone for root inside: making a device node (/dev/null's numbers,
    /// which the device policy allows) and giving a file away succeed with nspawn's set and fail
    /// once CAP_MKNOD and CAP_CHOWN are dropped, under berth as under nspawn. Without a user
    /// namespace, where CAP_MKNOD is the host's and a node can be made at all.
    @Test func rootCannotDoWhatADroppedCapabilityAllowed() throws {
        let attack = "touch /tmp/f; mknod /tmp/n c 1 3 2>/dev/null && echo made node; chown 65534 /tmp/f 2>/dev/null && echo gave away; echo ran"
        let kept = try inBerth(["--private-users=no"], attack)
        let dropped = try inBerth(["--private-users=no", "--drop-capability=CAP_MKNOD,CAP_CHOWN"], attack)
        #expect(kept.status == 0 && kept.stdout == "made node\ngave away\nran\n", "\(kept)")
        #expect(dropped.status == 0 && dropped.stdout == "ran\n", "\(dropped)")
        #expect(try inNspawn(["--drop-capability=CAP_MKNOD,CAP_CHOWN"], attack).stdout == dropped.stdout)
    }
}

extension NspawnOptionTests {
    /// swapoff(2), refused by nspawn's default filter (EPERM), and sethostname(2), allowed by it:
    /// root without a user namespace, as under nspawn, gets EINVAL from swapoff once the filter
    /// lets it through (/etc/passwd is no swap area).
    static let filterProbe = "swapoff /etc/passwd 2>&1; echo $?; hostname probe 2>&1; echo $?"

    /// `--system-call-filter=`, as nspawn's: calls and groups added to the default list, a `~`
    /// list refused whatever the order they come in; `berth shell` into a machine started so
    /// gets the same filter.
    @Test(arguments: [
        [],
        ["--system-call-filter=swapoff @clock", "--system-call-filter=~sethostname"],
        ["--system-call-filter=~@swap", "--system-call-filter=@swap"],
        ["--system-call-filter=@privileged"],
    ])
    func systemCallFilterIsNspawns(_ options: [String]) throws {
        let ours = try inBerth(["--private-users=no"] + options, Self.filterProbe), theirs = try inNspawn(options, Self.filterProbe)
        #expect(ours.status == 0 && ours.stdout == theirs.stdout, "berth:\n\(ours)\nnspawn:\n\(theirs.stdout)")
        let swapAllowed = options.contains { $0.hasSuffix("swapoff @clock") || $0.hasSuffix("=@privileged") }
        #expect(ours.stdout.hasPrefix(swapAllowed ? "swapoff: /etc/passwd: Invalid argument\n" : "swapoff: /etc/passwd: Operation not permitted\n"), "\(ours.stdout)")
        #expect(ours.stdout.hasSuffix(options.contains("--system-call-filter=~sethostname") ? "Operation not permitted\n1\n" : "\n0\n"), "\(ours.stdout)")
        guard !options.isEmpty else { return }
        let name = "nspawn-filter-\(Hex.random(4))"
        let started = try berth(["run", "-d", "-q", "--private-users=no"] + options + ["-M", name, "-D", tree, "/bin/sleep", "60"], store: Self.shared)
        #expect(started.status == 0, "\(started)")
        defer { _ = try? berth(["terminate", name], store: Self.shared) }
        let shell = try berth(["shell", name, "/bin/sh", "-c", Self.filterProbe], store: Self.shared)
        #expect(shell.status == 0 && shell.stdout == ours.stdout, "shell:\n\(shell)\nrun:\n\(ours.stdout)")
    }

    /// A name that is neither a call nor a group is refused in one line, before anything runs: a
    /// deliberate difference, since nspawn 252 runs the container without it (a typo in a `~`
    /// list would leave the call allowed).
    @Test(arguments: ["--system-call-filter=~sethostnme", "--system-call-filter=@nonsense"])
    func anUnknownSystemCallIsRefused(_ option: String) throws {
        let ours = try inBerth([option], "echo ran"), theirs = try inNspawn([option], "echo ran")
        #expect(theirs.stdout.contains("ran"), "nspawn 252 passes over it: \(theirs)")
        #expect(ours.status == 64 && ours.stderr.hasPrefix("berth: error: --system-call-filter names")
                && ours.stderr.split(separator: "\n").count == 1 && !ours.stdout.contains("ran"), "\(ours)")
    }
}
