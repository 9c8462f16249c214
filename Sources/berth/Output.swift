import BerthSystem
import FoundationEssentials
import Glibc

/// JSON escapes C0 control characters itself; DEL and C1 (which a terminal obeys too) are
/// escaped here as \u00XX, which JSON reads as the same character: the names stay exact.
func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    var text = ""
    for scalar in String(decoding: try encoder.encode(value), as: UTF8.self).unicodeScalars {
        if (0x7F...0x9F).contains(scalar.value) {
            text += "\\u00" + String(scalar.value, radix: 16)
        } else {
            text.unicodeScalars.append(scalar)
        }
    }
    print(text)
}

/// Bytes in the units machinectl prints (1024-based, one decimal).
func formatSize(_ bytes: Int64) -> String {
    let units = ["B", "K", "M", "G", "T"]
    var value = Double(bytes)
    var unit = 0
    while value >= 1024 && unit < units.count - 1 {
        value /= 1024
        unit += 1
    }
    let tenths = Int((value * 10).rounded())
    return unit == 0 ? "\(bytes)B" : "\(tenths / 10).\(tenths % 10)\(units[unit])"
}

/// Seconds with one decimal: 1.4s.
func formatSeconds(_ seconds: Double) -> String {
    let tenths = Int((max(0, seconds) * 10).rounded())
    return "\(tenths / 10).\(tenths % 10)s"
}

/// Local time in ISO 8601 with its offset from UTC, 2026-12-01T18:20:41+00:00, in tables and
/// JSON alike: a script reads the instant exactly, whatever the zone it runs in.
func formatDate(_ seconds: Int64) -> String {
    var t = time_t(seconds)
    var parts = tm()
    localtime_r(&t, &parts)
    var buffer = [CChar](repeating: 0, count: 40)
    strftime(&buffer, buffer.count, "%Y-%m-%dT%H:%M:%S%z", &parts)
    var text = String(cString: buffer)  // ...+0000: RFC 3339 writes the offset +00:00
    text.insert(":", at: text.index(text.endIndex, offsetBy: -2))
    return text
}

/// `text` padded with spaces to `width` (on the left with `right`).
func pad(_ text: String, _ width: Int, right: Bool = false) -> String {
    let fill = String(repeating: " ", count: max(0, width - text.count))
    return right ? fill + text : text + fill
}

/// Writes all of `text` to a standard stream.
func writeOut(_ fd: Int32, _ text: String) {
    var bytes = Array(text.utf8)[...]
    while !bytes.isEmpty {
        let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        if n < 0 { if errno == EINTR { continue } else { return } }
        bytes = bytes.dropFirst(n)
    }
}

/// Cells come from names, records and images' os-release: their control characters are escaped.
/// Without `legend`, the rows only (aligned as with it), for scripts.
func printTable(header: [String], rows: [[String]], legend: Bool = true) {
    let all = [header] + rows.map { $0.map(Printable.escaping) }
    let widths = header.indices.map { column in all.map { $0[column].count }.max() ?? 0 }
    for row in legend ? all[...] : all.dropFirst() {
        let cells = row.enumerated().map { i, cell in
            i == row.count - 1 ? cell : pad(cell, widths[i])
        }
        print(cells.joined(separator: "  "))
    }
}
