import Foundation
import RunnerContract
import Testing

/// Issue 19: audit records and endpoint answers are written by JSONValue.compactJSON and timestamps by
/// UTCTimestamp instead of JSONEncoder and ISO8601DateFormatter (their set-up cost every stage about a
/// millisecond). Both must write exactly what the Foundation types wrote.
struct JSONValueTests {
    static func foundation(_ v: [String: JSONValue]) throws -> String {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try enc.encode(v), as: UTF8.self)
    }

    @Test func compactJSONIsWhatJSONEncoderWrites() throws {
        let every = String((0..<0x80).map { Character(Unicode.Scalar(UInt8($0))) })
        var rnd = SystemRandomNumberGenerator()
        var values: [[String: JSONValue]] = [
            ["event": .string("issued"), "time": .string("2026-11-30T20:22:25.123Z"), "n": .int(-42), "ok": .bool(true), "none": .null],
            ["path": .string("/var/lib/airlock/a/b"), "url": .string("https://gitlab.example.com/api/v4"), "ascii": .string(every)],
            ["unicode": .string("héllo ✓ 日本 🚀 \u{7f} \u{2028}\u{2029}"), "quote": .string("say \"hi\" \\ back")],
            ["nested": .object(["b": .array([.int(1), .string("x"), .object(["z": .null, "a": .bool(false)])]), "a": .array([])]), "empty": .object([:])],
            ["B": .int(1), "a": .int(2), "_": .int(3), "A1": .int(4), "a_b": .int(5), "ab": .int(6), "Z": .int(7), "é": .int(8)],
        ]
        for _ in 0..<200 {
            let chars = (0..<Int.random(in: 0...40, using: &rnd)).map { _ in Character(Unicode.Scalar(UInt32.random(in: 0...0x2FF, using: &rnd)) ?? "x") }
            values.append([String(chars.prefix(8)): .string(String(chars)), "i": .int(Int.random(in: Int.min...Int.max, using: &rnd))])
        }
        var mismatches = 0
        for v in values where try Self.foundation(v) != JSONValue.compactJSON(v) {
            mismatches += 1
            if mismatches < 4 { Issue.record("\(try Self.foundation(v)) != \(JSONValue.compactJSON(v))") }
        }
        #expect(mismatches == 0)
    }

    @Test func utcTimestampsAreWhatISO8601DateFormatterWrites() {
        let plain = ISO8601DateFormatter()
        let frac = ISO8601DateFormatter()
        frac.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        var rnd = SystemRandomNumberGenerator()
        var dates = [Date(timeIntervalSince1970: 0), Date(timeIntervalSince1970: 1_796_000_000), Date(timeIntervalSince1970: 1_796_000_000.999_9),
                     Date(timeIntervalSince1970: 951_782_400.5), Date(timeIntervalSince1970: 4_102_444_799.999), Date()]
        for _ in 0..<5000 { dates.append(Date(timeIntervalSince1970: Double.random(in: 0...4_102_444_800, using: &rnd))) }
        var mismatches = 0
        for d in dates where plain.string(from: d) != UTCTimestamp.seconds(d) || frac.string(from: d) != UTCTimestamp.milliseconds(d) {
            mismatches += 1
            if mismatches < 4 { Issue.record("\(d.timeIntervalSince1970): \(frac.string(from: d)) vs \(UTCTimestamp.milliseconds(d)), \(plain.string(from: d)) vs \(UTCTimestamp.seconds(d))") }
        }
        #expect(mismatches == 0)
    }
}
