import BerthTestSupport
import Foundation
import Testing

/// What a container finds of its host, beside nspawn's on the same tree: /run/host, its own
/// boot id, what of /proc is read-only.
extension NspawnOptionTests {
    /// /run/host holds what nspawn's does, read-only, each entry of the same kind and mode; the
    /// host's os-release is there. Left out: the notify socket's mode (berth's is 666, so that a
    /// `-u` user may say READY=1 too; nspawn's 755), and container-manager's text (berth names
    /// itself, as container=).
    @Test(arguments: [[String](), ["--private-network"]])
    func runHostIsNspawns(_ options: [String]) throws {
        let probe = """
            touch /run/host/x 2>/dev/null || echo read-only
            for f in /run/host/* /run/host/inaccessible/*; do [ "$f" = /run/host/notify ] && stat -c '%n %F' "$f" || stat -c '%n %a %F %t:%T' "$f"; done
            cat /run/host/os-release | head -1; [ "$(cat /run/host/container-uuid)" = "$container_uuid" ] && echo uuid
            """
        let ours = try inBerth(options, probe), theirs = try inNspawn(options, probe)
        #expect(ours.status == 0 && theirs.status == 0, "berth: \(ours)\nnspawn: \(theirs)")
        #expect(ours.stdout == theirs.stdout, "berth:\n\(ours.stdout)\nnspawn:\n\(theirs.stdout)")
        #expect(ours.stdout.hasPrefix("read-only\n") && ours.stdout.contains("/run/host/inaccessible/chr 0 character special file 0:0"))
        #expect(try inBerth(options, "cat /run/host/container-manager").stdout == "berth\n")
    }

    /// Each run has a boot id of its own, as under nspawn, which the container cannot change;
    /// /proc/fs, /proc/bus and /proc/irq are there read-only, as nspawn binds them.
    @Test func theBootIDIsTheContainersAndProcIsNspawns() throws {
        let host = try String(contentsOfFile: "/proc/sys/kernel/random/boot_id", encoding: .utf8)
        let probe = """
            cat /proc/sys/kernel/random/boot_id; (echo x > /proc/sys/kernel/random/boot_id) 2>/dev/null || echo refused
            for d in fs bus irq; do grep -q " /proc/$d ro," /proc/self/mountinfo && echo "$d ro"; done
            """
        let first = try inBerth([], probe), second = try inBerth([], probe), theirs = try inNspawn([], probe)
        let ids = [first, second, theirs].map { $0.stdout.split(separator: "\n").first.map(String.init) ?? "" }
        #expect(first.status == 0 && ids[0].count == 36 && ids[0] + "\n" != host && ids[0] != ids[1], "\(first)\n\(second)\nhost \(host)")
        #expect(first.stdout.dropFirst(37) == theirs.stdout.dropFirst(37), "berth:\n\(first.stdout)\nnspawn:\n\(theirs.stdout)")
        #expect(first.stdout.hasSuffix("refused\nfs ro\nbus ro\nirq ro\n"), "\(first.stdout)")
    }
}

extension NspawnOptionTests {
    /// What the container finds at /etc/resolv.conf and /etc/localtime, and what is left in the
    /// tree: a kind, owner and mode, the content's hash, a symlink's target, what is mounted there.
    static let hostFileProbe = """
        for f in /etc/resolv.conf /etc/localtime; do
          if [ -L $f ]; then echo "$f -> $(readlink $f)"; elif [ -e $f ]; then echo "$f $(stat -c %U:%a $f) $(md5sum < $f | cut -c1-8)"; else echo "$f none"; fi
        done
        grep -oE " /(etc|usr)/[^ ]* (ro|rw)" /proc/self/mountinfo | grep -E "resolv|localtime|zoneinfo" | sort -u
        """

    /// `--resolv-conf=` and `--timezone=`, their `auto` included, on two copies of a tree each, one
    /// run by berth and one by nspawn: busybox's tree (fresh from its fixture) has neither file; "zoned" is it with a
    /// zoneinfo of two zones, /etc/localtime a symlink to the host's zone's neighbour and
    /// resolv.conf a file of its own.
    @Test(arguments: [
        [String](), ["--private-network"], ["--read-only"], ["--resolv-conf=off"], ["--resolv-conf=delete"], ["--resolv-conf=copy-host"],
        ["--resolv-conf=replace-host"], ["--resolv-conf=bind-host"], ["--read-only", "--resolv-conf=copy-host"], ["--timezone=off"],
        ["--timezone=copy"], ["--timezone=bind"], ["--timezone=symlink"], ["--timezone=delete"], ["--read-only", "--timezone=auto"],
    ])
    func theHostsFilesComeAsNspawnBringsThem(_ options: [String]) throws {
        let hostZone = try #require(HostZone.name, "this test needs the host's /etc/localtime to be a symlink into zoneinfo")
        let scratch = try TemporaryDirectory("host-files")
        for variant in ["plain", "zoned"] {
            var listings: [String] = []
            for tool in ["berth", "nspawn"] {
                let copy = scratch.appending("\(variant)-\(tool)").string
                // From the fixture: the suite's own tree has had runs.
                try FileManager.default.createDirectory(atPath: copy, withIntermediateDirectories: false)
                #expect(try run("/bin/tar", ["-xf", Fixtures.busybox, "-C", copy]).status == 0)
                if variant == "zoned" {
                    for zone in [hostZone, "Etc/Zoned"] {
                        let file = "\(copy)/usr/share/zoneinfo/\(zone)"
                        try FileManager.default.createDirectory(atPath: (file as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
                        try Data("TZif \(zone)\n".utf8).write(to: URL(fileURLWithPath: file))
                    }
                    try FileManager.default.createSymbolicLink(atPath: "\(copy)/etc/localtime", withDestinationPath: "../usr/share/zoneinfo/Etc/Zoned")
                    try Data("nameserver 192.0.2.1\n".utf8).write(to: URL(fileURLWithPath: "\(copy)/etc/resolv.conf"))
                }
                let result = tool == "berth" ? try inBerth(options, Self.hostFileProbe, in: copy) : try inNspawn(options, Self.hostFileProbe, in: copy)
                #expect(result.status == 0, "\(tool) \(variant): \(result)")
                let left = try run("/bin/sh", ["-c", "cd \(copy) && find etc usr/share/zoneinfo -name resolv.conf -o -name localtime -o -type f -path '*zoneinfo*' | sort | xargs -r stat -c '%n %F %s %N'"])
                listings.append(result.stdout + "--\n" + left.stdout)
            }
            #expect(listings[0] == listings[1], "\(variant):\nberth:\n\(listings[0])\nnspawn:\n\(listings[1])")
        }
    }

    /// A hostile image's /etc/resolv.conf that is a FIFO (whose open would wait for ever) or a
    /// symlink out of the tree is left as it is: the container starts, nothing of the host's is
    /// written through it.
    @Test func aResolvConfThatIsNoPlainFileIsLeftAlone() throws {
        let scratch = try TemporaryDirectory("host-files-hostile")
        for kind in ["fifo", "symlink"] {
            let root = scratch.appending(kind).string
            try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: false)
            #expect(try run("/bin/tar", ["-xf", Fixtures.busybox, "-C", root]).status == 0)
            let outside = scratch.appending("outside-\(kind)").string
            try Data("untouched\n".utf8).write(to: URL(fileURLWithPath: outside))
            if kind == "fifo" { #expect(mkfifo("\(root)/etc/resolv.conf", 0o644) == 0) }
            else { try FileManager.default.createSymbolicLink(atPath: "\(root)/etc/resolv.conf", withDestinationPath: "../../../../..\(outside)") }
            let result = try inBerth(["--resolv-conf=copy-host"], "echo ran", in: root)
            #expect(result.status == 0 && result.stdout == "ran\n", "\(kind): \(result)")
            #expect(try String(contentsOfFile: outside, encoding: .utf8) == "untouched\n")
        }
    }

    /// The host's zone, as its /etc/localtime names it.
    enum HostZone {
        static var name: String? {
            guard let link = try? FileManager.default.destinationOfSymbolicLink(atPath: "/etc/localtime") else { return nil }
            return link.components(separatedBy: "zoneinfo/").dropFirst().first
        }
    }

    /// Modes nspawn does not know are refused, in one line.
    @Test(arguments: [["--resolv-conf=copy"], ["--resolv-conf=bind-elsewhere"], ["--resolv-conf="], ["--timezone=link"], ["--timezone="]])
    func aHostFileModeNspawnRefusesIsRefused(_ options: [String]) throws {
        try aValueNspawnRefusesIsRefused(options)
    }
}
