import BerthSystem
import Glibc

/// While a step runs, its standard output and error go through a pipe: shown (when `echo`) and
/// the last lines kept, for the error of a failing step. Standard input is /dev/null, so a step
/// never waits for the user. The process's own streams come back with `finish`.
final class OutputTee {
    private static let kept = 15
    private let saved: [Int32]
    private let reader: WorkerThread
    private let monitor = Monitor()
    private let result = Lines()

    private final class Lines { var lines: [String] = [] }

    init(echo: Bool) throws {
        saved = [dup(0), dup(1), dup(2)]
        // Close-on-exec from the start: a process started meanwhile must hold no end but its
        // standard output and error, which are made from the write end here.
        let pipe = try Pipe()
        let readEnd = fcntl(pipe.reader.rawValue, F_DUPFD_CLOEXEC, 0)
        guard readEnd >= 0 else { throw SystemError.last("fcntl(F_DUPFD_CLOEXEC)") }
        let null = open("/dev/null", O_RDONLY | O_CLOEXEC)
        dup2(null, 0)
        close(null)
        dup2(pipe.writer.rawValue, 1)
        dup2(pipe.writer.rawValue, 2)
        let out = saved[1]
        let monitor = self.monitor
        let result = self.result
        var collected: [String] = []
        var partial: [UInt8] = []
        reader = try WorkerThread {
            var buffer = [UInt8](repeating: 0, count: 8192)
            while true {
                let n = read(readEnd, &buffer, buffer.count)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                if echo { _ = buffer.withUnsafeBytes { write(out, $0.baseAddress, n) } }
                for byte in buffer[..<n] {
                    if byte == UInt8(ascii: "\n") {
                        collected.append(String(decoding: partial, as: UTF8.self))
                        if collected.count > OutputTee.kept { collected.removeFirst() }
                        partial.removeAll(keepingCapacity: true)
                    } else if partial.count < 4096 {
                        partial.append(byte)
                    }
                }
            }
            if !partial.isEmpty { collected.append(String(decoding: partial, as: UTF8.self)) }
            close(readEnd)
            monitor.locked { result.lines = Array(collected.suffix(OutputTee.kept)) }
        }
    }

    /// Puts the process's streams back and returns the last lines the step printed.
    func finish() -> [String] {
        for fd in 0...2 { dup2(saved[fd], Int32(fd)) }
        saved.forEach { close($0) }
        reader.join()
        return monitor.locked { result.lines }
    }
}
