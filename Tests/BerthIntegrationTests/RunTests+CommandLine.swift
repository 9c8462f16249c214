import BerthSystem
import BerthTestSupport
import Foundation
import SystemPackage
import Testing

/// `berth run`'s command line, read as nspawn's, over RunTests' Debian image.
extension RunTests {
    /// Run's command line is read as nspawn's getopt reads it: options first, in any of their
    /// spellings, and everything from the command on belongs to the command.
    @Test(arguments: [
        (["-qM", "deb", "/bin/echo", "-q", "--help"], "-q --help\n"),
        (["--quiet", "--machine=deb", "--setenv=A=1", "/bin/sh", "-c", "echo $A"], "1\n"),
        (["-qEA=2", "-Mdeb", "--", "/bin/sh", "-c", "echo $A"], "2\n"),
        (["-q", "-M", "deb", "--store", "STORE", "--read-only", "/bin/sh", "-c", "touch /x 2>/dev/null || echo ro"], "ro\n"),
        (["--store=STORE", "run", "-q", "--hostname", "h", "-M", "deb", "/bin/hostname"], "h\n"),
    ] as [([String], String)])
    func theCommandLineReadsAsNspawnsDoes(_ arguments: [String], _ expected: String) throws {
        // Where a case places --store itself (STORE), it is the only one.
        let store = Self.shared.appending("store").string
        let result = arguments.contains(where: { $0.contains("STORE") })
            ? try run(berthBinary, arguments.map { $0.replacingOccurrences(of: "STORE", with: store) })
            : try berth(arguments, store: Self.shared)
        #expect(result.status == 0 && result.stdout == expected, "\(result)")
    }

    @Test func badRunLinesGetOneLineAndHelpListsTheOptions() throws {
        for (arguments, expected) in [
            (["run", "--bogus", "-M", "deb"], "unknown option '--bogus' (see 'berth run --help')"),
            (["-qz", "-M", "deb"], "unknown option '-z'"),
            (["run", "-q", "-M"], "-M needs a value"),
            (["--read-only=yes", "-M", "deb"], "--read-only takes no value"),
            (["boot", "-D", image], "boot takes the image's name"),
            (["boot", "-q"], "boot needs the name of an image"),
        ] {
            expectCleanFailure(try berth(arguments, store: Self.shared), expected)
        }
        for arguments in [["run", "--help"], ["help", "run"], ["boot", "-h"]] {
            let help = try run(berthBinary, arguments)
            #expect(help.status == 0 && help.stdout.contains("--bind-ro SRC[:DST") && help.stdout.contains("berth boot"), "\(help)")
        }
        let root = try run(berthBinary, ["--help"])
        #expect(root.status == 0 && root.stdout.contains("run ") && root.stdout.contains("clone "), "\(root)")
    }
}
