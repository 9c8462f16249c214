import BerthArchive
import BerthSystem
import Glibc

/// A one-line progress display on standard error, as tar's, pv's and podman's are, so standard
/// output keeps the data (`export NAME -`) or the result: a bar and percentage with "X of Y"
/// when the total is known, then entries, rate and time left. Shown only when standard error is
/// a terminal (`ProgressBar.onTerminal`).
final class ProgressBar {
    private let label: String
    private var drawn = false

    init(label: String) { self.label = label }

    /// A bar for `label` when standard error is a terminal and `quiet` is not set.
    static func onTerminal(label: String, quiet: Bool) -> ProgressBar? {
        !quiet && Terminal.isTerminal(2) ? ProgressBar(label: Printable.escaping(label)) : nil
    }

    func update(_ p: ExtractionProgress) {
        var details = ["\(p.entries) entries", "\(formatSize(p.bytesWritten)) written"]
        if p.inputSize == nil { details.insert("\(formatSize(p.inputBytesRead)) read", at: 0) }
        draw(done: p.inputBytesRead, total: p.inputSize, seconds: p.seconds, details: details)
    }

    func update(_ p: ExportProgress) {
        draw(done: p.bytesRead, total: p.totalBytes, seconds: p.seconds, details: ["\(p.entries) entries"])
    }

    private func draw(done: Int64, total: Int64?, seconds: Double, details: [String]) {
        let columns = Terminal.columns(2) ?? 80
        let rate = seconds > 0 ? Double(done) / seconds : 0
        var parts = details + ["\(formatSize(Int64(rate)))/s"]
        var line: String
        if let total, total > 0 {
            let fraction = min(1, Double(done) / Double(total))
            let left = rate > 0 ? Double(max(0, total - done)) / rate : 0
            parts.insert("\(formatSize(done)) of \(formatSize(total))", at: 0)
            parts.append("\(Int(left.rounded()))s left")
            line = "\(label): " + parts.joined(separator: ", ")
            let width = max(10, min(40, columns - line.count - 10))
            let filled = Int(fraction * Double(width))
            line = "[" + String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
                + "] " + pad(String(Int((fraction * 100).rounded())), 3, right: true) + "% " + line
        } else {
            line = "\(label): " + parts.joined(separator: ", ")
        }
        if line.count > columns - 1 { line = String(line.prefix(columns - 1)) }
        writeOut(2, "\r\u{1B}[K" + line)
        drawn = true
    }

    /// Leaves the last state on its line, and says what comes next when `next` is given: the
    /// work between 100% and the end (a sync) would otherwise look like a hang.
    func finish(next: String? = nil) {
        if drawn { writeOut(2, "\n") }
        drawn = false
        if let next { writeOut(2, next + "\n") }
    }
}
