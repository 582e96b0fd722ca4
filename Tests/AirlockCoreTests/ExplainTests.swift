import AirlockAdmin
import Ledger
import AirlockConfiguration
import AirlockCore
import AirlockTesting
import Foundation
import HTTPClient
import RunnerContract
import Testing

/// `airlock explain`: a dry run that verifies, shows each rule's first failing condition or
/// "matched", and the profiles granted; `--json` prints the report as JSON. The CLI itself (flags,
/// exit code) is exercised end to end; this is the report and its JSON.
struct ExplainTests {
    static let rules = """
    [[rules]]
    name = "protected main"
    project_path = "platform/*"
    ref = "main"
    ref_protected = true
    grant = ["deploy-prod"]

    [[rules]]
    name = "readers"
    namespace_id = 7
    grant = ["read-only"]
    """

    /// The report as `airlock explain --json` prints it.
    static func json(_ r: ExplainReport) throws -> [String: Any] {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        let text = try enc.encode(r)
        return try #require(try JSONSerialization.jsonObject(with: text) as? [String: Any])
    }

    @Test func aVerifiedTokenShowsEachRuleAndTheGrants() async throws {
        let f = try IdentityFixture(rules: Self.rules)
        var c = f.claims()
        c["ref"] = "feature/x"
        let token = f.issuer.mint(c)
        let report = try await AdminTools.explain(config: f.config, token: token, claimsJSON: nil, transport: URLSessionTransport())
        #expect(report.verified)
        #expect(report.profiles == ["read-only"])
        let o = try Self.json(report)
        #expect(o["verified"] as? Bool == true)
        #expect((o["verification"] as? String)?.hasPrefix("verified") == true)
        #expect(o["profiles"] as? [String] == ["read-only"])
        let rules = try #require(o["rules"] as? [[String: Any]])
        #expect(rules.map { $0["rule"] as? String } == ["protected main", "readers"])
        #expect(rules.map { $0["matched"] as? Bool } == [false, true])
        #expect(rules[0]["firstFailure"] as? String == "ref is \"feature/x\", rule wants \"main\"")
        #expect(rules[1]["grants"] as? [String] == ["read-only"])
        // A dry run: the token is not in the report, and nothing is audited.
        let text = String(decoding: try JSONEncoder().encode(report), as: UTF8.self)
        #expect(!text.contains(token))
        #expect(f.audit.records().isEmpty)
    }

    @Test func aRejectedTokenSaysWhyAndGrantsNothing() async throws {
        let f = try IdentityFixture(rules: Self.rules)
        var c = f.claims()
        c["aud"] = "https://someone-else.example"
        let token = f.issuer.mint(c)
        let report = try await AdminTools.explain(config: f.config, token: token, claimsJSON: nil, transport: URLSessionTransport())
        let o = try Self.json(report)
        #expect(o["verified"] as? Bool == false)
        #expect((o["verification"] as? String)?.contains("REJECTED: ID token rejected (audience)") == true, "\(o["verification"] ?? "none")")
        #expect((o["rules"] as? [Any])?.isEmpty == true)
        #expect((o["profiles"] as? [Any])?.isEmpty == true)
        #expect(!String(decoding: try JSONEncoder().encode(report), as: UTF8.self).contains(token))
        #expect(f.audit.records().isEmpty)
    }

    @Test func claimsAreEvaluatedWithoutVerification() async throws {
        let f = try IdentityFixture(rules: Self.rules)
        let claims = try JSONSerialization.data(withJSONObject: ["project_path": "platform/api", "ref": "main", "ref_protected": "true", "namespace_id": "8"])
        let report = try await AdminTools.explain(config: f.config, token: nil, claimsJSON: claims, transport: URLSessionTransport())
        let o = try Self.json(report)
        #expect(o["verification"] as? String == "claims given (not verified)")
        #expect(o["verified"] as? Bool == false && o["evaluated"] as? Bool == true)
        #expect(o["profiles"] as? [String] == ["deploy-prod"])
        let rules = try #require(o["rules"] as? [[String: Any]])
        #expect(rules[1]["firstFailure"] as? String == "namespace_id is \"8\", rule wants \"7\"")
        #expect(f.issuer.jwksFetchCount == 0)
    }

    /// JSON booleans and numbers are GitLab's strings: `true` is "true" (Foundation made it "1", so
    /// `ref_protected = true` never matched a claims file), 7 is "7".
    @Test func claimsKeepGitLabsBooleansAndNumbers() async throws {
        let f = try IdentityFixture(rules: Self.rules)
        let claims = Data(#"{"project_path": "platform/api", "ref": "main", "ref_protected": true, "namespace_id": 7}"#.utf8)
        let report = try await AdminTools.explain(config: f.config, token: nil, claimsJSON: claims, transport: URLSessionTransport())
        #expect(report.profiles == ["deploy-prod", "read-only"])
        #expect(!report.verified && report.evaluated)
        let notProtected = Data(#"{"project_path": "platform/api", "ref": "main", "ref_protected": false}"#.utf8)
        let r2 = try await AdminTools.explain(config: f.config, token: nil, claimsJSON: notProtected, transport: URLSessionTransport())
        #expect(r2.rules.first?.firstFailure == "ref_protected is \"false\", rule wants \"true\"", "\(r2.rules)")
        await #expect(throws: AirlockFailure.self) {
            _ = try await AdminTools.explain(config: f.config, token: nil, claimsJSON: Data(#"{"ref": {"nested": 1}}"#.utf8), transport: URLSessionTransport())
        }
    }

    /// Issue 14: `explain --replay AUDIT_LOG` applies a new policy to the jobs the audit recorded a
    /// policy decision for: the "readers" rule moves from namespace 7 to 8.
    @Test func aReplayShowsWhichPastJobsWouldGainOrLose() throws {
        let moved = Self.rules.replacingOccurrences(of: "namespace_id = 7", with: "namespace_id = 8")
        let f = try IdentityFixture(rules: moved)
        let log = NSTemporaryDirectory() + "replay-\(UUID().uuidString).jsonl"
        defer { try? FileManager.default.removeItem(atPath: log) }
        let records = [
            // Job 1, decided twice (the runner retried prepare): counted once.
            #"{"event":"decision","decision":"granted","job_id":"1","project_path":"platform/api","ref":"main","ref_protected":"true","namespace_id":"7","profiles":["deploy-prod","read-only"]}"#,
            #"{"event":"decision","decision":"granted","job_id":"1","project_path":"platform/api","ref":"main","ref_protected":"true","namespace_id":"7","profiles":["deploy-prod","read-only"]}"#,
            #"{"event":"decision","decision":"no_grant","job_id":"2","project_path":"other/x","ref":"main","ref_protected":"false","namespace_id":"8","profiles":[]}"#,
            // A rejected token proves nothing about claims: not replayed.
            #"{"event":"decision","decision":"denied","reason":"token_audience","job_id":"3"}"#,
            // Asked for read-only alone (AIRLOCK_PROFILES): the new policy no longer grants it.
            #"{"event":"decision","decision":"granted","job_id":"4","project_path":"tools/y","ref":"dev","ref_protected":"false","namespace_id":"7","requested_profiles":["read-only"],"profiles":["read-only"]}"#,
        ]
        try (records.joined(separator: "\n") + "\n").write(toFile: log, atomically: true, encoding: .utf8)
        let lines = AdminTools.replay(config: f.config, auditLog: log)
        #expect(lines.map(\.jobID) == ["1", "2", "4"])
        #expect(lines[0].lost == ["read-only"] && lines[0].gained.isEmpty && lines[0].after == ["deploy-prod"])
        #expect(lines[1].gained == ["read-only"] && lines[1].lost.isEmpty)
        #expect(lines[2].lost == ["read-only"] && lines[2].after.isEmpty)
        #expect(AdminTools.unreplayableClaims(f.config).isEmpty)
    }
}
