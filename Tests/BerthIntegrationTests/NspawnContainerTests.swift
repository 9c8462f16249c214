import BerthTestSupport
import Foundation
import Testing

/// What a container finds of its host, beside nspawn's on the same tree: /run/host, its own
/// boot id, what of /proc is read-only.
extension NspawnOptionTests {
    /// /run/host holds what nspawn's does, read-only, each entry of the same kind and mode; the
    /// host's os-release is there. Left out: the notify socket (berth gives one to a machine in
    /// the background only), and container-manager's text (berth names itself, as container=).
    @Test(arguments: [[String](), ["--private-network"]])
    func runHostIsNspawns(_ options: [String]) throws {
        let probe = """
            touch /run/host/x 2>/dev/null || echo read-only
            for f in /run/host/* /run/host/inaccessible/*; do [ "$f" = /run/host/notify ] || stat -c '%n %a %F %t:%T' "$f"; done
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
            cat /proc/sys/kernel/random/boot_id; echo x > /proc/sys/kernel/random/boot_id 2>/dev/null || echo refused
            for d in fs bus irq; do grep -q " /proc/$d ro," /proc/self/mountinfo && echo "$d ro"; done
            """
        let first = try inBerth([], probe), second = try inBerth([], probe), theirs = try inNspawn([], probe)
        let ids = [first, second, theirs].map { $0.stdout.split(separator: "\n").first.map(String.init) ?? "" }
        #expect(first.status == 0 && ids[0].count == 36 && ids[0] + "\n" != host && ids[0] != ids[1], "\(first)\n\(second)\nhost \(host)")
        #expect(first.stdout.dropFirst(37) == theirs.stdout.dropFirst(37), "berth:\n\(first.stdout)\nnspawn:\n\(theirs.stdout)")
        #expect(first.stdout.hasSuffix("refused\nfs ro\nbus ro\nirq ro\n"), "\(first.stdout)")
    }
}
