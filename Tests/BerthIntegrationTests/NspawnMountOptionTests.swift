import BerthSystem
import BerthTestSupport
import Foundation
import Testing

/// nspawn's mount options beside nspawn's, each on a fresh busybox tree of its own: `--tmpfs=`,
/// binds from the tree itself (`+PATH`), `\:` in a path, a destination through a symlink of
/// the image (followed inside it); and `--inaccessible=`, which nspawn 252 cannot do on a host
/// without systemd (it binds /run/systemd/inaccessible, which systemd makes), checked on its own.
extension NspawnOptionTests {
    /// A fresh busybox tree with a symlink /lnk to /srv/real and a directory /data holding x.
    func freshTree(_ name: String, in scratch: TemporaryDirectory) throws -> String {
        let root = scratch.appending(name).string
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: false)
        #expect(try run("/bin/tar", ["-xf", Fixtures.busybox, "-C", root]).status == 0)
        try FileManager.default.createDirectory(atPath: "\(root)/srv/real", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: "\(root)/data", withIntermediateDirectories: true)
        try Data("d\n".utf8).write(to: URL(fileURLWithPath: "\(root)/data/x"))
        try FileManager.default.createSymbolicLink(atPath: "\(root)/lnk", withDestinationPath: "/srv/real")
        return root
    }

    static let mountProbe = """
        for p in /mnt/t /lnk /srv/real /srv/real/in /mnt/in /mnt/c:d; do [ -e $p ] && echo "$p $(stat -c '%F %a %U' $p)"; done
        grep -E " /(mnt|srv|data)" /proc/self/mountinfo | cut -d' ' -f5,6 | sed 's/,idmapped//'
        ls /mnt/in /mnt/c:d /srv/real/in 2>&1; touch /mnt/t/x 2>/dev/null && echo wrote; touch /mnt/in/y 2>/dev/null && echo wrote in; true
        """

    @Test(arguments: [
        ["--tmpfs=/mnt/t"], ["--tmpfs=/mnt/t:mode=1777,size=1m"], ["--tmpfs=/lnk"], ["--bind=SRC:/lnk/in"], ["--bind=+/data:/mnt/in"],
        ["--bind-ro=+/data:/mnt/in"], ["--bind=COLON:/mnt/c\\:d"], ["--bind=+/data:/mnt/in:norbind", "--tmpfs=/mnt/t"],
        ["--bind=:/mnt/t"], ["--bind-ro=:/mnt/t"],
    ])
    func aMountOptionGivesWhatNspawnGives(_ options: [String]) throws {
        let scratch = try TemporaryDirectory("mount-options")
        let source = scratch.appending("src").string, colon = scratch.appending("c:d").string
        for directory in [source, colon] { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false) }
        try Data("hi\n".utf8).write(to: URL(fileURLWithPath: "\(source)/f"))
        try Data("colon\n".utf8).write(to: URL(fileURLWithPath: "\(colon)/g"))
        let given = options.map {
            $0.replacingOccurrences(of: "SRC", with: source).replacingOccurrences(of: "COLON", with: colon.replacingOccurrences(of: ":", with: "\\:"))
        }
        let ours = try inBerth(given, Self.mountProbe, in: freshTree("berth", in: scratch))
        let theirs = try inNspawn(given, Self.mountProbe, in: freshTree("nspawn", in: scratch))
        #expect(ours.status == 0 && theirs.status == 0, "berth: \(ours)\nnspawn: \(theirs)")
        #expect(ours.stdout == theirs.stdout, "berth:\n\(ours.stdout)\nnspawn:\n\(theirs.stdout)")
        #expect(ours.stdout.contains(" /mnt/") || ours.stdout.contains(" /srv/real"), "\(ours.stdout)")
    }

    /// `--bind=:DST`: a fresh directory of the host's, under /var/tmp as nspawn makes it, gone
    /// with what the container wrote there once the container ends, as it is under nspawn.
    @Test func anEmptyBindSourceIsAFreshDirectoryGoneAfterTheRun() throws {
        let scratch = try TemporaryDirectory("mount-empty-source")
        func made() throws -> Set<String> { Set(try FileManager.default.contentsOfDirectory(atPath: "/var/tmp").filter { $0.hasPrefix("berth-bind-") }) }
        let before = try made()
        let probe = "ls -A /mnt/fresh; echo data > /mnt/fresh/f && echo wrote; ls /var/tmp 2>/dev/null | grep -c berth-bind; true"
        let ours = try inBerth(["--bind=:/mnt/fresh"], probe, in: freshTree("tree", in: scratch))
        #expect(ours.status == 0 && ours.stdout == "wrote\n0\n", "\(ours)")
        let after = try made()
        #expect(after == before, "left behind: \(after.subtracting(before))")
        let refused = try inBerth(["--bind=:"], "echo ran", in: freshTree("tree2", in: scratch))
        #expect(refused.status == 64 && refused.stderr.hasPrefix("berth: error: --bind") && !refused.stdout.contains("ran"), "\(refused)")
    }

    /// The fresh directory's removal never leaves it: root inside fills it with symlinks to a
    /// directory of the host's (by its host path, which it may guess), directly and deeper down,
    /// and swaps a directory for one while the container ends; the host's files stay, and the
    /// fresh directory goes all the same.
    @Test(arguments: [[String](), ["--private-users=no"]])
    func removingTheFreshDirectoryFollowsNoSymlinkOutOfIt(_ options: [String]) throws {
        let scratch = try TemporaryDirectory("mount-empty-symlinks")
        let host = try TemporaryDirectory("mount-empty-host", base: "/var/tmp")
        let keep = host.appending("keep").string
        try "the host's".write(toFile: keep, atomically: false, encoding: .utf8)
        func made() throws -> Set<String> { Set(try FileManager.default.contentsOfDirectory(atPath: "/var/tmp").filter { $0.hasPrefix("berth-bind-") }) }
        let before = try made()
        let attack = """
            cd /mnt/fresh && ln -s \(host.string) link && ln -s \(keep) file && mkdir -p deep/er && ln -s \(host.string) deep/er/link
            mkdir swap && (trap '' TERM; while :; do mv swap swapped 2>/dev/null; ln -sfn \(host.string) swap; rm -f swap; mv swapped swap 2>/dev/null; done) &
            echo attack-ran
            """
        let ours = try inBerth(options + ["--bind=:/mnt/fresh"], attack, in: freshTree("tree", in: scratch))
        #expect(ours.status == 0 && ours.stdout.contains("attack-ran"), "\(ours)")
        #expect(try String(contentsOfFile: keep, encoding: .utf8) == "the host's", "the removal reached the host's file")
        let left = try FileManager.default.contentsOfDirectory(atPath: host.string)
        #expect(left == ["keep"], "the host's directory now holds \(left)")
        let after = try made()
        #expect(after == before, "left behind: \(after.subtracting(before))")
    }

    /// A symlink of the image never takes a mount out of the tree: one climbing past the root
    /// to a directory of the host's lands in the tree's own directory of that path (what the
    /// container would find), never in the host's.
    @Test func aDestinationThroughASymlinkStaysInTheTree() throws {
        let scratch = try TemporaryDirectory("mount-symlink")
        let root = try freshTree("tree", in: scratch)
        // Beside the tree's /var/tmp, not /tmp: the container's /tmp is a fresh tmpfs.
        let host = try TemporaryDirectory("mount-symlink-host", base: "/var/tmp")
        let outside = host.appending("outside").string
        for directory in [outside, root + outside] { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) }
        try FileManager.default.createSymbolicLink(atPath: "\(root)/escape", withDestinationPath: "../../../../../..\(outside)")
        let result = try inBerth(["--tmpfs=/escape/t"], "grep -c ' /escape\\| /.*outside/t ' /proc/self/mountinfo; echo ran", in: root)
        #expect(result.status == 0 && result.stdout.hasSuffix("ran\n"), "\(result)")
        #expect((try FileManager.default.contentsOfDirectory(atPath: outside)).isEmpty, "a mount point was made outside the tree")
        #expect(FileManager.default.fileExists(atPath: "\(root)\(outside)/t"), "the symlink did not resolve inside the tree")
    }

    /// `--inaccessible=`: a directory and a file covered by mode-0 entries, read-only, that root
    /// in the container can neither read nor change; a path the image lacks is refused.
    @Test func anInaccessiblePathCannotBeReachedFromInside() throws {
        let scratch = try TemporaryDirectory("inaccessible")
        let root = try freshTree("tree", in: scratch)
        let probe = """
            stat -c '%n %a %F' /data /data/x 2>&1 | sed 's/.*can.t stat/cannot stat/'; cat /data/x 2>/dev/null || echo unreadable
            touch /data/y 2>/dev/null || echo unwritable; cat /etc/hostname; echo ran
            """
        try Data("box\n".utf8).write(to: URL(fileURLWithPath: "\(root)/etc/hostname"))
        let result = try inBerth(["--inaccessible=/data", "--inaccessible=/etc/hostname"], probe, in: root)
        #expect(result.status == 0, "\(result)")
        #expect(result.stdout.hasPrefix("/data 0 directory\n"), "\(result.stdout)")
        // Root reads past a mode of 0, but what it finds is the empty cover, not the image's file.
        #expect(result.stdout.contains("unreadable\nunwritable\nran\n") && !result.stdout.contains("box"), "\(result.stdout)")
        #expect(try String(contentsOfFile: "\(root)/data/x", encoding: .utf8) == "d\n", "the image's file changed")
        let missing = try inBerth(["--inaccessible=/nope"], "echo ran", in: root)
        #expect(missing.status != 0 && !missing.stdout.contains("ran") && missing.stderr.contains("--inaccessible=/nope"), "\(missing)")
    }

    /// What nspawn refuses of the mount options, berth refuses too, in one line.
    @Test(arguments: [["--tmpfs=rel"], ["--tmpfs="], ["--bind=rel:/x"], ["--inaccessible=rel"], ["--bind=+rel:/x"]])
    func aMountValueNspawnRefusesIsRefused(_ options: [String]) throws {
        try aValueNspawnRefusesIsRefused(options)
    }
}

extension NspawnOptionTests {
    /// `--link-journal=` and `-j` beside nspawn's, each tool on a fresh busybox tree of its own
    /// with the same machine id: what the container finds in /var/log/journal, what the tree
    /// holds after, and what the host's /var/log/journal/ID is (a symlink into the tree, a
    /// directory holding what the container wrote there, or nothing). The host's entry goes
    /// after each run, whichever tool made it.
    @Test(arguments: [[], ["--link-journal=no"], ["--link-journal=auto"], ["--link-journal=guest"], ["-j"],
                      ["--link-journal=host"], ["--link-journal=try-host"]])
    func linkJournalIsNspawns(_ options: [String]) throws {
        let scratch = try TemporaryDirectory("link-journal")
        let id = Hex.random(32)
        let host = "/var/log/journal/\(id)"
        func removeHostEntry() { _ = try? FileManager.default.removeItem(atPath: host) }
        defer { removeHostEntry() }
        let probe = "ls -A /var/log/journal 2>&1; touch /var/log/journal/\(id)/written 2>/dev/null && echo wrote; true"
        func outcome(_ result: CommandResult, tree: String) throws -> String {
            var seen = result.stdout + "status \(result.status)\n"
            seen += "tree: " + ((try? FileManager.default.contentsOfDirectory(atPath: "\(tree)/var/log/journal").sorted().joined(separator: ",")) ?? "none") + "\n"
            if let target = try? FileManager.default.destinationOfSymbolicLink(atPath: host) {
                seen += "host: symlink to " + target.replacingOccurrences(of: tree, with: "TREE") + "\n"
            } else if let entries = try? FileManager.default.contentsOfDirectory(atPath: host) {
                seen += "host: directory holding \(entries.sorted())\n"
            }
            removeHostEntry()
            return seen
        }
        let ourTree = try freshTree("berth", in: scratch), theirTree = try freshTree("nspawn", in: scratch)
        let ours = try outcome(inBerth(["--uuid=\(id)"] + options, probe, in: ourTree), tree: ourTree)
        let theirs = try outcome(inNspawn(["--uuid=\(id)"] + options, probe, in: theirTree), tree: theirTree)
        #expect(ours == theirs, "berth:\n\(ours)\nnspawn:\n\(theirs)")
        #expect(ours.contains("status 0"), "\(ours)")
    }

    @Test func aLinkJournalModeNspawnRefusesIsRefused() throws {
        try aValueNspawnRefusesIsRefused(["--link-journal=sideways"])
    }
}

extension NspawnOptionTests {
    /// What the root holds and which of it takes a write, and that the image keeps none of it.
    static let volatileProbe = """
        for p in /*; do echo "$p $(stat -c '%F %a' $p) $(readlink $p)"; done
        sed -nE 's,^[^ ]+ [^ ]+ [^ ]+ [^ ]+ (/|/usr|/var) .* - ([^ ]+) .*,\\1 \\2,p' /proc/self/mountinfo
        for p in /etc /var /usr; do touch $p/volatile-probe 2>/dev/null && echo "wrote $p"; done; ls -A /var | head -n 3
        test -s /etc/resolv.conf && echo resolv.conf; test -e /etc/localtime && echo localtime
        """

    /// `--volatile=`, as nspawn's, on the Debian tree (whose /bin, /sbin and /lib are in /usr):
    /// yes, a tmpfs root with the image's /usr read-only; state, a tmpfs /var over the read-only
    /// image; overlay, a tmpfs layer over all of it; and none of their writes reach the image.
    @Test(arguments: [["--volatile=yes"], ["--volatile"], ["--volatile=state"], ["--volatile=overlay"], ["--volatile=no"]])
    func volatileIsNspawns(_ options: [String]) throws {
        let ours = try inBerth(options, Self.volatileProbe, in: Self.debian)
        let theirs = try inNspawn(options, Self.volatileProbe, in: Self.debian)
        #expect(ours.status == 0 && ours.stdout == theirs.stdout, "berth:\n\(ours)\nnspawn:\n\(theirs.stdout)")
        let volatile = options != ["--volatile=no"]
        for place in ["etc", "var", "usr"] {
            let probe = "\(Self.debian)/\(place)/volatile-probe"
            #expect(!volatile || !FileManager.default.fileExists(atPath: probe), "\(place) kept a volatile write")
            try? FileManager.default.removeItem(atPath: probe)  // --volatile=no's, which the image keeps
        }
        #expect(ours.stdout.contains(volatile ? "/ " : "wrote /etc"), "\(ours.stdout)")
    }

    /// An image whose /bin is its own (busybox's) cannot run with --volatile=yes, under either.
    @Test func volatileYesNeedsAMergedUsr() throws {
        let ours = try inBerth(["--volatile=yes"], "echo ran"), theirs = try inNspawn(["--volatile=yes"], "echo ran")
        #expect(!theirs.stdout.contains("ran") && theirs.status != 0, "\(theirs)")
        #expect(ours.status != 0 && !ours.stdout.contains("ran") && ours.stderr.contains("--volatile=yes needs")
                && ours.stderr.split(separator: "\n").count == 1, "\(ours)")
    }
}

extension NspawnOptionTests {
    /// `--template=DIR`: a missing -D directory is made a copy of DIR, as nspawn makes it (the
    /// same entries, owners, modes, sizes and links), then run; an existing one is run as it is;
    /// nothing is left beside it.
    @Test func aTemplateMakesTheMissingDirectoryAsNspawnDoes() throws {
        let scratch = try TemporaryDirectory("template")
        let template = try freshTree("template", in: scratch)
        let ours = scratch.appending("ours").string, theirs = scratch.appending("theirs").string
        let first = try inBerth(["--template=\(template)"], "cat /data/x", in: ours)
        #expect(first.status == 0 && first.stdout == "d\n", "\(first)")
        #expect(try inNspawn(["--template=\(template)"], "cat /data/x", in: theirs).stdout == "d\n")
        func listing(_ root: String) throws -> String { try shell("cd '\(root)' && find . -printf '%p %M %u %g %s %l\\n' | sort").stdout }
        let (made, nspawnMade) = (try listing(ours), try listing(theirs))
        #expect(made == nspawnMade && made.contains("./data/x -rw-r--r-- root root 2"), "berth:\n\(made)\nnspawn:\n\(nspawnMade)")
        // Made once: a second run finds it, and what the first wrote.
        try Data("mine\n".utf8).write(to: URL(fileURLWithPath: "\(ours)/data/x"))
        #expect(try inBerth(["--template=\(template)"], "cat /data/x", in: ours).stdout == "mine\n")
        let left = try FileManager.default.contentsOfDirectory(atPath: scratch.string).filter { $0.hasPrefix(".#") }
        #expect(left.isEmpty, "left beside it: \(left)")
        let refused = try berth(["run", "-q", "--template=\(template)", "-M", "bb", "/bin/true"], store: Self.shared)
        #expect(refused.status == 64 && refused.stderr.contains("berth clone"), "\(refused)")
    }
}

extension NspawnOptionTests {
    /// `--overlay=` and `--overlay-ro=` beside nspawn's, each tool with a fresh tree and fresh host
    /// directories of its own: what the container sees at the destination, whether it may write
    /// there, and where a write lands (the writable layer, never a lower one, nor the tree; a
    /// fresh layer is gone after the run with nothing left under /var/tmp).
    @Test(arguments: [["--overlay=LOW:UP:/mnt/o"], ["--overlay-ro=LOW:UP:/mnt/o"], ["--overlay=+/data::/mnt/o"],
                      ["--overlay=+/data:LOW::/mnt/o"], ["--overlay=LOW:UP"], ["--overlay=LOW:+/data:/mnt/o"]])
    func anOverlayIsNspawns(_ options: [String]) throws {
        func made() throws -> Set<String> { Set(try FileManager.default.contentsOfDirectory(atPath: "/var/tmp").filter { $0.hasPrefix("berth-") }) }
        let before = try made()
        var seen: [String] = []
        for tool in ["berth", "nspawn"] {
            // Under /var/tmp: a destination under /tmp would be in the container's own /tmp.
            let scratch = try TemporaryDirectory("overlay-\(tool)", base: "/var/tmp")
            let low = scratch.appending("low").string, up = scratch.appending("up").string
            for (directory, file) in [(low, "from-low"), (up, "from-up")] {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false)
                try Data("\(file)\n".utf8).write(to: URL(fileURLWithPath: "\(directory)/\(file)"))
            }
            let given = options.map { $0.replacingOccurrences(of: "LOW", with: low).replacingOccurrences(of: "UP", with: up) }
            let destination = options == ["--overlay=LOW:UP"] ? up : "/mnt/o"
            let probe = "ls \(destination) | sort; touch \(destination)/new 2>/dev/null && echo wrote; true"
            let tree = try freshTree("tree", in: scratch)
            // nspawn 252 cannot make an overlay's mount point (berth can): it is there for both.
            try FileManager.default.createDirectory(atPath: tree + destination, withIntermediateDirectories: true)
            let result = tool == "berth" ? try inBerth(given, probe, in: tree) : try inNspawn(given, probe, in: tree)
            let upper = (try? FileManager.default.contentsOfDirectory(atPath: up).sorted()) ?? []
            let lower = (try? FileManager.default.contentsOfDirectory(atPath: low).sorted()) ?? []
            let data = (try? FileManager.default.contentsOfDirectory(atPath: "\(tree)/data").sorted()) ?? []
            let leftInTree = ((try? FileManager.default.contentsOfDirectory(atPath: tree)) ?? []).filter { $0.hasPrefix(".#") }
            seen.append("status \(result.status)\n\(result.stdout)up \(upper.filter { !$0.hasPrefix(".#") })\nlow \(lower)\ndata \(data)\nleft \(leftInTree)\n")
        }
        #expect(seen[0] == seen[1], "berth:\n\(seen[0])\nnspawn:\n\(seen[1])")
        #expect(seen[0].hasPrefix("status 0\n"), "\(seen[0])")
        let after = try made()
        #expect(after.isSubset(of: before), "left under /var/tmp: \(after.subtracting(before))")
    }
}
