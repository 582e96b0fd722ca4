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
}
