import AirlockTesting
import Foundation
import Testing

/// Vault through the built executables, against FakeVault (federation.md A4).
@Suite(.serialized)
struct VaultEndToEndTests {
    static let audience = "https://airlock.test"

    @Test func jobGetsDynamicCredentialAndKVSecretAndCleanupRevokesThem() throws {
        let issuer = try TestIssuer()
        let vault = try FakeVault(issuer: issuer, namespace: "platform")
        vault.addRole("ci-42", .init(boundAudience: Self.audience, boundClaims: ["project_id": "42", "ref_protected": "true"]))
        vault.putKV("kv/ci/42", ["api_key": "kv-secret-value-0123456789"])
        let world = try TestWorld(extra: """
        [gitlab]
        issuer = "\(issuer.issuer)"
        audience = "\(Self.audience)"

        [providers.vault]
        type = "vault"
        address = "\(vault.address)"
        auth_mount = "jwt"
        namespace = "platform"

        [profiles.db-readonly]
        provider = "vault"
        role = "ci-{project_id}"
        secret = "database/creds/readonly"
        env = { DB_USER = "username", DB_PASSWORD = "password" }

        [profiles.app-config]
        provider = "vault"
        role = "ci-{project_id}"
        kv = "kv/ci/{project_id}"
        env = { API_KEY = "api_key" }
        deliver = "file"

        [[rules]]
        name = "protected refs of project 42"
        project_id = 42
        ref_protected = true
        grant = ["db-readonly", "app-config"]
        """)
        var job = SimulatedJob(script: [
            #"echo "db-user=${DB_USER%%-*} password-length=${#DB_PASSWORD}""#,
            #"echo "api-key-file=$API_KEY bytes=$(wc -c < "$API_KEY") content=[$(cat "$API_KEY")]""#,
            "echo \"password: $DB_PASSWORD\"",
        ])
        job.idTokens = ["AIRLOCK_ID_TOKEN": issuer.mint(issuer.claims(for: job, audience: Self.audience))]
        let r = world.simulate(job) { $0.runnerMasking = false }
        #expect(r.status == "success", "\(TestWorld.redacted(r.log))")
        #expect(r.output.contains("db-user=v password-length=36\n"), "\(TestWorld.redacted(r.output))")
        // The file holds the value alone (26 characters, no trailing newline), masked when printed.
        // Computed first: a failing expectation would print the log, and with it the secret.
        let masked1 = r.output.contains("api-key-file=/run/airlock/secrets/app-config-API_KEY bytes=26 content=[[MASKED]]\n")
        #expect(masked1, "\(TestWorld.redacted(r.output))")
        let present1 = r.log.contains("kv-secret-value-0123456789")
        #expect(!present1)
        // Computed first: a failing expectation would print the log, and with it the secret.
        let masked2 = r.output.contains("password: [MASKED]\n")
        #expect(masked2, "\(TestWorld.redacted(r.output))")
        // Cleanup revoked both logins and, with them, the database lease.
        #expect(vault.revokedAccessors.count == 2)
        #expect(vault.revokedLeases.count == 1 && vault.allLeases.count == 1)
        let audit = try String(contentsOfFile: world.auditLog, encoding: .utf8)
        #expect(!audit.contains("hvs."))
        #expect(audit.contains("\"accessor\""))
        #expect(audit.components(separatedBy: "\"outcome\":\"revoked\"").count == 3)
    }

    static func tokenWorld(_ issuer: TestIssuer, _ vault: FakeVault) throws -> TestWorld {
        try TestWorld(extra: """
        [gitlab]
        issuer = "\(issuer.issuer)"
        audience = "\(Self.audience)"

        [providers.vault]
        type = "vault"
        address = "\(vault.address)"

        [profiles.vault-token]
        provider = "vault"
        role = "ci-{project_id}"
        token = true

        [[rules]]
        name = "project 42"
        project_id = 42
        grant = ["vault-token"]
        """)
    }

    /// `token = true`: the job gets a child token whose TTL is bounded by the job's timeout (here
    /// 600 s, where the login's own token lives an hour), never the login token itself.
    @Test func childTokenLivesNoLongerThanTheJob() throws {
        let issuer = try TestIssuer()
        let vault = try FakeVault(issuer: issuer)
        vault.addRole("ci-42", .init(boundAudience: Self.audience))
        let world = try Self.tokenWorld(issuer, vault)
        var job = SimulatedJob(script: [
            #"echo "lookup=$(curl -s -H "X-Vault-Token: $VAULT_TOKEN" "$VAULT_ADDR/v1/auth/token/lookup-self" | python3 -c 'import json,sys; d=json.load(sys.stdin)["data"]; print(d["ttl"], d["orphan"])')""#,
        ])
        job.timeout = 600
        job.idTokens = ["AIRLOCK_ID_TOKEN": issuer.mint(issuer.claims(for: job, audience: Self.audience))]
        let r = world.simulate(job) { $0.runnerMasking = false }
        #expect(r.status == "success", "\(TestWorld.redacted(r.log))")
        let m = try #require(r.output.firstMatch(of: /lookup=(\d+) (\w+)\n/), "\(TestWorld.redacted(r.output))")
        let ttl = Int(m.1) ?? 0
        #expect(ttl > 500 && ttl <= 600, "ttl \(ttl)")
        #expect(m.2 == "False", "the job holds the login token, not a child")
        #expect(vault.liveAccessors.isEmpty, "a token outlived cleanup")
    }

    /// Vault down at cleanup: the credential is recorded `revoke_failed` with when it expires, the
    /// ledger is kept, and the runner's log says so; sweep later tries again and still keeps it.
    @Test func revocationFailureIsRecordedAndTheLedgerKept() throws {
        let issuer = try TestIssuer()
        let vault = try FakeVault(issuer: issuer)
        vault.addRole("ci-42", .init(boundAudience: Self.audience))
        let world = try Self.tokenWorld(issuer, vault)
        var job = SimulatedJob(script: [#"echo "token-length=${#VAULT_TOKEN}""#])
        job.idTokens = ["AIRLOCK_ID_TOKEN": issuer.mint(issuer.claims(for: job, audience: Self.audience))]
        let env = try world.runnerEnvironment(jobID: job.jobID, variables: [
            "CI_PROJECT_PATH": job.projectPath, "AIRLOCK_ID_TOKEN": job.idTokens["AIRLOCK_ID_TOKEN"] ?? ""])
        let prep = world.execute("airlock-prepare", environment: env)
        #expect(prep.code == 0, "\(prep.stderr)")
        vault.server.stop()
        let cleanup = world.execute("airlock-cleanup", environment: env)
        let out = cleanup.stdout + cleanup.stderr
        #expect(out.contains("vault-token (hmac:") && out.contains("revocation failed"), "\(TestWorld.redacted(out))")
        let failed = world.auditRecords().filter { $0["event"] as? String == "revoke_failed" }
        #expect(failed.count == 1 && failed.first?["expires_at"] != nil, "\(failed)")
        #expect(FileManager.default.fileExists(atPath: "\(world.stateDir)/jobs/\(job.jobID)/ledger.json"), "the ledger of an unrevoked credential was removed")
        let swept = world.run(["sweep", "--config", world.configPath, "--force"])
        #expect(swept.stdout.contains("job \(job.jobID): 1 credential(s) could not be revoked, kept"), "\(swept.stdout)\(swept.stderr)")
        #expect(world.auditRecords().contains { $0["event"] as? String == "swept" && $0["outcome"] as? String == "revoke_failed" })
        for line in [out, swept.stdout, world.auditText] { #expect(!line.contains("hvs.")) }
    }

    /// Issue 13: a value too short to mask (under 8 bytes) is never in a job's environment. A KV
    /// field delivered as env fails the job (a system failure naming the profile, the field and the
    /// fix) and what was issued is revoked; delivered as a file it is given, and the log says so.
    @Test(arguments: ["env", "file"])
    func aValueTooShortToMaskIsOnlyEverAFile(deliver: String) throws {
        let issuer = try TestIssuer()
        let vault = try FakeVault(issuer: issuer)
        vault.addRole("ci-42", .init(boundAudience: Self.audience))
        vault.putKV("kv/ci/42", ["pin": "4711"])
        let world = try TestWorld(extra: """
        [gitlab]
        issuer = "\(issuer.issuer)"
        audience = "\(Self.audience)"

        [providers.vault]
        type = "vault"
        address = "\(vault.address)"

        [profiles.pin]
        provider = "vault"
        role = "ci-{project_id}"
        kv = "kv/ci/{project_id}"
        env = { PIN = "pin" }
        deliver = "\(deliver)"

        [[rules]]
        name = "project 42"
        project_id = 42
        grant = ["pin"]
        """)
        var job = SimulatedJob(script: [#"echo "pin-length=$( [ -f "$PIN" ] && wc -c < "$PIN" || echo env-${#PIN})""#])
        job.idTokens = ["AIRLOCK_ID_TOKEN": issuer.mint(issuer.claims(for: job, audience: Self.audience))]
        let r = world.simulate(job) { $0.runnerMasking = false }
        if deliver == "env" {
            #expect(r.failureReason == "system_failure", "\(TestWorld.redacted(r.log))")
            #expect(r.log.contains("profile pin (provider vault): PIN shorter than 8 bytes, too short to mask in the job log, so Airlock does not hand it out; deliver the profile with deliver = \"file\""), "\(TestWorld.redacted(r.log))")
            #expect(!r.output.contains("pin-length="))
            #expect(vault.liveAccessors.isEmpty, "the Vault login outlived the refusal")
        } else {
            #expect(r.status == "success", "\(TestWorld.redacted(r.log))")
            #expect(r.output.contains("pin-length=4\n"), "\(TestWorld.redacted(r.output))")
            #expect(r.log.contains("Airlock: profile pin: PIN shorter than 8 bytes, too short to mask in this log: delivered only as a file"), "\(TestWorld.redacted(r.log))")
        }
    }
}
