import AirlockCore
import AirlockConfiguration
public import Foundation
import Ledger
public import RunnerContract

/// Issue 14: counters and histograms derived from the audit log, in the Prometheus text format, for
/// node_exporter's textfile collector (the convention for tools that are not daemons): `airlock
/// metrics --textfile DIR`, run by the sweep timer. Derived, not kept: the audit log is the one
/// record, and a counter restarts when logrotate starts a new file (Prometheus' rate() allows for it).
public enum Metrics {
    /// Bucket bounds (seconds) of `airlock_federation_duration_seconds`.
    static let buckets: [Double] = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]

    /// The exposition text for the audit log at `auditLog` (empty counters when it does not exist).
    public static func render(auditLog: String, now: Date = Date()) -> String {
        var c = Counters()
        if let text = try? String(contentsOfFile: auditLog, encoding: .utf8) {
            for line in text.split(separator: "\n") where !line.isEmpty {
                guard let r = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                      let event = r["event"] as? String else { c.unparsable += 1; continue }
                c.add(event, r)
            }
        }
        return c.text(now: now)
    }

    /// Writes `render` to `DIR/airlock.prom` atomically (a temporary name, then rename), 0644, so the
    /// collector never reads half a file.
    /// - Throws: `AirlockFailure` (system) naming the file.
    public static func writeTextfile(auditLog: String, directory: String, now: Date = Date()) throws(AirlockFailure) {
        try Files.writeAtomically(Data(render(auditLog: auditLog, now: now).utf8), to: "\(directory)/airlock.prom", mode: 0o644, durable: false)
    }

    struct Counters {
        var records: [String: Int] = [:]
        var unparsable = 0
        /// Job id → its last decision (prepare's retries log the decision again; a job counts once).
        var decisions: [String: String] = [:]
        var credentials: [[String]: Int] = [:]  // [event, outcome, provider, profile]
        var failures: [[String]: Int] = [:]  // [provider, code]
        var durations: [String: [Double]] = [:]  // provider → seconds
        var swept: [String: Int] = [:]
        var refusals: [String: Int] = [:]
        var lastEvent: Double = 0
        /// Made once per rendering, not twice per record.
        let withFraction: ISO8601DateFormatter = {
            let f = ISO8601DateFormatter()
            f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
            return f
        }()
        let plain = ISO8601DateFormatter()

        mutating func add(_ event: String, _ r: [String: Any]) {
            records[event, default: 0] += 1
            if let s = r["time"] as? String, let t = (withFraction.date(from: s) ?? plain.date(from: s))?.timeIntervalSince1970 {
                lastEvent = max(lastEvent, t)
            }
            let provider = r["provider"] as? String ?? "", profile = r["profile"] as? String ?? ""
            switch event {
            case "decision":
                if let job = r["job_id"] as? String, let d = r["decision"] as? String { decisions[job] = d }
            case "issued":
                credentials[["issued", "", provider, profile], default: 0] += 1
                if let ms = Double(r["duration_ms"] as? String ?? "") { durations[provider, default: []].append(ms / 1000) }
            case "revoked":
                credentials[["revoked", r["outcome"] as? String ?? "", provider, profile], default: 0] += 1
            case "revoke_failed":
                credentials[["revoke_failed", r["outcome"] as? String ?? "", provider, profile], default: 0] += 1
            case "federation_failed":
                failures[[provider, r["code"] as? String ?? "other"], default: 0] += 1
            case "swept":
                swept[r["outcome"] as? String ?? "", default: 0] += 1
            case "endpoint_refused":
                refusals[r["reason"] as? String ?? "", default: 0] += (r["count"] as? Int) ?? 1
            default:
                break
            }
        }

        func text(now: Date) -> String {
            var out = ""
            func family(_ name: String, _ type: String, _ help: String) { out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n" }
            func sample(_ name: String, _ labels: [(String, String)], _ value: String) {
                let l = labels.map { "\($0.0)=\"\(Metrics.escape($0.1))\"" }.joined(separator: ",")
                out += labels.isEmpty ? "\(name) \(value)\n" : "\(name){\(l)} \(value)\n"
            }
            family("airlock_jobs_total", "counter", "Jobs by the policy's decision (each job once, its last decision).")
            var byDecision: [String: Int] = [:]
            for d in decisions.values { byDecision[d, default: 0] += 1 }
            for (d, n) in byDecision.sorted(by: { $0.key < $1.key }) { sample("airlock_jobs_total", [("decision", d)], "\(n)") }
            family("airlock_credentials_total", "counter", "Credentials issued, revoked (outcome: revoked, already_revoked, expires_at, expired, copies_deleted, partly_revoked) and revoke_failed, by provider and profile.")
            for (k, n) in credentials.sorted(by: { $0.key.lexicographicallyPrecedes($1.key) }) {
                var labels = [("event", k[0])]
                if !k[1].isEmpty { labels.append(("outcome", k[1])) }
                sample("airlock_credentials_total", labels + [("provider", k[2]), ("profile", k[3])], "\(n)")
            }
            family("airlock_federation_failures_total", "counter", "Failed federations by provider and error code (everything issued with them was rolled back).")
            for (k, n) in failures.sorted(by: { $0.key.lexicographicallyPrecedes($1.key) }) {
                sample("airlock_federation_failures_total", [("provider", k[0]), ("code", k[1])], "\(n)")
            }
            family("airlock_federation_duration_seconds", "histogram", "Time from asking a provider to holding its credential, by provider.")
            for (provider, values) in durations.sorted(by: { $0.key < $1.key }) {
                for b in Metrics.buckets {
                    sample("airlock_federation_duration_seconds_bucket", [("provider", provider), ("le", Metrics.number(b))], "\(values.filter { $0 <= b }.count)")
                }
                sample("airlock_federation_duration_seconds_bucket", [("provider", provider), ("le", "+Inf")], "\(values.count)")
                sample("airlock_federation_duration_seconds_sum", [("provider", provider)], Metrics.number(values.reduce(0, +)))
                sample("airlock_federation_duration_seconds_count", [("provider", provider)], "\(values.count)")
            }
            family("airlock_swept_jobs_total", "counter", "Jobs whose cleanup never came, settled by airlock sweep (outcome: settled, revoke_failed).")
            for (o, n) in swept.sorted(by: { $0.key < $1.key }) { sample("airlock_swept_jobs_total", [("outcome", o)], "\(n)") }
            family("airlock_endpoint_refusals_total", "counter", "Requests the credential endpoint refused, by reason.")
            for (reason, n) in refusals.sorted(by: { $0.key < $1.key }) { sample("airlock_endpoint_refusals_total", [("reason", reason)], "\(n)") }
            family("airlock_audit_records_total", "counter", "Audit records by event.")
            for (e, n) in records.sorted(by: { $0.key < $1.key }) { sample("airlock_audit_records_total", [("event", e)], "\(n)") }
            family("airlock_audit_unparsable_lines_total", "counter", "Audit lines that are not a JSON record with an event (a truncated write, or tampering).")
            sample("airlock_audit_unparsable_lines_total", [], "\(unparsable)")
            family("airlock_audit_last_record_timestamp_seconds", "gauge", "Time of the newest audit record (0 when there is none).")
            sample("airlock_audit_last_record_timestamp_seconds", [], Metrics.number(lastEvent))
            family("airlock_metrics_generated_timestamp_seconds", "gauge", "When this file was written.")
            sample("airlock_metrics_generated_timestamp_seconds", [], Metrics.number(now.timeIntervalSince1970.rounded()))
            return out
        }
    }

    /// A label value escaped as the text format requires (backslash, double quote, newline).
    static func escape(_ v: String) -> String {
        v.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"").replacingOccurrences(of: "\n", with: "\\n")
    }

    static func number(_ d: Double) -> String {
        d == d.rounded() && abs(d) < 1e15 ? String(Int64(d)) : String(d)
    }
}
