import Glibc
import SystemPackage

/// Text from outside berth (archive member names, directory names, records, an image's
/// os-release) made safe to print: control characters (C0, DEL, C1) and bytes that are not
/// UTF-8 become `\xNN` (C1 as `\u{NN}`), so that nothing a file names can move the cursor,
/// retitle or clear the terminal, or break a one-line error in two. A backslash is kept as it
/// is, so escaping escaped text changes nothing and a message can be escaped once more at the end.
public enum Printable {
    /// `bytes`, decoded as UTF-8, with what cannot be printed escaped.
    public static func escaping<Bytes: Collection>(bytes: Bytes) -> String where Bytes.Element == UInt8 {
        let all = Array(bytes)
        // The common case, printable ASCII throughout, in one pass.
        if all.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) { return String(decoding: all, as: UTF8.self) }
        var out = ""
        var i = 0
        while i < all.count {
            // One scalar at a time; a byte that starts no valid sequence is escaped by itself.
            var decoder = UTF8()
            var it = all[i...].makeIterator()
            if case .scalarValue(let scalar) = decoder.decode(&it) {
                append(scalar, to: &out)
                i += UTF8.width(scalar)
            } else {
                out += "\\x" + hex(all[i])
                i += 1
            }
        }
        return out
    }

    /// `path`'s bytes, with what cannot be printed escaped.
    public static func escaping(_ path: FilePath) -> String {
        path.withPlatformString { p in
            escaping(bytes: UnsafeRawBufferPointer(start: p, count: strlen(p)))
        }
    }

    /// `path` as text, exactly, when it is UTF-8 (control characters kept, for JSON, which
    /// escapes them itself); else escaped, since no string holds it exactly.
    public static func text(_ path: FilePath) -> String {
        path.withPlatformString { p in
            let bytes = UnsafeRawBufferPointer(start: p, count: strlen(p))
            return String(validating: bytes, as: UTF8.self) ?? escaping(bytes: bytes)
        }
    }

    /// `text` with its control characters escaped.
    public static func escaping(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: isControl) else { return text }
        var out = ""
        for scalar in text.unicodeScalars { append(scalar, to: &out) }
        return out
    }

    /// Whether `text` prints as it is.
    public static func isPrintable(_ text: String) -> Bool { !text.unicodeScalars.contains(where: isControl) }

    static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value)
    }

    private static func append(_ scalar: Unicode.Scalar, to out: inout String) {
        if scalar.value < 0x20 || scalar.value == 0x7F {
            out += "\\x" + hex(UInt8(scalar.value))
        } else if (0x80...0x9F).contains(scalar.value) {
            out += "\\u{" + hex(UInt8(scalar.value)) + "}"
        } else {
            out.unicodeScalars.append(scalar)
        }
    }

    private static func hex(_ byte: UInt8) -> String {
        let digits = Array("0123456789abcdef")
        return String([digits[Int(byte >> 4)], digits[Int(byte & 15)]])
    }
}

extension FilePath {
    /// The path for messages, with what cannot be printed escaped (see `Printable`).
    public var printable: String { Printable.escaping(self) }
}
