import Foundation
@testable import RunnerContract
import Testing

/// Issue 19: the stages read the runner's payload and their state with `JSONReader` instead of
/// JSONSerialization and JSONDecoder. Each test compares it with JSONSerialization on the same text,
/// thousands of times: generated documents, and the same documents broken byte by byte.
struct JSONReaderTests {
    /// A small deterministic generator (SplitMix64), so that a failure names a seed that reproduces it.
    struct Rng {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        mutating func int(_ n: Int) -> Int { Int(next() % UInt64(n)) }
        mutating func pick<T>(_ a: [T]) -> T { a[int(a.count)] }
    }

    static let stringPieces = ["a", "Z", " ", "é", "日本", "😀", "\\\"", "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t",
                               "\\u0041", "\\u00e9", "\\u0000", "\\u001f", "\\uD83D\\uDE00", "\\ud83d\\ude00", "\\uFFFF", "$", "=", "\u{7f}"]
    static let numbers = ["0", "-0", "1", "-1", "42", "4711", "9223372036854775807", "-9223372036854775808", "9223372036854775808",
                          "1.5", "-0.25", "1e3", "1E+2", "2.5e-3", "0.0", "123456789012345678901234567890", "1e308", "3600"]

    static func string(_ r: inout Rng) -> String {
        "\"" + (0..<r.int(6)).map { _ in r.pick(stringPieces) }.joined() + "\""
    }

    static func value(_ r: inout Rng, depth: Int) -> String {
        let kinds = depth > 3 ? 5 : 7
        switch r.int(kinds) {
        case 0: return string(&r)
        case 1: return r.pick(numbers)
        case 2: return r.pick(["true", "false"])
        case 3: return "null"
        case 4: return string(&r)
        case 5:
            let items = (0..<r.int(4)).map { _ in value(&r, depth: depth + 1) }
            return "[" + items.joined(separator: r.pick([",", " , ", ",\n"])) + "]"
        default:
            // Duplicate names now and then: the last one wins in both.
            let keys = ["\"id\"", "\"a\"", "\"b\"", "\"key\"", "\"value\""] + [string(&r)]
            let members = (0..<r.int(5)).map { _ in r.pick(keys) + r.pick([":", " : ", ":\t"]) + value(&r, depth: depth + 1) }
            return "{" + members.joined(separator: ",") + "}"
        }
    }

    /// JSONSerialization's result and JSONReader's, as one comparable form (numbers as Doubles: both
    /// are compared by value, which is what a field reads).
    static func canonical(_ any: Any) -> String {
        switch any {
        case let d as [String: Any]: return "{" + d.keys.sorted().map { "\($0.debugDescription):\(canonical(d[$0]!))" }.joined(separator: ",") + "}"
        case let a as [Any]: return "[" + a.map(canonical).joined(separator: ",") + "]"
        case let s as String: return s.debugDescription
        case is NSNull: return "null"
        case let n as NSNumber:
            if String(cString: n.objCType) == "c" { return n.boolValue ? "true" : "false" }
            return number(n.doubleValue)
        default: return "?\(type(of: any))"
        }
    }

    static func canonical(_ n: JSONNode) -> String {
        switch n {
        case .object(let m):
            var last: [String: JSONNode] = [:]
            for (k, v) in m { last[k] = v }
            return "{" + last.keys.sorted().map { "\($0.debugDescription):\(canonical(last[$0]!))" }.joined(separator: ",") + "}"
        case .array(let a): return "[" + a.map(canonical).joined(separator: ",") + "]"
        case .string(let s): return s.debugDescription
        case .null: return "null"
        case .bool(let b): return b ? "true" : "false"
        case .number(let t): return number(Double(t)!)
        }
    }

    /// Numbers by value to 12 significant digits: JSONSerialization rounds long mantissas its own way
    /// (no field Airlock reads has more than 19 digits, and those are read from the text as integers).
    static func number(_ d: Double) -> String { d == 0 ? "n0" : "n" + String(format: "%.12g", d) }

    @Test func generatedDocumentsReadAsJSONSerializationReadsThem() throws {
        var r = Rng(state: 19)
        var mismatches: [String] = []
        for _ in 0..<3000 {
            let text = "{\"top\":" + Self.value(&r, depth: 0) + "}"
            let data = Data(text.utf8)
            let reference = try JSONSerialization.jsonObject(with: data)
            let ours = try JSONReader.parse(data)
            if Self.canonical(reference) != Self.canonical(ours) && mismatches.count < 3 { mismatches.append(text) }
        }
        #expect(mismatches.isEmpty, "\(mismatches)")
    }

    /// Every document above broken once (a byte removed, replaced or added, or the text cut short):
    /// where JSONSerialization refuses it, so does JSONReader, and where both read it they agree.
    /// JSONReader is stricter in the places listed in `knownStricter`; nothing else may differ.
    @Test func brokenDocumentsAreRefusedWhereJSONSerializationRefusesThem() throws {
        var r = Rng(state: 7)
        let junk: [UInt8] = Array("{}[],:\"\\ 0-+.eE1tfnux\u{01}\t\n".utf8) + [0x80, 0xC3, 0xFF]
        var bothRead = 0, bothRefused = 0, weRefusedOnly = 0
        var laxer: [String] = [], disagree: [String] = [], stricterUnexplained: [String] = []
        for _ in 0..<6000 {
            var bytes = Array(("{\"top\":" + Self.value(&r, depth: 0) + "}").utf8)
            switch r.int(4) {
            case 0: bytes.remove(at: r.int(bytes.count))
            case 1: bytes[r.int(bytes.count)] = r.pick(junk)
            case 2: bytes.insert(r.pick(junk), at: r.int(bytes.count + 1))
            default: bytes = Array(bytes.prefix(r.int(bytes.count)))
            }
            let reference = try? JSONSerialization.jsonObject(with: Data(bytes))
            let ours = try? JSONReader.parse(bytes)
            switch (reference, ours) {
            case (nil, nil): bothRefused += 1
            case (let a?, let b?):
                bothRead += 1
                if Self.canonical(a) != Self.canonical(b) && disagree.count < 3 { disagree.append(String(decoding: bytes, as: UTF8.self)) }
            case (nil, _?):
                if laxer.count < 3 { laxer.append(String(decoding: bytes, as: UTF8.self).debugDescription) }
            case (_?, nil):
                weRefusedOnly += 1
                if !Self.knownStricter(bytes) && stricterUnexplained.count < 3 {
                    stricterUnexplained.append(String(decoding: bytes, as: UTF8.self).debugDescription)
                }
            }
        }
        #expect(bothRead > 100 && bothRefused > 3000, "\(bothRead) read, \(bothRefused) refused by both")
        #expect(laxer.isEmpty, "JSONReader read what JSONSerialization refuses: \(laxer)")
        #expect(disagree.isEmpty, "\(disagree)")
        #expect(stricterUnexplained.isEmpty, "refused by JSONReader only (\(weRefusedOnly) in all): \(stricterUnexplained)")
    }

    /// Where JSONSerialization is laxer than RFC 8259 and JSONReader is not.
    static func knownStricter(_ bytes: [UInt8]) -> Bool {
        let text = String(decoding: bytes, as: UTF8.self)
        // A trailing comma in an object (JSONSerialization reads `{"a":1,}`), a lone surrogate escape,
        // a control byte in a string.
        return text.range(of: #",\s*\}"#, options: .regularExpression) != nil
            || text.range(of: #"\\u[dD][89abAB89][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F])"#, options: .regularExpression) != nil
            || text.range(of: #"(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"#, options: .regularExpression) != nil
            || bytes.contains { $0 < 0x20 && $0 != 0x09 && $0 != 0x0A && $0 != 0x0D }
    }

    @Test func whatRFC8259RefusesIsRefused() {
        let refused = ["", " ", "{", "}", "{\"a\"}", "{\"a\":}", "{\"a\":1,}", "[1,]", "[01]", "[+1]", "[.5]", "[1.]", "[1e]", "[-]",
                       "[NaN]", "[Infinity]", "[tru]", "[nul]", "{'a':1}", "{a:1}", "[\"\\x\"]", "[\"\\u12\"]", "[\"\\uD800\"]",
                       "[\"\\uDC00\"]", "[\"\\uD800\\u0041\"]", "[\"a\u{01}\"]", "[\"tab\there\"]", "[1] [2]", "[1]x", "// c\n[1]", "[1 2]"]
        let wrongly = refused.filter { (try? JSONReader.parse(Array($0.utf8))) != nil }
        #expect(wrongly.isEmpty, "\(wrongly)")
        #expect((try? JSONReader.parse([0x5B, 0x22, 0xC3, 0x28, 0x22, 0x5D])) == nil, "invalid UTF-8 in a string")
        let deep = String(repeating: "[", count: 513) + String(repeating: "]", count: 513)
        #expect((try? JSONReader.parse(Array(deep.utf8))) == nil)
        let fine = String(repeating: "[", count: 512) + String(repeating: "]", count: 512)
        #expect((try? JSONReader.parse(Array(fine.utf8))) != nil)
    }

    @Test func numbersKeepTheirTextAndIntegersReadExactly() throws {
        let n = try JSONReader.parse(Array(#"{"a": 9223372036854775807, "b": 9223372036854775808, "c": 1.0, "d": -0, "e": 1e2, "a": 5}"#.utf8))
        #expect(n["a"]?.int64 == 5)
        #expect(n["b"]?.int64 == nil && n["b"]?.double == 9_223_372_036_854_775_808)
        #expect(n["c"]?.int64 == nil && n["c"]?.double == 1)
        #expect(n["e"] == .number("1e2"))
        #expect(n["missing"] == nil && n["a"]?["x"] == nil)
    }
}
