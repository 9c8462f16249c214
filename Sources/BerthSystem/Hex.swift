/// Lower-case hexadecimal: random names, digests, and checks of names that must be one.
public enum Hex {
    /// `digits` random hexadecimal digits.
    public static func random(_ digits: Int) -> String {
        String(decoding: (0..<digits).map { _ in alphabet[Int.random(in: alphabet.indices)] }, as: UTF8.self)
    }

    /// `bytes` as two digits each. (An array, the common case, need not go through the generic
    /// one: unspecialized across modules, it costs a lookup of conformances at its first use.)
    public static func encode(_ bytes: [UInt8]) -> String { encode(bytes[...]) }

    /// `bytes` as two digits each.
    public static func encode<Bytes: Sequence>(_ bytes: Bytes) -> String where Bytes.Element == UInt8 {
        var out: [UInt8] = []
        for b in bytes {
            out.append(alphabet[Int(b >> 4)])
            out.append(alphabet[Int(b & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The bytes `text` spells two digits each, or nil when it is not lower-case hexadecimal.
    public static func decode(_ text: String) -> [UInt8]? {
        let digits = Array(text.utf8)
        guard digits.count % 2 == 0 else { return nil }
        func value(_ digit: UInt8) -> UInt8? { alphabet.firstIndex(of: digit).map(UInt8.init) }
        var bytes: [UInt8] = []
        for i in stride(from: 0, to: digits.count, by: 2) {
            guard let high = value(digits[i]), let low = value(digits[i + 1]) else { return nil }
            bytes.append(high << 4 | low)
        }
        return bytes
    }

    /// Whether `text` is exactly `digits` lower-case hexadecimal digits.
    public static func isLowercase(_ text: String, digits: Int) -> Bool {
        text.utf8.count == digits && text.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }
    }

    private static let alphabet = Array("0123456789abcdef".utf8)
}
