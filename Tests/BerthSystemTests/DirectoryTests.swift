import BerthSystem
import BerthTestSupport
import Glibc
import SystemPackage
import Testing

@Suite struct DirectoryTests {
    /// root/{a/, link -> outside, up -> ..}, and outside/secret beside root.
    private func tree() throws -> (TemporaryDirectory, Directory) {
        let tmp = try TemporaryDirectory("directory")
        let made = try shell("""
            set -e; cd '\(tmp.string)'; mkdir -p root/a outside; echo secret > outside/secret
            ln -s '\(tmp.string)/outside' root/link; ln -s .. root/up
            """)
        #expect(made.status == 0, "\(made)")
        return (tmp, try Directory(opening: tmp.appending("root")))
    }

    @Test(arguments: [("link", Errno.tooManySymbolicLinkLevels), ("link/", .tooManySymbolicLinkLevels),
                      ("up/outside", .tooManySymbolicLinkLevels), ("a/../..", .improperLink),
                      ("../outside", .improperLink), ("/etc", .improperLink)] as [(String, Errno)])
    func openBeneathNeverLeavesTheTree(_ path: String, _ expected: Errno) throws {
        let (tmp, root) = try tree()
        defer { withExtendedLifetime(tmp) {} }
        let error = #expect(throws: SystemError.self) { try root.openDirectory(beneath: FilePath(path)) }
        // O_NOFOLLOW on a final symlink reports ENOTDIR or ELOOP; either way nothing was opened.
        let allowed: Set<Errno> = expected == .tooManySymbolicLinkLevels ? [.tooManySymbolicLinkLevels, .notDirectory] : [expected]
        #expect(error.map { allowed.contains($0.errno) } == true, "\(String(describing: error))")
    }

    @Test func openBeneathOpensWhatIsInside() throws {
        let (tmp, root) = try tree()
        defer { withExtendedLifetime(tmp) {} }
        let a = try root.openDirectory(beneath: "a")
        #expect(try a.descriptor.status().kind == .directory)
    }

    @Test func removeTreeRemovesSymlinksWithoutFollowing() throws {
        let (tmp, _) = try tree()
        let parent = try Directory(opening: tmp.path)
        try parent.removeTree("root")
        #expect(try parent.status("root") == nil)
        #expect(try readFile(tmp.appending("outside/secret")) == Array("secret\n".utf8))
    }

    @Test func removeTreeRefusesToEmptyAMountPoint() throws {
        let (tmp, _) = try tree()
        let mountPoint = tmp.appending("root/a").string
        #expect(try shell("mount -t tmpfs berth-test '\(mountPoint)' && echo kept > '\(mountPoint)/file'").status == 0)
        defer { _ = try? shell("umount '\(mountPoint)'") }
        let error = #expect(throws: SystemError.self) { try Directory(opening: tmp.path).removeTree("root") }
        #expect(error?.errno == .resourceBusy)
        #expect(try readFile(tmp.appending("root/a/file")) == Array("kept\n".utf8))
    }

    @Test func renameModes() throws {
        let tmp = try TemporaryDirectory("rename")
        let dir = try Directory(opening: tmp.path)
        try writeFile(tmp.appending("x"), "x")
        try writeFile(tmp.appending("y"), "y")
        let error = #expect(throws: SystemError.self) { try dir.rename("x", to: "y", .noReplace) }
        #expect(error?.errno == .fileExists)
        try dir.rename("x", to: "y", .exchange)
        #expect(try readFile(tmp.appending("y")) == Array("x".utf8))
        #expect(try readFile(tmp.appending("x")) == Array("y".utf8))
    }

    @Test func extendedAttributesOnFilesAndSymlinks() throws {
        let tmp = try TemporaryDirectory("xattr")
        let dir = try Directory(opening: tmp.path)
        try writeFile(tmp.appending("f"), "f")
        try dir.makeSymlink("l", target: "f")
        let value: [UInt8] = [1, 2, 3]
        try value.withUnsafeBytes { try dir.setExtendedAttribute("trusted.berth", of: "l", $0) }
        try value.withUnsafeBytes { try dir.openFile("f", O_RDONLY).setExtendedAttribute("user.berth", $0) }
        #expect(try dir.extendedAttributeNames(of: "l") == ["trusted.berth"])
        #expect(try dir.extendedAttribute("trusted.berth", of: "l") == value)
        // The symlink's attribute is its own, not its target's.
        #expect(try dir.extendedAttributeNames(of: "f") == ["user.berth"])
    }

    @Test func diskUsageCountsHardLinksOnce() throws {
        let tmp = try TemporaryDirectory("usage")
        #expect(try shell("cd '\(tmp.string)' && mkdir t && head -c 1048576 /dev/urandom > t/a && ln t/a t/b").status == 0)
        let usage = try Directory(opening: tmp.path).diskUsage("t")
        #expect(usage >= 1 << 20 && usage < 1 << 20 + 64 << 10, "\(usage)")
    }

    @Test func locksConflictBetweenDescriptors() throws {
        let tmp = try TemporaryDirectory("lock")
        let first = try Descriptor.open(tmp.path, O_RDONLY | O_DIRECTORY)
        let second = try Descriptor.open(tmp.path, O_RDONLY | O_DIRECTORY)
        #expect(try first.lock(.shared, wait: false))
        #expect(try second.lock(.shared, wait: false))
        #expect(try !second.lock(.exclusive, wait: false))
        first.unlock()
        #expect(try second.lock(.exclusive, wait: false))
    }
}
