import AirlockTesting
import Foundation
import Testing

/// Issue 18, parts 1 and 4, through the built executables: a team's file grants inside its
/// delegation; another team's broken file is reported by `airlock check`, named in each decision's
/// audit record and in `airlock explain`, and leaves every other rule in effect.
@Suite(.serialized)
struct DelegatedPolicyEndToEndTests {
    static let audience = "https://airlock.test"

    @Test func aTeamsRulesGrantAndAnotherTeamsBrokenFileIsReportedNotFatal() throws {
        let issuer = try TestIssuer()
        let moto = try MotoServer()
        let world = try TestWorld()
        let policyDir = world.root + "/policy.d"
        try FileManager.default.createDirectory(atPath: policyDir, withIntermediateDirectories: true)
        try world.writeConfig(extra: """
        [gitlab]
        issuer = "\(issuer.issuer)"
        audience = "\(Self.audience)"

        [policy]
        include = ["\(policyDir)/*.toml"]

        [[delegations]]
        team = "api"
        namespace_path = "platform"
        profiles = ["deploy"]

        [[delegations]]
        team = "billing"
        namespace_id = 99
        profiles = ["deploy"]

        \(PeerTables.aws(moto: moto))
        [profiles.deploy]
        provider = "aws"
        role_arn = "arn:aws:iam::123456789012:role/gitlab-{project_id}"
        """)
        let apiFile = policyDir + "/api.toml"
        try Data("""
        team = "api"

        [[rules]]
        name = "api main"
        project_id = 42
        ref_protected = true
        grant = ["deploy"]
        """.utf8).write(to: URL(fileURLWithPath: apiFile))
        let billingFile = policyDir + "/billing.toml"
        try Data("""
        team = "billing"

        [[rules]]
        name = "billing everywhere"
        namespace_id = [99, 7]
        grant = ["deploy"]
        """.utf8).write(to: URL(fileURLWithPath: billingFile))

        // airlock check: billing's file escapes its scope; a problem naming the file, line and rule.
        let check = world.run(["check", "--config", world.configPath])
        #expect(check.code != 0, "\(check.stdout)")
        #expect(check.stdout.contains("[policy] team billing: \(billingFile):5: [rules #1] namespace_id: rule \"billing/billing everywhere\" would match outside team \"billing\"'s scope (namespace_id 99): \"7\" is not inside it; this team's rules are left out until it is fixed"), "\(check.stdout)")
        #expect(check.stdout.contains("2 delegation(s): api (namespace_path \"platform\"; 1 rule(s) in effect), billing (namespace_id 99; 0 rule(s) in effect)"), "\(check.stdout)")

        // The job (project 42 in namespace "platform") gets its profile through api's rule.
        var job = SimulatedJob(script: ["echo ok"])
        job.variables = ["AWS_ENDPOINT_URL_STS": moto.url]
        job.idTokens = ["AIRLOCK_ID_TOKEN": issuer.mint(issuer.claims(for: job, audience: Self.audience))]
        let r = world.simulate(job) { $0.runnerMasking = false }
        #expect(r.status == "success", "\(TestWorld.redacted(r.log))")
        let decision = try #require(world.auditRecords().first { $0["event"] as? String == "decision" })
        #expect(decision["decision"] as? String == "granted" && decision["rules"] as? [String] == ["api/api main"], "\(decision)")
        let problems = decision["policy_problems"] as? [String] ?? []
        #expect(problems.count == 1 && problems[0].hasPrefix("team billing: \(billingFile):5:"), "\(problems)")
        #expect(world.auditRecords().contains { $0["event"] as? String == "issued" && $0["profile"] as? String == "deploy" })

        // explain names the file each rule comes from, and what was left out.
        let claims = world.root + "/claims.json"
        try JSONSerialization.data(withJSONObject: ["project_id": "42", "ref_protected": "true", "namespace_path": "platform", "namespace_id": "7"])
            .write(to: URL(fileURLWithPath: claims))
        let explain = world.run(["explain", "--config", world.configPath, "--claims", claims])
        #expect(explain.stdout.contains("rule \"api/api main\" (team api, \(apiFile):3): matched → deploy"), "\(explain.stdout)\(explain.stderr)")
        #expect(explain.stdout.contains("left out: team billing: \(billingFile):5:"), "\(explain.stdout)")
        // Outside api's scope the same project id gets nothing: the scope is the rule's first condition.
        try JSONSerialization.data(withJSONObject: ["project_id": "42", "ref_protected": "true", "namespace_path": "elsewhere", "namespace_id": "8"])
            .write(to: URL(fileURLWithPath: claims))
        let outside = world.run(["explain", "--config", world.configPath, "--claims", claims])
        #expect(outside.stdout.contains("rule \"api/api main\" (team api, \(apiFile):3): not matched: namespace_path is \"elsewhere\", rule wants \"platform\""), "\(outside.stdout)")
        #expect(outside.stdout.contains("granted profiles: (none)"))
        withExtendedLifetime((issuer, moto)) {}  // the peers must outlive every job and command above
    }

    /// Parts 2 and 3 through the installed CLI: the example policy's export is the committed one
    /// (JSON and Backstage), and `policy diff` exits 0 without changes and 1 with them, naming them.
    @Test func theCLIExportsAndDiffsTheExamplePolicy() throws {
        let world = try TestWorld()
        let example = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("docs/example-policy").path
        let json = world.run(["policy", "export", "--config", example + "/airlock.toml"])
        let committedJSON = try String(contentsOfFile: example + "/export.json", encoding: .utf8)
        let committedYAML = try String(contentsOfFile: example + "/backstage.yaml", encoding: .utf8)
        #expect(json.code == 0 && json.stdout == committedJSON, "\(json.stderr)")
        let yaml = world.run(["policy", "export", "--config", example + "/airlock.toml", "--format", "backstage"])
        #expect(yaml.code == 0 && yaml.stdout == committedYAML, "\(yaml.stderr)")
        let copy = world.root + "/policy-new"
        try FileManager.default.copyItem(atPath: example, toPath: copy)
        let same = world.run(["policy", "diff", example + "/airlock.toml", copy + "/airlock.toml"])
        #expect(same.code == 0 && same.stdout == "no grant changes\n", "\(same.stdout)\(same.stderr)")
        try String(contentsOfFile: copy + "/teams/search.toml", encoding: .utf8).replacingOccurrences(of: "ref_protected = true", with: "ref_protected = false")
            .write(toFile: copy + "/teams/search.toml", atomically: true, encoding: .utf8)
        let changed = world.run(["policy", "diff", example + "/airlock.toml", copy + "/airlock.toml"])
        #expect(changed.code == 1, "\(changed.stdout)\(changed.stderr)")
        #expect(changed.stdout.contains("project search/indexer, unprotected branch: + search-gcs (rule \"search/search indexer, protected branches\", team search)\n"), "\(changed.stdout)")
        let unknown = world.run(["policy", "export", "--config", example + "/airlock.toml", "--format", "csv"])
        #expect(unknown.code != 0 && unknown.stderr.contains("--format must be json or backstage"), "\(unknown.stderr)")
    }
}
