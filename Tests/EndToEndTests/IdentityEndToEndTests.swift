import AirlockTesting
import Foundation
import Testing

/// Issue 3 through the built executables: decisions in the audit log, the ID token never reaching
/// the job, and `airlock explain`.
@Suite(.serialized)
struct IdentityEndToEndTests {
    static let audience = "https://airlock.test"

    static func gitlabSection(_ issuer: TestIssuer, rules: String) -> String {
        """
        [gitlab]
        issuer = "\(issuer.issuer)"
        audience = "\(audience)"

        [providers.aws-main]
        type = "aws"
        sts_endpoint = "http://127.0.0.1:1"

        [profiles.read-only]
        provider = "aws-main"
        role_arn = "arn:aws:iam::123456789012:role/ro"

        \(rules)
        """
    }

    @Test func tokenIsVerifiedAuditedAndNeverReachesTheJob() throws {
        let issuer = try TestIssuer()
        // A rule that does not match: identity verified, no grant (federation is not under test here).
        let world = try TestWorld(extra: Self.gitlabSection(issuer, rules: """
        [[rules]]
        name = "tags only"
        ref_type = "tag"
        grant = ["read-only"]
        """))
        var job = SimulatedJob(script: [
            "env > \"$CI_PROJECT_DIR/../env.txt\"",
            "cat /tmp/.airlock-stage.sh > \"$CI_PROJECT_DIR/../script.txt\"",
            "echo \"token=[$AIRLOCK_ID_TOKEN]\"",
            "echo \"$AIRLOCK_ID_TOKEN\" | base64",
        ])
        let token = issuer.mint(issuer.claims(for: job, audience: Self.audience))
        job.idTokens = ["AIRLOCK_ID_TOKEN": token]
        let r = world.simulate(job) { $0.runnerMasking = false }
        #expect(r.status == "success", "\(TestWorld.redacted(r.log))")
        #expect(r.log.contains("token=[]"))
        #expect(r.log.contains("identity verified, no profile granted"))
        let present1 = r.log.contains(token)
        #expect(!present1)
        let present2 = r.runnerLog.contains(token)
        #expect(!present2)
        let root = "\(try #require(world.hostBuildsDir(projectID: job.projectID)))/platform"
        for f in ["env.txt", "script.txt"] {
            let text = try String(contentsOfFile: "\(root)/\(f)", encoding: .utf8)
            #expect(!text.contains(token), "\(f) holds the ID token")
            #expect(!text.contains(String(token.prefix(40))))
        }
        let audit = try String(contentsOfFile: world.auditLog, encoding: .utf8)
        #expect(!audit.contains(token))
        let decision = try #require(AuditLogReader.records(world.auditLog).first { $0["event"] as? String == "decision" })
        #expect(decision["decision"] as? String == "no_grant")
        #expect(decision["job_id"] as? String == "\(job.jobID)")
        #expect(decision["ref"] as? String == "main")
        #expect(decision["user_login"] as? String == "alice")
        #expect(decision["token_jti"] != nil)
    }

    @Test func hostileTokenFailsTheJobAsBuildFailure() throws {
        let issuer = try TestIssuer()
        let world = try TestWorld(extra: Self.gitlabSection(issuer, rules: ""))
        var job = SimulatedJob(script: [#"echo "ran-$((6*7))""#])
        var claims = issuer.claims(for: job, audience: "https://wrong-audience.example")
        claims["aud"] = "https://wrong-audience.example"
        job.idTokens = ["AIRLOCK_ID_TOKEN": issuer.mint(claims)]
        let r = world.simulate(job)
        #expect(r.status == "failed")
        #expect(r.failureReason == "script_failure")  // BUILD_FAILURE from prepare: the job's fault, not retried
        #expect(r.prepareAttempts == 1)
        #expect(r.log.contains("ID token rejected (audience)"))
        #expect(r.log.contains("aud: https://airlock.test"))
        let present3 = r.output.contains("ran-42")
        #expect(!present3, "the job ran")
    }

    @Test func gitlabUnreachableIsASystemFailure() throws {
        let issuer = try TestIssuer()
        let world = try TestWorld(extra: Self.gitlabSection(issuer, rules: ""))
        var job = SimulatedJob(script: ["true"])
        job.idTokens = ["AIRLOCK_ID_TOKEN": issuer.mint(issuer.claims(for: job, audience: Self.audience))]
        issuer.setDown(true)
        let r = world.simulate(job)
        #expect(r.failureReason == "system_failure")
        #expect(r.prepareAttempts == 3)
        #expect(r.log.contains("cannot fetch GitLab's signing keys"))
    }

    /// Issue 15: rules on claims whose value depends on the GitLab edition or a feature flag are
    /// named by explain and check: environment_protected is always "false" on Community Edition,
    /// groups_direct needs a feature flag.
    @Test func explainAndCheckWarnAboutClaimsCommunityEditionNeverSets() throws {
        let issuer = try TestIssuer()
        let world = try TestWorld(extra: Self.gitlabSection(issuer, rules: """
        [[rules]]
        name = "production deploys"
        project_id = 42
        environment_protected = true
        grant = ["read-only"]

        [[rules]]
        name = "platform team"
        groups_direct = "platform"
        grant = ["read-only"]
        """))
        let claimsFile = "\(world.root)/claims.json"
        try JSONSerialization.data(withJSONObject: ["project_id": "42", "environment_protected": "false"]).write(to: URL(fileURLWithPath: claimsFile))
        let r = world.run(["explain", "--config", world.configPath, "--claims", claimsFile])
        #expect(r.stdout.contains("warning: rule \"production deploys\" matches environment_protected: GitLab Community Edition always sets it to \"false\""), "\(r.stdout)\(r.stderr)")
        #expect(r.stdout.contains("warning: rule \"platform team\" matches groups_direct: GitLab adds this claim only with the ci_jwt_groups_direct feature flag"), "\(r.stdout)")
        let c = world.run(["check", "--config", world.configPath])
        #expect(c.stdout.contains("warning: rule \"production deploys\" matches environment_protected") && c.stdout.contains("matches groups_direct"), "\(c.stdout)")
        // A rule on neither claim draws no such warning.
        let plain = try TestWorld(extra: Self.gitlabSection(issuer, rules: "[[rules]]\nname = \"p\"\nproject_id = 42\ngrant = [\"read-only\"]\n"))
        let q = plain.run(["explain", "--config", plain.configPath, "--claims", claimsFile])
        #expect(!q.stdout.contains("Community Edition") && !q.stdout.contains("groups_direct"), "\(q.stdout)")
    }

    @Test func explainSaysWhyARuleDidNotMatch() throws {
        let issuer = try TestIssuer()
        let world = try TestWorld(extra: Self.gitlabSection(issuer, rules: """
        [[rules]]
        name = "protected main"
        project_id = 42
        ref = "main"
        ref_protected = true
        grant = ["read-only"]
        """))
        let claimsFile = "\(world.root)/claims.json"
        try JSONSerialization.data(withJSONObject: ["project_id": "42", "ref": "feature/x", "ref_protected": "false"])
            .write(to: URL(fileURLWithPath: claimsFile))
        let r = world.run(["explain", "--config", world.configPath, "--claims", claimsFile])
        // Each rule line names where the rule is written (issue 18): here the main file and its line.
        #expect(r.stdout.contains("rule \"protected main\" (\(world.configPath):25): not matched: ref is \"feature/x\", rule wants \"main\""), "\(r.stdout)\(r.stderr)")
        #expect(r.stdout.contains("granted profiles: (none)"))

        var job = SimulatedJob(script: [])
        job.jobID = 5
        let token = issuer.mint(issuer.claims(for: job, audience: Self.audience))
        let tokenFile = "\(world.root)/token.jwt"
        FileManager.default.createFile(atPath: tokenFile, contents: Data(token.utf8), attributes: [.posixPermissions: 0o600])
        let v = world.run(["explain", "--config", world.configPath, "--token-file", tokenFile])
        #expect(v.stdout.contains("verification: verified"), "\(v.stdout)\(v.stderr)")
        #expect(v.stdout.contains("rule \"protected main\" (\(world.configPath):25): matched → read-only"), "\(v.stdout)")
        #expect(!v.stdout.contains(token))
    }

    /// `explain --json`: the same answer for scripts (verification, each rule with why it did or did
    /// not match, the granted profiles), never the token; a token that fails verification exits 1.
    @Test func explainJSONGivesTheSameAnswerForScripts() throws {
        let issuer = try TestIssuer()
        let world = try TestWorld(extra: Self.gitlabSection(issuer, rules: """
        [[rules]]
        name = "protected main"
        project_id = 42
        ref = "main"
        ref_protected = true
        grant = ["read-only"]

        [[rules]]
        name = "other project"
        project_id = 7
        grant = ["read-only"]
        """))
        var job = SimulatedJob(script: [])
        job.jobID = 6
        let token = issuer.mint(issuer.claims(for: job, audience: Self.audience))
        // The token comes from stdin (or a file): never from the command line, where ps shows it.
        let tokenFile = "\(world.root)/token.jwt"
        FileManager.default.createFile(atPath: tokenFile, contents: Data(token.utf8), attributes: [.posixPermissions: 0o600])
        let r = TestWorld.launch("/bin/sh", ["-c", "exec \"$0\" explain --config \"$1\" --token-file - --json < \"$2\"", "\(world.binDir)/airlock", world.configPath, tokenFile], environment: nil)
        #expect(r.code == 0, "\(r.stdout)\(r.stderr)")
        #expect(!r.stdout.contains(token) && !r.stderr.contains(token))
        let report = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], "\(r.stdout)")
        #expect((report["verification"] as? String)?.hasPrefix("verified (issuer \(issuer.issuer)") == true && report["verified"] as? Bool == true, "\(report)")
        #expect(report["profiles"] as? [String] == ["read-only"])
        let rules = try #require(report["rules"] as? [[String: Any]])
        #expect(rules.count == 2)
        #expect(rules.first { $0["rule"] as? String == "protected main" }?["matched"] as? Bool == true)
        let other = try #require(rules.first { $0["rule"] as? String == "other project" })
        #expect(other["matched"] as? Bool == false && (other["firstFailure"] as? String)?.contains("project_id") == true, "\(other)")
        // A token for another audience: not verified, exit 1, still JSON.
        let foreign = issuer.mint(issuer.claims(for: job, audience: "https://elsewhere.example"))
        FileManager.default.createFile(atPath: tokenFile, contents: Data(foreign.utf8), attributes: [.posixPermissions: 0o600])
        let bad = world.run(["explain", "--config", world.configPath, "--token-file", tokenFile, "--json"])
        #expect(bad.code == 1, "\(bad.stdout)\(bad.stderr)")
        let badReport = try #require(try JSONSerialization.jsonObject(with: Data(bad.stdout.utf8)) as? [String: Any], "\(bad.stdout)")
        #expect(badReport["verified"] as? Bool == false && (badReport["verification"] as? String)?.contains("aud") == true, "\(badReport)")
        #expect(!bad.stdout.contains(foreign))
        // A token on the command line is refused before anything is read.
        let argv = world.run(["explain", "--config", world.configPath, "--token", foreign])
        #expect(argv.code != 0 && argv.stderr.contains("--token"), "\(argv.stderr)")
        // Claims: evaluated (exit 0) but not verified, in JSON too; a JSON true is GitLab's "true".
        let claimsFile = "\(world.root)/claims.json"
        try Data(#"{"project_id": 42, "ref": "main", "ref_protected": true}"#.utf8).write(to: URL(fileURLWithPath: claimsFile))
        let c = world.run(["explain", "--config", world.configPath, "--claims", claimsFile, "--json"])
        #expect(c.code == 0, "\(c.stdout)\(c.stderr)")
        let claimsReport = try #require(try JSONSerialization.jsonObject(with: Data(c.stdout.utf8)) as? [String: Any], "\(c.stdout)")
        #expect(claimsReport["verified"] as? Bool == false && claimsReport["evaluated"] as? Bool == true, "\(claimsReport)")
        #expect(claimsReport["profiles"] as? [String] == ["read-only"], "\(claimsReport)")
        // A replay of an audit log through the CLI: text and JSON.
        let audit = "\(world.root)/past.jsonl"
        try Data((#"{"event":"decision","decision":"granted","job_id":"77","project_id":"42","project_path":"platform/api","ref":"main","ref_protected":"true","profiles":["read-only"]}"# + "\n").utf8)
            .write(to: URL(fileURLWithPath: audit))
        let rp = world.run(["explain", "--config", world.configPath, "--replay", audit])
        #expect(rp.code == 0 && rp.stdout.contains("job 77 platform/api ref main: unchanged (read-only)") && rp.stdout.contains("replayed 1 job(s): 0 would gain, 0 would lose, 1 unchanged"), "\(rp.stdout)\(rp.stderr)")
    }

    @Test func checkReportsKeyAndLineAndFetchesKeys() throws {
        let issuer = try TestIssuer()
        let world = try TestWorld(extra: Self.gitlabSection(issuer, rules: ""))
        let ok = world.run(["check", "--config", world.configPath])
        #expect(ok.code == 0, "\(ok.stdout)\(ok.stderr)")
        #expect(ok.stdout.contains("GitLab keys: 1 from \(issuer.issuer)/oauth/discovery/keys"))
        try world.writeConfig(extra: Self.gitlabSection(issuer, rules: """
        [[rules]]
        name = "typo"
        ref = "main"
        grant = ["no-such-profile"]
        """))
        let bad = world.run(["check", "--config", world.configPath])
        #expect(bad.code != 0)
        #expect(bad.stdout.contains("airlock.toml:28: [rules #1] grant: profile \"no-such-profile\" is not defined"), "\(bad.stdout)")
        issuer.setDown(true)
        try world.writeConfig(extra: Self.gitlabSection(issuer, rules: ""))
        let down = world.run(["check", "--config", world.configPath])
        #expect(down.code != 0)
        #expect(down.stdout.contains("cannot fetch GitLab's keys"))
    }
}

/// Reads the audit log as JSON objects.
enum AuditLogReader {
    static func records(_ path: String) -> [[String: Any]] {
        ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
    }
}
