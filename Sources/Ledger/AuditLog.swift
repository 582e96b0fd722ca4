import Foundation
public import RunnerContract
import Identity

/// The append-only audit trail: one JSON object per line, written with a single `write` under an
/// exclusive lock so that concurrent jobs never interleave. Records carry fingerprints, never secrets.
public struct AuditLog: Sendable {
    /// `[runner] audit_log`.
    public let path: String

    public init(path: String) { self.path = path }

    /// Appends one record with `time` and `event` set.
    /// - Throws: `AirlockFailure` (system) when the log cannot be written: an unaudited credential
    ///   must not be issued, so callers treat this as fatal.
    func append(event: String, _ fields: [String: JSONValue], now: Date = Date()) throws(AirlockFailure) {
        var record = fields
        // Which key made the record's fingerprints (Fingerprint: keyed per host).
        if record["fingerprint"] != nil || record["token_fingerprint"] != nil { record["fingerprint_key"] = .string(Fingerprint.keyID) }
        record["time"] = .string(Self.timestamp(now))
        record["event"] = .string(event)
        var line = Data(JSONValue.compactJSON(record).utf8)
        line.append(0x0a)
        let dir = (path as NSString).deletingLastPathComponent
        try Files.makeDirectories(dir, mode: 0o750)
        let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o640)
        guard fd >= 0 else {
            throw AirlockFailure(.system, "cannot open the audit log \(path): \(String(cString: strerror(errno))); check [runner] audit_log")
        }
        defer { close(fd) }
        flock(fd, LOCK_EX)
        let n = line.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard n == line.count else {
            throw AirlockFailure(.system, "cannot write the audit log \(path): \(String(cString: strerror(errno)))")
        }
    }

    /// Every record, for tests and `airlock` tools; unparsable lines are skipped.
    public func records() -> [[String: JSONValue]] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap {
            try? JSONDecoder().decode([String: JSONValue].self, from: Data($0.utf8))
        }
    }

    static func timestamp(_ d: Date) -> String { UTCTimestamp.milliseconds(d) }
}

