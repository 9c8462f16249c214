/// Lower-case hexadecimal: random names, digests, and checks of names that must be one.
public enum Hex {
    /// `digits` random hexadecimal digits.
    public static func random(_ digits: Int) -> String {
        String(decoding: (0..<digits).map { _ in alphabet.randomElement()! }, as: UTF8.self)
    }

    /// `bytes` as two digits each.
    public static func encode<Bytes: Sequence>(_ bytes: Bytes) -> String where Bytes.Element == UInt8 {
        var out: [UInt8] = []
        for b in bytes {
            out.append(alphabet[Int(b >> 4)])
            out.append(alphabet[Int(b & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Whether `text` is exactly `digits` lower-case hexadecimal digits.
    public static func isLowercase(_ text: String, digits: Int) -> Bool {
        text.utf8.count == digits && text.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }
    }

    private static let alphabet = Array("0123456789abcdef".utf8)
}
