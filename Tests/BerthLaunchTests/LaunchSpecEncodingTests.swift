@testable import BerthLaunch
import BerthSystem
import Testing

/// The launch description crosses from the supervisor to the container's first process as
/// NUL-separated key/value pairs. What the first process reads must be what the supervisor
/// meant, and bytes that are not a whole description must be refused, never half-read.
@Suite struct LaunchSpecEncodingTests {
    /// A description with every field the first process reads set away from its default.
    static func full() -> LaunchSpec {
        let tree = RootTree(root: "/var/lib/machines/deb", lowerLayers: ["/store/layers/top", "/store/layers/middle", "/store/layers/base"],
                            upper: RootTree.WritableLayer(layer: "/store/layers/upper", work: "/store/layers/work"))
        var spec = LaunchSpec(tree: tree, machineName: "deb", uuid: "0123456789abcdef0123456789abcdef", term: "xterm-256color")
        spec.hostname = "host.example"
        spec.arguments = ["/bin/sh", "-c", "echo 'a b' = \"c\"", "", "--", "-x"]
        spec.boot = true
        spec.asPID2 = true
        spec.readOnly = true
        spec.ephemeral = true
        spec.privateNetwork = true
        spec.environment = ["A=1", "EMPTY=", "WITH=EQUALS=SIGN", "UTF8=ünïcødé"]
        var writable = LaunchSpec.BindMount(source: "/srv/data", destination: "/data", readOnly: false)
        writable.recursive = false
        var readOnly = LaunchSpec.BindMount(source: "/srv/ro dir", destination: "/mnt/ro", readOnly: true)
        readOnly.idmap = false
        spec.bindMounts = [writable, readOnly, LaunchSpec.BindMount(source: "/a", destination: "/a", readOnly: true)]
        spec.workingDirectory = "/home/user"
        spec.user = "user"
        spec.consoleStreams = [0, 2]
        spec.descriptorRoles = ["root-target", "root", "dev", "bind", "bind", "bind", "console", "init"]
        return spec
    }

    /// What the supervisor keeps to itself: it acts on them before the first process reads
    /// the description (binds are mapped and made recursive or not on the host, the user
    /// namespace and console are made there, the banner is printed there), so they do not cross.
    static func crossing(_ spec: LaunchSpec) -> LaunchSpec {
        var spec = spec
        spec.privateUsers = .pick
        spec.consoleMode = .automatic
        spec.quiet = false
        spec.displayRoot = nil
        for i in spec.bindMounts.indices {
            spec.bindMounts[i].recursive = true
            spec.bindMounts[i].idmap = true
        }
        return spec
    }

    @Test func everyFieldTheFirstProcessReadsRoundTrips() throws {
        let spec = Self.full()
        let decoded = try #require(LaunchSpec(decoding: try spec.encoded()))
        #expect(decoded == Self.crossing(spec))
        #expect(decoded.bindMounts.map(\.readOnly) == [false, true, true])
        #expect(decoded.consoleStreams == [0, 2])
        #expect(decoded.descriptorRoles == spec.descriptorRoles)
    }

    @Test func theDefaultsRoundTrip() throws {
        let spec = LaunchSpec(tree: RootTree(root: "/"), machineName: "m", uuid: "u", term: "dumb")
        #expect(LaunchSpec(decoding: try spec.encoded()) == spec)
        let decoded = try #require(LaunchSpec(decoding: try spec.encoded()))
        #expect(decoded.tree.upper == nil && decoded.workingDirectory == nil && decoded.user == nil)
        #expect(decoded.bindMounts.isEmpty && decoded.arguments.isEmpty && !decoded.boot)
    }

    @Test func whatTheSupervisorKeepsDoesNotCross() throws {
        var spec = Self.full()
        spec.privateUsers = .off
        spec.consoleMode = .pipe
        spec.quiet = true
        spec.displayRoot = "/shown"
        let decoded = try #require(LaunchSpec(decoding: try spec.encoded()))
        #expect(decoded == Self.crossing(spec))
        #expect(decoded != spec)
    }

    /// A writable layer comes with its work directory, or the description is damaged.
    @Test func anUpperLayerWithoutItsWorkDirectoryIsRefused() throws {
        let fields = Self.required.map { ($0, "/v") } + [("work", "/work")]
        #expect(LaunchSpec(decoding: Self.bytes(fields)) == nil)
        let both = Self.required.map { ($0, "/v") } + [("upper", "/upper"), ("work", "/work")]
        #expect(try #require(LaunchSpec(decoding: Self.bytes(both))).tree.upper == RootTree.WritableLayer(layer: "/upper", work: "/work"))
    }

    // MARK: Hostile bytes

    private static func bytes(_ fields: [(String, String)]) -> [UInt8] {
        fields.flatMap { Array($0.0.utf8) + [0] + Array($0.1.utf8) + [0] }
    }

    static let required = ["root", "machine", "hostname", "uuid", "term"]

    @Test(arguments: required)
    func aMissingRequiredKeyIsRefused(_ missing: String) {
        let fields = Self.required.filter { $0 != missing }.map { ($0, "x") }
        #expect(LaunchSpec(decoding: Self.bytes(fields)) == nil)
    }

    @Test func theRequiredKeysAloneAreADescription() throws {
        let decoded = try #require(LaunchSpec(decoding: Self.bytes(Self.required.map { ($0, "v-\($0)") })))
        #expect(decoded == LaunchSpec(tree: RootTree(root: "v-root"), machineName: "v-machine", uuid: "v-uuid", term: "v-term").with { $0.hostname = "v-hostname" })
    }

    @Test(arguments: [
        [UInt8](),                                        // nothing
        [0],                                              // one empty key, no value
        Array("root".utf8),                               // no terminator
        Array("root\0/\0machine".utf8),                   // a key with no value
        Array("root\0/\0machine\0m\0hostname\0h\0uuid\0u\0term\0t".utf8),  // the last value unterminated
        Array("root\0/\0machine\0m\0hostname\0h\0uuid\0u\0term\0t\0\0".utf8),  // an empty key, no value (odd field count)
        Array("root\0/\0machine\0m\0hostname\0h\0uuid\0u\0term\0t\0arg".utf8), // a key, unterminated
        Array("\0\0\0\0".utf8),
        [UInt8](repeating: 0, count: 4097),
        [0xff, 0xfe, 0, 0xc0, 0],                         // not UTF-8, and no required key
    ])
    func bytesThatAreNoWholeDescriptionAreRefused(_ bytes: [UInt8]) {
        #expect(LaunchSpec(decoding: bytes) == nil)
    }

    /// The description travels as one SOCK_SEQPACKET message, but were it cut short, no cut may
    /// pass for the whole: the descriptor roles come last, and the first process refuses a
    /// description whose roles do not match the descriptors that came with it.
    @Test func noTruncationPassesForTheWhole() throws {
        let spec = Self.full()
        let bytes = try spec.encoded()
        for length in 0..<bytes.count {
            let decoded = LaunchSpec(decoding: Array(bytes[..<length]))
            if let decoded {
                #expect(decoded.descriptorRoles.count < spec.descriptorRoles.count, "a cut at \(length) of \(bytes.count) bytes reads as whole")
                #expect(bytes[length - 1] == 0)
            }
        }
        // And a cut in the middle of the required keys is always refused.
        let requiredEnd = Self.bytes(Self.required.map { ($0, "v") }).count
        for length in 0..<requiredEnd {
            #expect(LaunchSpec(decoding: Array(Self.bytes(Self.required.map { ($0, "v") })[..<length])) == nil)
        }
    }

    @Test func aStrayNULShiftsKeysAndValuesAndIsRefused() throws {
        var bytes = try Self.full().encoded()
        // One NUL more anywhere makes the count of fields odd.
        for position in stride(from: 0, through: bytes.count, by: 7) {
            var damaged = bytes
            damaged.insert(0, at: position)
            #expect(LaunchSpec(decoding: damaged) == nil, "a NUL inserted at \(position)")
        }
        bytes.removeLast()
        #expect(LaunchSpec(decoding: bytes) == nil)
    }

    @Test func unknownKeysAndRepeatedOnesDoNotCrash() throws {
        let fields = Self.required.map { ($0, "v") } + [("no-such-key", "x"), ("console-stream", "not a number"), ("bind-ro", "1"),
                                                       ("console-stream", "99999999999"), ("root", "/second")]
        // A console stream that is no number, or a key given twice, makes it no description.
        #expect(LaunchSpec(decoding: Self.bytes(fields)) == nil)
        let unknownOnly = Self.required.map { ($0, "v") } + [("no-such-key", "x")]
        #expect(LaunchSpec(decoding: Self.bytes(unknownOnly)) != nil)
    }

    /// A value with NULs in it (a recipe's `run = ["sh", "x\u0000read-only\u00000"]` can hold
    /// them; an argv or environment cannot) must not become fields of its own: here the later
    /// forged `read-only` would win over the real one, written before the arguments.
    @Test func aValueWithNULsCannotForgeFields() {
        var spec = Self.full()
        spec.arguments = ["true", "x\u{0}read-only\u{0}0"]
        spec.readOnly = true
        #expect(throws: LaunchError.self) { try spec.encoded() }
    }
}

extension LaunchSpec {
    func with(_ change: (inout LaunchSpec) -> Void) -> LaunchSpec {
        var copy = self
        change(&copy)
        return copy
    }
}
