/// A JSON document as read by `JSONReader`: objects keep their members in order (duplicates too),
/// numbers keep their text (nothing is rounded before a field says what it wants).
public indirect enum JSONNode: Sendable, Equatable {
    case object([(key: String, value: JSONNode)])
    case array([JSONNode])
    case string(String)
    /// The number's text as written (RFC 8259 grammar, already checked).
    case number(String)
    case bool(Bool)
    case null

    public static func == (a: JSONNode, b: JSONNode) -> Bool {
        switch (a, b) {
        case (.object(let x), .object(let y)): x.count == y.count && zip(x, y).allSatisfy { $0.key == $1.key && $0.value == $1.value }
        case (.array(let x), .array(let y)): x == y
        case (.string(let x), .string(let y)): x == y
        case (.number(let x), .number(let y)): x == y
        case (.bool(let x), .bool(let y)): x == y
        case (.null, .null): true
        default: false
        }
    }

    /// The member named `key` of an object; of duplicate names the last wins, as with
    /// JSONSerialization and JSONDecoder. Nil for a missing member or a value that is not an object.
    public subscript(key: String) -> JSONNode? {
        guard case .object(let members) = self else { return nil }
        return members.last { $0.key == key }?.value
    }

    public var string: String? { if case .string(let s) = self { s } else { nil } }
    public var bool: Bool? { if case .bool(let b) = self { b } else { nil } }
    public var array: [JSONNode]? { if case .array(let a) = self { a } else { nil } }
    /// An array whose every item is a string (nil when one is not).
    public var strings: [String]? {
        guard case .array(let a) = self else { return nil }
        let s = a.compactMap(\.string)
        return s.count == a.count ? s : nil
    }
    public var isObject: Bool { if case .object = self { true } else { false } }
    public var isNull: Bool { if case .null = self { true } else { false } }
    /// An integer written without fraction or exponent that fits in Int64.
    public var int64: Int64? { if case .number(let t) = self { Int64(t) } else { nil } }
    /// Any number, as the nearest Double.
    public var double: Double? { if case .number(let t) = self { Double(t) } else { nil } }
}

/// A strict RFC 8259 JSON reader without Foundation: the stages read the runner's payload and their
/// own state files with it on every call (issue 19: JSONSerialization's and JSONDecoder's first use
/// cost each stage about half a millisecond apiece, mostly in generic metadata and dynamic casts).
///
/// It refuses what RFC 8259 does not allow: trailing text, control characters and invalid UTF-8 in
/// strings, unknown escapes, lone surrogates in `\u` escapes, leading zeros, `+`, `.5`, `1.`, NaN,
/// comments, trailing commas, numbers beyond Double's range, and nesting deeper than 512
/// (JSONSerialization's limit). Input is UTF-8 (a leading byte order mark is skipped); the runner
/// writes nothing else. JSONReaderTests compares it with JSONSerialization on generated documents.
public enum JSONReader {
    public struct Failure: Error, CustomStringConvertible, Sendable {
        /// Byte offset of the problem.
        public let offset: Int
        public let reason: String
        public var description: String { "\(reason) at byte \(offset)" }
    }

    public static let maximumDepth = 512

    /// Parses one JSON value that makes up the whole of `bytes` (white space around it allowed).
    /// - Throws: `JSONReader.Failure` naming what is wrong and where.
    public static func parse(_ bytes: some Sequence<UInt8>) throws(Failure) -> JSONNode {
        let array = Array(bytes)
        return try array.withUnsafeBufferPointer { (buf) throws(Failure) -> JSONNode in
            var p = Parser(buf)
            if buf.count >= 3 && buf[0] == 0xEF && buf[1] == 0xBB && buf[2] == 0xBF { p.i = 3 }
            p.skipSpace()
            let v = try p.value(depth: 0)
            p.skipSpace()
            guard p.i == buf.count else { throw p.fail("unexpected text after the JSON value") }
            return v
        }
    }

    private struct Parser {
        let b: UnsafeBufferPointer<UInt8>
        var i = 0

        init(_ b: UnsafeBufferPointer<UInt8>) { self.b = b }

        func fail(_ reason: String) -> Failure { Failure(offset: i, reason: reason) }

        mutating func skipSpace() {
            while i < b.count, b[i] == 0x20 || b[i] == 0x0A || b[i] == 0x0D || b[i] == 0x09 { i += 1 }
        }

        mutating func value(depth: Int) throws(Failure) -> JSONNode {
            guard i < b.count else { throw fail("unexpected end of the JSON text") }
            switch b[i] {
            case UInt8(ascii: "{"): return try object(depth: depth + 1)
            case UInt8(ascii: "["): return try array(depth: depth + 1)
            case UInt8(ascii: "\""): return .string(try string())
            case UInt8(ascii: "t"): try literal("true"); return .bool(true)
            case UInt8(ascii: "f"): try literal("false"); return .bool(false)
            case UInt8(ascii: "n"): try literal("null"); return .null
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try number())
            default: throw fail("unexpected character")
            }
        }

        mutating func literal(_ word: StaticString) throws(Failure) {
            let n = word.utf8CodeUnitCount
            guard b.count - i >= n else { throw fail("unexpected end of the JSON text") }
            for k in 0..<n where b[i + k] != word.utf8Start[k] { throw fail("unexpected character") }
            i += n
        }

        mutating func object(depth: Int) throws(Failure) -> JSONNode {
            guard depth <= JSONReader.maximumDepth else { throw fail("nested deeper than \(JSONReader.maximumDepth)") }
            i += 1
            var members: [(key: String, value: JSONNode)] = []
            skipSpace()
            if i < b.count && b[i] == UInt8(ascii: "}") { i += 1; return .object(members) }
            while true {
                skipSpace()
                guard i < b.count, b[i] == UInt8(ascii: "\"") else { throw fail("expected a member name in quotes") }
                let key = try string()
                skipSpace()
                guard i < b.count, b[i] == UInt8(ascii: ":") else { throw fail("expected ':' after a member name") }
                i += 1
                skipSpace()
                members.append((key, try value(depth: depth)))
                skipSpace()
                guard i < b.count else { throw fail("unexpected end of the JSON text") }
                if b[i] == UInt8(ascii: ",") { i += 1; continue }
                if b[i] == UInt8(ascii: "}") { i += 1; return .object(members) }
                throw fail("expected ',' or '}' in an object")
            }
        }

        mutating func array(depth: Int) throws(Failure) -> JSONNode {
            guard depth <= JSONReader.maximumDepth else { throw fail("nested deeper than \(JSONReader.maximumDepth)") }
            i += 1
            var items: [JSONNode] = []
            skipSpace()
            if i < b.count && b[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
            while true {
                skipSpace()
                items.append(try value(depth: depth))
                skipSpace()
                guard i < b.count else { throw fail("unexpected end of the JSON text") }
                if b[i] == UInt8(ascii: ",") { i += 1; continue }
                if b[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
                throw fail("expected ',' or ']' in an array")
            }
        }

        mutating func number() throws(Failure) -> String {
            let start = i
            func digit(_ k: Int) -> Bool { k < b.count && b[k] >= UInt8(ascii: "0") && b[k] <= UInt8(ascii: "9") }
            if b[i] == UInt8(ascii: "-") { i += 1 }
            guard digit(i) else { throw fail("a number needs a digit") }
            if b[i] == UInt8(ascii: "0") {
                i += 1
                if digit(i) { throw fail("a number must not start with 0") }
            } else {
                while digit(i) { i += 1 }
            }
            if i < b.count && b[i] == UInt8(ascii: ".") {
                i += 1
                guard digit(i) else { throw fail("a number needs a digit after '.'") }
                while digit(i) { i += 1 }
            }
            if i < b.count && (b[i] == UInt8(ascii: "e") || b[i] == UInt8(ascii: "E")) {
                i += 1
                if i < b.count && (b[i] == UInt8(ascii: "+") || b[i] == UInt8(ascii: "-")) { i += 1 }
                guard digit(i) else { throw fail("a number needs a digit in its exponent") }
                while digit(i) { i += 1 }
            }
            let text = String(decoding: UnsafeBufferPointer(rebasing: b[start..<i]), as: UTF8.self)
            // As JSONSerialization: a number beyond Double's range is refused, not read as infinity.
            guard Double(text)?.isFinite == true else { i = start; throw fail("a number out of range") }
            return text
        }

        /// A string from its opening quote; runs of plain bytes are copied whole, and UTF-8 is checked.
        mutating func string() throws(Failure) -> String {
            i += 1
            var out: [UInt8] = []
            var run = i
            while true {
                guard i < b.count else { throw fail("a string is not closed") }
                let c = b[i]
                if c == UInt8(ascii: "\"") {
                    out.append(contentsOf: UnsafeBufferPointer(rebasing: b[run..<i]))
                    i += 1
                    break
                }
                if c < 0x20 { throw fail("a control character in a string must be escaped") }
                if c != UInt8(ascii: "\\") { i += 1; continue }
                out.append(contentsOf: UnsafeBufferPointer(rebasing: b[run..<i]))
                i += 1
                guard i < b.count else { throw fail("a string is not closed") }
                let e = b[i]
                i += 1
                switch e {
                case UInt8(ascii: "\""): out.append(0x22)
                case UInt8(ascii: "\\"): out.append(0x5C)
                case UInt8(ascii: "/"): out.append(0x2F)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    var scalar = try hex4()
                    if scalar >= 0xD800 && scalar <= 0xDBFF {
                        guard b.count - i >= 2, b[i] == UInt8(ascii: "\\"), b[i + 1] == UInt8(ascii: "u") else {
                            throw fail("a high surrogate \\u escape without its low surrogate")
                        }
                        i += 2
                        let low = try hex4()
                        guard low >= 0xDC00 && low <= 0xDFFF else { throw fail("a high surrogate \\u escape without its low surrogate") }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    } else if scalar >= 0xDC00 && scalar <= 0xDFFF {
                        throw fail("a low surrogate \\u escape without its high surrogate")
                    }
                    guard let u = Unicode.Scalar(scalar) else { throw fail("an invalid \\u escape") }
                    out.append(contentsOf: UTF8.encode(u)!)
                default:
                    i -= 1
                    throw fail("an unknown escape in a string")
                }
                run = i
            }
            guard let s = String(validating: out, as: UTF8.self) else { throw fail("a string is not valid UTF-8") }
            return s
        }

        mutating func hex4() throws(Failure) -> UInt32 {
            guard b.count - i >= 4 else { throw fail("a \\u escape needs four hex digits") }
            var v: UInt32 = 0
            for _ in 0..<4 {
                let c = b[i]
                let d: UInt32
                switch c {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): d = UInt32(c - UInt8(ascii: "0"))
                case UInt8(ascii: "a")...UInt8(ascii: "f"): d = UInt32(c - UInt8(ascii: "a") + 10)
                case UInt8(ascii: "A")...UInt8(ascii: "F"): d = UInt32(c - UInt8(ascii: "A") + 10)
                default: throw fail("a \\u escape needs four hex digits")
                }
                v = v << 4 | d
                i += 1
            }
            return v
        }
    }
}
