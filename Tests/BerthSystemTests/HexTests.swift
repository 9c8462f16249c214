import BerthSystem
import Testing

struct HexTests {
    @Test func decodeUndoesEncode() {
        let bytes: [UInt8] = [0, 1, 0x7f, 0x80, 0xab, 0xff]
        #expect(Hex.encode(bytes) == "00017f80abff")
        #expect(Hex.decode(Hex.encode(bytes)) == bytes)
        #expect(Hex.decode("") == [])
    }

    @Test(arguments: ["0", "0g", "AB", "0x00", " 00"])
    func decodeRefusesWhatIsNotLowerCaseHexadecimal(_ text: String) {
        #expect(Hex.decode(text) == nil)
    }

    @Test func randomDigitsAreLowerCaseHexadecimal() {
        let text = Hex.random(32)
        #expect(Hex.isLowercase(text, digits: 32))
        #expect(text != Hex.random(32))
    }
}
