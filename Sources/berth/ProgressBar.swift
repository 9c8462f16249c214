import BerthArchive
import BerthSystem
import Foundation

/// A one-line progress display on the terminal: bytes and entries, rate, and time left when
/// the source's size is known.
final class ProgressBar {
    private let label: String
    private var drawn = false

    init(label: String) { self.label = label }

    func update(_ p: ExtractionProgress) {
        let columns = Terminal.columns(1) ?? 80
        let rate = p.seconds > 0 ? Double(p.inputBytesRead) / p.seconds : 0
        var line = "\(label): \(p.entries) entries, \(formatSize(p.bytesWritten)) written, \(formatSize(Int64(rate)))/s"
        if let size = p.inputSize, size > 0 {
            let fraction = min(1, Double(p.inputBytesRead) / Double(size))
            let left = rate > 0 ? Double(size - p.inputBytesRead) / rate : 0
            line += String(format: ", %.0fs left", max(0, left))
            let width = max(10, min(40, columns - line.count - 10))
            let filled = Int(fraction * Double(width))
            line = "[" + String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
                + String(format: "] %3.0f%% ", fraction * 100) + line
        }
        if line.count > columns - 1 { line = String(line.prefix(columns - 1)) }
        FileHandle.standardOutput.write(Data(("\r\u{1B}[K" + line).utf8))
        drawn = true
    }

    func finish() {
        if drawn { FileHandle.standardOutput.write(Data("\r\u{1B}[K".utf8)) }
    }
}
