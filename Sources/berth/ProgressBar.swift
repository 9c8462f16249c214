import BerthArchive
import BerthSystem
import FoundationEssentials
import Glibc

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
            line += ", \(Int(max(0, left).rounded()))s left"
            let width = max(10, min(40, columns - line.count - 10))
            let filled = Int(fraction * Double(width))
            line = "[" + String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
                + "] " + pad(String(Int((fraction * 100).rounded())), 3, right: true) + "% " + line
        }
        if line.count > columns - 1 { line = String(line.prefix(columns - 1)) }
        writeOut(1, "\r\u{1B}[K" + line)
        drawn = true
    }

    func finish() {
        if drawn { writeOut(1, "\r\u{1B}[K") }
    }
}
