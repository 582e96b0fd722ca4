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

    static let matcherCases: [(Matcher, String, Bool)] = [
        (.exact("main"), "main", true), (.exact("main"), "Main", false),
        (.glob("platform/*"), "platform/api", true), (.glob("platform/*"), "platform/api/sub", false),
        (.glob("platform/**"), "platform/api/sub", true), (.glob("release/v?"), "release/v1", true),
        (.glob("release/v?"), "release/v10", false), (.glob("*"), "a/b", false),
        (.bool(true), "true", true), (.bool(true), "false", false), (.bool(false), "false", true),
        (.anyOf([.exact("push"), .exact("web")]), "web", true), (.anyOf([.exact("push"), .glob("merge_*")]), "schedule", false),
        (.exact("42"), "42", true), (.exact("42"), "420", false),
    ]

    @Test(arguments: matcherCases.indices)
    func matcher(_ i: Int) {
        let (m, v, want) = Self.matcherCases[i]
        #expect(m.matches(v) == want, "\(m) vs \(v)")
    }

    static let rules = [
        Rule(name: "prod", conditions: [Condition(claim: "project_id", matcher: .exact("42")), Condition(claim: "ref", matcher: .exact("main")),
                                        Condition(claim: "ref_protected", matcher: .bool(true))], grants: ["deploy-prod"]),
        Rule(name: "readers", conditions: [Condition(claim: "project_path", matcher: .glob("platform/*"))], grants: ["read-only", "artifacts"]),
        Rule(name: "sre group", conditions: [Condition(claim: "groups_direct", matcher: .exact("sre"))], grants: ["artifacts"]),
        Rule(name: "schedules", conditions: [Condition(claim: "pipeline_source", matcher: .anyOf([.exact("schedule"), .exact("web")]))], grants: ["nightly"]),
    ]

    static let decisionCases: [([String: String], [String])] = [
        ([:], ["artifacts", "deploy-prod", "read-only"]),
        (["ref": "feature/x"], ["artifacts", "read-only"]),
        (["ref_protected": "false"], ["artifacts", "read-only"]),
        (["project_id": "43"], ["artifacts", "read-only"]),
        (["project_path": "other/api", "project_id": "99"], ["artifacts"]),
        (["pipeline_source": "schedule"], ["artifacts", "deploy-prod", "nightly", "read-only"]),
    ]

    @Test(arguments: decisionCases.indices)
    func unionOfMatchingRules(_ i: Int) {
        let (claims, want) = Self.decisionCases[i]
        let d = Policy(rules: Self.rules).evaluate(Self.job(claims))
        #expect(d.grants.map(\.profile) == want)
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
        #expect(throws: AirlockFailure.self) { try p.narrow(d, to: ["deploy-prod"]) }
        do {
            _ = try p.narrow(d, to: ["deploy-prod"])
        } catch {
            #expect(error.fault == .job)
            #expect(error.message.contains("rule \"prod\" could grant it but ref is \"feature/x\", rule wants \"main\""))
        }
        do { _ = try p.narrow(d, to: ["nope"]) } catch { #expect(error.message.contains("no rule grants it")) }
    }

    @Test func templatesEscapeForTheirDestination() throws {
        let j = Self.job(["ref": "feat/a:b c", "job_id": "99"])
        #expect(try Template.render("gitlab-{project_id}-{job_id}", claims: j, escaping: .awsName) == "gitlab-42-99")
        #expect(try Template.render("s-{ref}", claims: j, escaping: .awsName) == "s-feat-a-b-c")
        #expect(try Template.render("kv/{ref}", claims: j, escaping: .urlPathSegment) == "kv/feat%2Fa%3Ab%20c")
        #expect(throws: TemplateError.self) { try Template.render("{nope}", claims: j, escaping: .none) }
    }
}
