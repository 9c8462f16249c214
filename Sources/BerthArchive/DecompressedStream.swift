import BerthSystem
import CArchive
import Glibc
import Synchronization

/// The uncompressed bytes of a tarball, produced on a thread of their own.
///
/// A producer thread reads the source (a file or a pipe), hashes what it reads, detects the
/// compression from the bytes (gzip, xz, zstd, bzip2 or none) and decompresses into a small
/// ring of blocks; the consumer, the tar reader on the caller's thread, takes blocks in order.
/// Decompression thus runs beside extraction, on the other core.
public final class DecompressedStream {
    public let sourceName: String
    /// The source's size when it is a regular file, for progress.
    public let inputSize: Int64?
    /// Compressed bytes read so far (read from any thread).
    private let inputCount = Atomic<Int64>(0)
    /// Uncompressed bytes handed to the consumer.
    public private(set) var bytesDelivered: Int64 = 0

    private let input: Descriptor
    // Small blocks stay in the CPU cache between decompression and the write that copies them into
    // the page cache (1 MiB blocks cost a third more time, measured); many of them let either
    // thread run ahead while the other is slowed by a run of small files or of large ones.
    private static let blockSize = 1 << 16
    private static let blockCount = 64

    // Shared between the threads, under `monitor`.
    private let monitor = Monitor()
    private var ready: [(UnsafeMutableRawPointer, Int)] = []
    private var free: [UnsafeMutableRawPointer] = []
    private var done = false
    private var cancelled = false
    private var failureMessage: String?
    private var compressionName = ArchiveCompression.none

    // The producer's own.
    private var hasher: SHA256?
    private let readBuffer = UnsafeMutableRawPointer.allocate(byteCount: blockSize, alignment: 16)
    private var readFailure: SystemError?
    private var digest: String?

    // The consumer's own: the block it holds until it asks for the next.
    private var held: UnsafeMutableRawPointer?
    private var producer: WorkerThread?
    private var allBlocks: [UnsafeMutableRawPointer] = []

    /// Starts reading `input`; `hashing` computes the SHA-256 of the bytes as read.
    public init(input: Descriptor, sourceName: String, hashing: Bool) throws {
        self.input = input
        self.sourceName = sourceName
        let st = try input.status()
        inputSize = st.kind == .regular ? st.size : nil
        hasher = hashing ? SHA256() : nil
        for _ in 0..<Self.blockCount {
            let block = UnsafeMutableRawPointer.allocate(byteCount: Self.blockSize, alignment: 16)
            allBlocks.append(block)
            free.append(block)
        }
        producer = try WorkerThread { [unowned self] in self.produce() }
    }

    deinit {
        cancel()
        allBlocks.forEach { $0.deallocate() }
        readBuffer.deallocate()
    }

    public var inputBytesRead: Int64 { inputCount.load(ordering: .relaxed) }

    /// The compression found in the source ("gzip", "zstd", "none", ...), once data flows.
    public var compression: String { monitor.locked { compressionName.rawValue } }

    /// Why the source could not be read or decompressed, if it could not.
    public var failure: String? { monitor.locked { failureMessage } }
    public var failed: Bool { failure != nil }

    // MARK: Consumer

    /// The next block of uncompressed bytes, valid until the next call; nil at the end or on failure.
    public func nextBlock() -> UnsafeRawBufferPointer? {
        let next: (UnsafeMutableRawPointer, Int)? = monitor.await(until: { [unowned self] in
            if let h = held { free.append(h); held = nil }
            return !ready.isEmpty || done
        }) {
            ready.isEmpty ? nil : ready.removeFirst()
        }
        guard let (block, count) = next else { return nil }
        held = block
        bytesDelivered += Int64(count)
        return UnsafeRawBufferPointer(start: block, count: count)
    }

    /// Reads the source to its end (a tar archive may stop before it), waits for the producer,
    /// and returns the SHA-256 of everything read, when hashing. Throws if reading failed.
    public func finish() throws -> String? {
        while nextBlock() != nil {}
        producer?.join()
        if let failure { throw ArchiveError(failure) }
        return digest
    }

    /// Stops the producer and waits for it.
    public func cancel() {
        monitor.locked { cancelled = true }
        // Wake a producer waiting for a free block.
        monitor.await(until: { true }) {}
        producer?.join()
    }

    // MARK: Producer

    private func produce() {
        guard let raw = archive_read_new() else { return fail("out of memory") }
        defer { archive_read_free(raw) }
        archive_read_support_filter_all(raw)
        archive_read_support_format_raw(raw)
        archive_read_support_format_empty(raw)
        let context = Unmanaged.passUnretained(self).toOpaque()
        let rc = archive_read_open(raw, context, nil, { _, context, buffer in
            // libarchive hands back the context given to it and a place for the block; -1 is
            // ARCHIVE_FATAL, should either be missing.
            guard let context, let buffer else { return -1 }
            let stream = Unmanaged<DecompressedStream>.fromOpaque(context).takeUnretainedValue()
            return stream.readInput(buffer)
        }, nil)
        guard rc == ARCHIVE_OK else { return fail(describe(raw)) }
        var header: OpaquePointer?
        let hrc = archive_read_next_header(raw, &header)
        if hrc == ARCHIVE_EOF { return finishProducing(raw) }
        guard hrc >= ARCHIVE_WARN else { return fail(describe(raw)) }

        while true {
            let block: UnsafeMutableRawPointer? = monitor.await(until: { [unowned self] in !free.isEmpty || cancelled }) {
                cancelled ? nil : free.removeLast()
            }
            guard let block else { return }
            let n = archive_read_data(raw, block, Self.blockSize)
            if n < 0 {
                monitor.locked { free.append(block) }
                return fail(describe(raw))
            }
            if n == 0 {
                monitor.locked { free.append(block) }
                return finishProducing(raw)
            }
            monitor.await(until: { true }) { ready.append((block, n)) }
        }
    }

    /// libarchive's read callback: the next chunk of the source, hashed and counted.
    private func readInput(_ buffer: UnsafeMutablePointer<UnsafeRawPointer?>) -> Int {
        do {
            let n = try input.read(into: readBuffer, count: Self.blockSize)
            if inputCount.load(ordering: .relaxed) == 0 {
                // Named from the magic number here, since libarchive may fail before it says.
                let detected = ArchiveCompression.detect(UnsafeRawBufferPointer(start: readBuffer, count: n))
                monitor.locked { compressionName = detected }
            }
            hasher?.update(UnsafeRawBufferPointer(start: readBuffer, count: n))
            inputCount.add(Int64(n), ordering: .relaxed)
            buffer.pointee = UnsafeRawPointer(readBuffer)
            return n
        } catch {
            readFailure = error as? SystemError
            return -1
        }
    }

    private func finishProducing(_ raw: OpaquePointer) {
        // Whatever follows the data the decompressor stopped at is read too, so the hash covers the file.
        while hasher != nil, readFailure == nil {
            var ignored: UnsafeRawPointer?
            if readInput(&ignored) <= 0 { break }
        }
        if let readFailure { return fail("\(readFailure)") }
        if let hasher { digest = hasher.finalize() }
        monitor.await(until: { true }) { done = true }
    }

    private func describe(_ raw: OpaquePointer) -> String {
        if let readFailure { return "\(readFailure)" }
        let text = archive_error_string(raw).map { String(cString: $0) } ?? "unreadable data"
        let name = compression
        return name == "none" ? text : "truncated or corrupt \(name) data (\(text))"
    }

    private func fail(_ message: String) {
        monitor.await(until: { true }) {
            if failureMessage == nil { failureMessage = message }
            done = true
        }
    }
}

