import BerthArchive
import BerthSystem
import BerthTestSupport
import Glibc
import SystemPackage
import Testing

@Suite struct CompressionTests {
    private func sample(_ compression: ArchiveCompression, in tmp: TemporaryDirectory) throws -> FilePath {
        // The suffix says nothing: detection must come from the bytes.
        let path = tmp.appending("sample-\(compression.rawValue).bin")
        try TarBuilder().add(.directory("etc")).add(.file("etc/hostname", "berth\n")).write(to: path, compression: compression)
        return path
    }

    @Test(arguments: ArchiveCompression.allCases)
    func detectedFromTheBytes(_ compression: ArchiveCompression) throws {
        let tmp = try TemporaryDirectory("compression")
        let archive = try sample(compression, in: tmp)
        let stream = try DecompressedStream(input: Descriptor.open(archive, O_RDONLY), sourceName: "sample", hashing: true)
        defer { stream.cancel() }
        let root = tmp.appending("root")
        #expect(mkdir(root.string, 0o755) == 0)
        try Extractor(into: Directory(opening: root)).extract(from: ArchiveReader.tar(from: stream), input: stream)
        let digest = try stream.finish()
        #expect(stream.compression == compression.rawValue)
        #expect(try readFile(root.appending("etc/hostname")) == Array("berth\n".utf8))
        let reference = try shell("sha256sum '\(archive.string)' | cut -d' ' -f1").stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(digest == reference)
    }

    enum Damage: String, CaseIterable { case truncated, corrupted, garbage, empty }

    @Test(arguments: [ArchiveCompression.gzip, .xz, .zstd, .bzip2], Damage.allCases)
    func damagedInputFailsCleanly(_ compression: ArchiveCompression, _ damage: Damage) throws {
        let tmp = try TemporaryDirectory("damaged")
        let archive = tmp.appending("big.tar")
        // Incompressible data, so that damage cannot fall in a stretch the decoder skips.
        var random = [UInt8](repeating: 0, count: 1 << 20)
        for i in random.indices { random[i] = UInt8.random(in: 0...255) }
        try TarBuilder().add(.file("data", String(decoding: random.map { $0 & 0x7f }, as: UTF8.self))).write(to: archive, compression: compression)
        var bytes = try readFile(archive)
        switch damage {
        case .truncated: bytes = Array(bytes[..<(bytes.count / 2)])
        // Damage past the headers: a stream without checksums could decode it into other bytes,
        // which would be safe but say nothing; these formats all detect it in their first block.
        case .corrupted: for i in 16..<80 { bytes[i] ^= 0x5a }
        case .garbage: bytes = (0..<4096).map { _ in UInt8.random(in: 0...255) }
        case .empty: bytes = []
        }
        try writeFile(archive, bytes)
        let root = tmp.appending("root")
        #expect(mkdir(root.string, 0o755) == 0)
        let error = #expect(throws: ArchiveError.self) { try extract(archive, into: root) }
        let message = error?.message ?? ""
        switch damage {
        case .truncated, .corrupted: #expect(message.contains("truncated or corrupt \(compression.rawValue) data"), "\(message)")
        case .garbage: #expect(message.contains("not a valid tar"), "\(message)")
        case .empty: #expect(message.contains("it is empty"), "\(message)")
        }
    }
}
