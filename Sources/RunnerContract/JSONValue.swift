public import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A JSON value (audit records, endpoint answers): enough to write any record without `Any`.
public enum JSONValue: Sendable, Codable, Equatable {
    case string(String), int(Int), bool(Bool), null
    case array([JSONValue]), object([String: JSONValue])

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .string(let s): try c.encode(s)
        case .int(let i): try c.encode(i)
        case .bool(let b): try c.encode(b)
        case .null: try c.encodeNil()
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        }
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let i = try? c.decode(Int.self) { self = .int(i) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([JSONValue].self) { self = .array(a) }
        else { self = .object(try c.decode([String: JSONValue].self)) }
    }

    /// The string inside, if this is a string.
    public var stringValue: String? { if case .string(let s) = self { s } else { nil } }
}

extension JSONValue {
    /// Compact JSON text with object keys sorted and `/` left as it is: what `JSONEncoder` writes
    /// with `[.sortedKeys, .withoutEscapingSlashes]` (RunnerContractTests compares the two), without
    /// its generic machinery, whose first use cost every stage that writes an audit record about a
    /// millisecond.
    public var compactJSON: String {
        var out = ""
        write(into: &out)
        return out
    }

    /// `object` as compact JSON text with sorted keys (an audit record, an endpoint answer).
    public static func compactJSON(_ object: [String: JSONValue]) -> String { JSONValue.object(object).compactJSON }

    private func write(into out: inout String) {
        switch self {
        case .string(let s): Self.quote(s, into: &out)
        case .int(let i): out += String(i)
        case .bool(let b): out += b ? "true" : "false"
        case .null: out += "null"
        case .array(let a):
            out += "["
            for (n, v) in a.enumerated() {
                if n > 0 { out += "," }
                v.write(into: &out)
            }
            out += "]"
        case .object(let o):
            out += "{"
            for (n, key) in o.keys.sorted(by: { $0.utf8.lexicographicallyPrecedes($1.utf8) }).enumerated() {
                if n > 0 { out += "," }
                Self.quote(key, into: &out)
                out += ":"
                o[key]!.write(into: &out)
            }
            out += "}"
        }
    }

    private static let hex: [Character] = Array("0123456789abcdef")

    private static func quote(_ s: String, into out: inout String) {
        out += "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{8}": out += "\\b"
            case "\u{c}": out += "\\f"
            default:
                if u.value < 0x20 {
                    out += "\\u00"
                    out.append(hex[Int(u.value >> 4)])
                    out.append(hex[Int(u.value & 0xf)])
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        out += "\""
    }
}

/// UTC timestamps in ISO 8601 without `ISO8601DateFormatter`, whose set-up (calendars, time zones)
/// cost every stage that wrote one a fraction of a millisecond, and the credential endpoint as much
/// per answer.
public enum UTCTimestamp {
    /// `2026-11-30T20:22:25Z`: what `ISO8601DateFormatter()` writes.
    public static func seconds(_ d: Date) -> String { format(d, milliseconds: false) }

    /// `2026-11-30T20:22:25.123Z`: what `ISO8601DateFormatter` with `.withFractionalSeconds` writes.
    public static func milliseconds(_ d: Date) -> String { format(d, milliseconds: true) }

    private static func format(_ d: Date, milliseconds: Bool) -> String {
        // Rounded to the millisecond first, as Foundation does (…20.9999 is …21.000, and …21 whole).
        let total = Int64((d.timeIntervalSince1970 * 1000).rounded())
        var whole = time_t(total / 1000)
        let ms = Int(total % 1000)
        var tm = tm()
        gmtime_r(&whole, &tm)
        func pad(_ v: Int32, _ width: Int) -> String {
            let s = String(v)
            return s.count >= width ? s : String(repeating: "0", count: width - s.count) + s
        }
        var out = "\(pad(tm.tm_year + 1900, 4))-\(pad(tm.tm_mon + 1, 2))-\(pad(tm.tm_mday, 2))T\(pad(tm.tm_hour, 2)):\(pad(tm.tm_min, 2)):\(pad(tm.tm_sec, 2))"
        if milliseconds { out += "." + pad(Int32(ms), 3) }
        return out + "Z"
    }
}
