import BerthSystem
import BerthTestSupport
import Foundation
import SystemPackage
import Testing

/// Runs the built berth on `store`, as a user types it.
@discardableResult
func berth(_ arguments: [String], store: TemporaryDirectory, input: String? = nil) throws -> CommandResult {
    try run(berthBinary, ["--store", store.appending("store").string] + arguments, input: input)
}

/// A command that failed as berth must fail: non-zero, one line `berth: error: ...` saying `expected`.
func expectCleanFailure(_ result: CommandResult, _ expected: String, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(result.status != 0, "\(result)", sourceLocation: sourceLocation)
    let lines = result.stderr.split(separator: "\n")
    #expect(lines.count == 1, "\(result)", sourceLocation: sourceLocation)
    #expect(result.stderr.hasPrefix("berth: error: "), "\(result)", sourceLocation: sourceLocation)
    #expect(result.stderr.contains(expected), "\(result)", sourceLocation: sourceLocation)
}

/// The store holds no work in progress, and exactly `images`.
func expectStore(_ tmp: TemporaryDirectory, holds images: Set<String>, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let root = tmp.appending("store")
    guard try FileStatus.of(root) != nil else {
        #expect(images.isEmpty, sourceLocation: sourceLocation)
        return
    }
    let staging = root.appending(".berth/staging")
    if try FileStatus.of(staging) != nil {
        #expect(try Directory(opening: staging).entryNames().isEmpty, "leftovers in staging", sourceLocation: sourceLocation)
    }
    let names = try Directory(opening: root).entryNames().map(\.string).filter { !$0.hasPrefix(".") }
    #expect(Set(names) == images, sourceLocation: sourceLocation)
}

func manifest(_ path: FilePath) throws -> TreeManifest { try TreeManifest(of: path) }

func expectSameTree(_ a: FilePath, _ b: FilePath, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let (ma, mb) = (try manifest(a), try manifest(b))
    #expect(ma.entries.count == mb.entries.count, sourceLocation: sourceLocation)
    let differences = ma.differences(from: mb)
    #expect(differences.isEmpty, "\(differences.joined(separator: "\n"))", sourceLocation: sourceLocation)
}
