import Identity
import Policy
import RunnerContract
import Testing

struct PolicyTests {
    static func job(_ c: [String: String]) -> VerifiedJob {
        var base = ["project_id": "42", "project_path": "platform/api", "namespace_id": "7", "ref": "main",
                    "ref_protected": "true", "pipeline_source": "push", "ref_type": "branch"]
        for (k, v) in c { base[k] = v }
        return VerifiedJob(claims: base, listClaims: ["groups_direct": ["platform", "sre"]])
    }

    /// One matcher against one claim value; named by both, so a failure reads `glob "platform/*" vs "platform/api/sub"`.
    struct MatcherCase: Sendable, CustomTestStringConvertible {
        let matcher: Matcher
        let value: String
        let matches: Bool
        init(_ matcher: Matcher, _ value: String, _ matches: Bool) {
            self.matcher = matcher
            self.value = value
            self.matches = matches
        }
        var testDescription: String { "\(matcher) \(matches ? "matches" : "does not match") \(value.debugDescription)" }
    }

    static let matcherCases: [MatcherCase] = [
        .init(.exact("main"), "main", true), .init(.exact("main"), "Main", false),
        .init(.glob("platform/*"), "platform/api", true), .init(.glob("platform/*"), "platform/api/sub", false),
        .init(.glob("platform/**"), "platform/api/sub", true), .init(.glob("release/v?"), "release/v1", true),
        .init(.glob("release/v?"), "release/v10", false), .init(.glob("*"), "a/b", false),
        .init(.bool(true), "true", true), .init(.bool(true), "false", false), .init(.bool(false), "false", true),
        .init(.anyOf([.exact("push"), .exact("web")]), "web", true), .init(.anyOf([.exact("push"), .glob("merge_*")]), "schedule", false),
        .init(.exact("42"), "42", true), .init(.exact("42"), "420", false),
    ]

    @Test(arguments: matcherCases)
    func matcher(_ c: MatcherCase) {
        #expect(c.matcher.matches(c.value) == c.matches)
    }

    static let rules = [
        Rule(name: "prod", conditions: [Condition(claim: "project_id", matcher: .exact("42")), Condition(claim: "ref", matcher: .exact("main")),
                                        Condition(claim: "ref_protected", matcher: .bool(true))], grants: ["deploy-prod"]),
        Rule(name: "readers", conditions: [Condition(claim: "project_path", matcher: .glob("platform/*"))], grants: ["read-only", "artifacts"]),
        Rule(name: "sre group", conditions: [Condition(claim: "groups_direct", matcher: .exact("sre"))], grants: ["artifacts"]),
        Rule(name: "schedules", conditions: [Condition(claim: "pipeline_source", matcher: .anyOf([.exact("schedule"), .exact("web")]))], grants: ["nightly"]),
    ]

    /// Claims changed from the base job, and the profiles the rules must grant; named by the change.
    struct DecisionCase: Sendable, CustomTestStringConvertible {
        let claims: [String: String]
        let grants: [String]
        init(_ claims: [String: String], _ grants: [String]) {
            self.claims = claims
            self.grants = grants
        }
        var testDescription: String {
            let change = claims.isEmpty ? "the base job" : claims.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", ")
            return "\(change) → \(grants.joined(separator: ", "))"
        }
    }

    static let decisionCases: [DecisionCase] = [
        .init([:], ["artifacts", "deploy-prod", "read-only"]),
        .init(["ref": "feature/x"], ["artifacts", "read-only"]),
        .init(["ref_protected": "false"], ["artifacts", "read-only"]),
        .init(["project_id": "43"], ["artifacts", "read-only"]),
        .init(["project_path": "other/api", "project_id": "99"], ["artifacts"]),
        .init(["pipeline_source": "schedule"], ["artifacts", "deploy-prod", "nightly", "read-only"]),
    ]

    @Test(arguments: decisionCases)
    func unionOfMatchingRules(_ c: DecisionCase) {
        let d = Policy(rules: Self.rules).evaluate(Self.job(c.claims))
        #expect(d.grants.map(\.profile) == c.grants)
    }

    @Test func grantsNameEveryRuleThatGrantedThem() {
        let d = Policy(rules: Self.rules).evaluate(Self.job([:]))
        #expect(d.grants.first { $0.profile == "artifacts" }?.rules == ["readers", "sre group"])
    }

    @Test func denyByDefault() {
        #expect(Policy(rules: []).evaluate(Self.job([:])).grants.isEmpty)
        let d = Policy(rules: Self.rules).evaluate(VerifiedJob(claims: ["project_id": "1"]))
        #expect(d.grants.isEmpty)
        #expect(d.evaluations[1].failure == "project_path is absent from the token, rule wants glob \"platform/*\"")
    }

    @Test func narrowingKeepsOnlyRequested() throws {
        let p = Policy(rules: Self.rules)
        let g = try p.narrow(p.evaluate(Self.job([:])), to: ["read-only"])
        #expect(g.map(\.profile) == ["read-only"])
    }

    @Test func narrowingRefusesAnUngrantedProfileAndSaysWhy() {
        let p = Policy(rules: Self.rules)
        let d = p.evaluate(Self.job(["ref": "feature/x"]))
        let refused = #expect(throws: AirlockFailure.self) { try p.narrow(d, to: ["deploy-prod"]) }
        #expect(refused?.fault == .job)
        #expect(refused?.message.contains("rule \"prod\" could grant it but ref is \"feature/x\", rule wants \"main\"") == true,
                "\(refused?.message ?? "nothing thrown")")
        let unknown = #expect(throws: AirlockFailure.self) { try p.narrow(d, to: ["nope"]) }
        #expect(unknown?.fault == .job)
        #expect(unknown?.message.contains("no rule grants it") == true, "\(unknown?.message ?? "nothing thrown")")
        // Asking for a granted profile and an ungranted one is refused as a whole, not narrowed to the granted one.
        #expect(throws: AirlockFailure.self) { try p.narrow(d, to: ["read-only", "deploy-prod"]) }
    }

    @Test func templatesEscapeForTheirDestination() throws {
        let j = Self.job(["ref": "feat/a:b c", "job_id": "99"])
        #expect(try Template.render("gitlab-{project_id}-{job_id}", claims: j, escaping: .awsName) == "gitlab-42-99")
        #expect(try Template.render("s-{ref}", claims: j, escaping: .awsName) == "s-feat-a-b-c")
        #expect(try Template.render("kv/{ref}", claims: j, escaping: .urlPathSegment) == "kv/feat%2Fa%3Ab%20c")
        #expect(throws: TemplateError.self) { try Template.render("{nope}", claims: j, escaping: .none) }
    }
}
