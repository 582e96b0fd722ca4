import AirlockTesting
import Foundation
import Testing

/// Vault through the built executables, against OpenBao's dev server (a real Vault-compatible
/// server), set up with the README's commands' API calls.
@Suite(.serialized)
struct VaultEndToEndTests {
    static let audience = "https://airlock.test"

    /// OpenBao with JWT auth trusting `issuer`, the README's `ci` policy, a service role `ci-42`
    /// bound to project 42 and protected refs, a batch role `batch-42`, a leased PKI role and a KV
    /// secret.
    static func bao(_ issuer: TestIssuer, namespace: String? = nil, policy: String = OpenBaoServer.readmePolicy) throws -> OpenBaoServer {
        let bao = try OpenBaoServer()
        if let namespace { try bao.createNamespace(namespace) }
        try bao.enableJWT(issuer: issuer.issuer, namespace: namespace)
        try bao.writePolicy("ci", policy, namespace: namespace)
        try bao.writeRole("ci-42", audience: audience, boundClaims: ["project_id": "42", "ref_protected": "true"], policies: ["ci"], namespace: namespace)
        try bao.writeRole("batch-42", audience: audience, boundClaims: ["project_id": "42"], policies: ["ci"], tokenType: "batch", namespace: namespace)
        try bao.enableLeasedPKI(namespace: namespace)
        return bao
    }

    @Test func jobGetsDynamicCredentialAndKVSecretAndCleanupRevokesThem() throws {
        let issuer = try TestIssuer()
        let vault = try Self.bao(issuer, namespace: "platform")
        try vault.putKV("ci/42", ["api_key": "kv-secret-value-0123456789"], namespace: "platform")
        let world = try TestWorld(extra: """
        [gitlab]
        issuer = "\(issuer.issuer)"
        audience = "\(Self.audience)"

        \(PeerTables.vault(address: vault.address, namespace: "platform"))
        [profiles.tls-client]
        provider = "vault"
        role = "ci-{project_id}"
        secret = "pki/issue/ci"
        secret_params = { common_name = "p{project_id}-j{job_id}.ci.test", ttl = "10m" }
        env = { TLS_CERT = "certificate", TLS_KEY = "private_key", TLS_SERIAL = "serial_number" }

        [profiles.app-config]
        provider = "vault"
        role = "ci-{project_id}"
        kv = "secret/ci/{project_id}"
        env = { API_KEY = "api_key" }
        deliver = "file"

        [[rules]]
        name = "protected refs of project 42"
        project_id = 42
        ref_protected = true
        grant = ["tls-client", "app-config"]
        """)
        var job = SimulatedJob(script: [
            #"echo "cn=$(printf '%s\n' "$TLS_CERT" | openssl x509 -noout -subject -nameopt multiline | sed -n 's/ *commonName *= //p') key=$(printf '%s\n' "$TLS_KEY" | openssl pkey -noout -check 2>&1 | head -1)""#,
            #"echo "api-key-file=$API_KEY bytes=$(wc -c < "$API_KEY") content=[$(cat "$API_KEY")]""#,
            "echo \"key: $TLS_KEY\"",
        ])
        job.idTokens = ["AIRLOCK_ID_TOKEN": issuer.mint(issuer.claims(for: job, audience: Self.audience))]
        let r = world.simulate(job) { $0.runnerMasking = false }
        #expect(r.status == "success", "\(TestWorld.redacted(r.log))")
        #expect(r.output.contains("cn=p42-j\(job.jobID).ci.test key=Key is valid\n"), "\(TestWorld.redacted(r.output))")
        // The file holds the value alone (26 characters, no trailing newline), masked when printed.
        // Computed first: a failing expectation would print the log, and with it the secret.
        let masked1 = r.output.contains("api-key-file=/run/airlock/secrets/app-config-API_KEY bytes=26 content=[[MASKED]]\n")
        #expect(masked1, "\(TestWorld.redacted(r.output))")
        let present1 = r.log.contains("kv-secret-value-0123456789")
        #expect(!present1)
        // Computed first: a failing expectation would print the log, and with it the secret.
        let masked2 = r.output.contains("key: [MASKED]\n") && !r.log.contains("PRIVATE KEY")
        #expect(masked2, "\(TestWorld.redacted(r.output))")
        // Cleanup revoked both logins and, with them, the certificate's lease: OpenBao lists it revoked.
        let issued = world.auditRecords().filter { $0["event"] as? String == "issued" && $0["profile"] as? String == "tls-client" }
        #expect(issued.count == 1)
        #expect(try vault.liveAccessors(namespace: "platform").isEmpty, "a login outlived cleanup")
        #expect(try vault.liveLeases(prefix: "pki/issue/ci/", namespace: "platform", within: 3).isEmpty, "the certificate's lease outlived cleanup")
        let audit = try String(contentsOfFile: world.auditLog, encoding: .utf8)
        // Computed first: a failing expectation prints its operands, and with them the leak.
        let auditLeaks = audit.contains("PRIVATE KEY") || audit.contains("kv-secret-value")
        #expect(!auditLeaks)
        #expect(audit.contains("\"accessor\""))
        #expect(audit.components(separatedBy: "\"outcome\":\"revoked\"").count == 3)
    }

    /// A world whose one profile, granted to project 42, is a Vault child token (`token = true`) from
    /// the Vault at `address` (OpenBao, or FakeVault where a test needs a fault).
    static func tokenWorld(_ issuer: TestIssuer, address: String) throws -> TestWorld {
        try TestWorld(extra: """
        [gitlab]
        issuer = "\(issuer.issuer)"
        audience = "\(Self.audience)"

        \(PeerTables.vault(address: address))
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
        let vault = try Self.bao(issuer)
        let world = try Self.tokenWorld(issuer, address: vault.address)
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
        #expect(try vault.liveAccessors().isEmpty, "a token outlived cleanup")
    }

    /// The role's policies lack `auth/token/create` (OpenBao's default policy has none): a system
    /// failure whose job log names the policy line to add, and the login is revoked.
    @Test func tokenWithoutTheCreatePolicyIsASystemFailureNamingThePolicyLine() throws {
        let issuer = try TestIssuer()
        let vault = try Self.bao(issuer, policy: #"path "secret/data/ci/*" { capabilities = ["read"] }"#)
        let world = try Self.tokenWorld(issuer, address: vault.address)
        var job = SimulatedJob(script: [#"echo "token-length=${#VAULT_TOKEN}""#])
        job.idTokens = ["AIRLOCK_ID_TOKEN": issuer.mint(issuer.claims(for: job, audience: Self.audience))]
        let r = world.simulate(job) { $0.runnerMasking = false }
        #expect(r.failureReason == "system_failure", "\(TestWorld.redacted(r.log))")
        #expect(r.log.contains(#"add path "auth/token/create" { capabilities = ["update"] } to a policy in the role's token_policies"#), "\(TestWorld.redacted(r.log))")
        #expect(!r.output.contains("token-length="))
        #expect(try vault.liveAccessors().isEmpty, "the login outlived the failure")
    }

    /// A batch role: the certificate's lease is revoked at cleanup, and the audit and the runner's
    /// log say the login token runs out (partly_revoked), not that it was revoked.
    @Test func aBatchLoginIsRecordedHonestly() throws {
        let issuer = try TestIssuer()
        let vault = try Self.bao(issuer)
        let world = try TestWorld(extra: """
        [gitlab]
        issuer = "\(issuer.issuer)"
        audience = "\(Self.audience)"

        \(PeerTables.vault(address: vault.address))
        [profiles.tls-client]
        provider = "vault"
        role = "batch-{project_id}"
        secret = "pki/issue/ci"
        secret_params = { common_name = "p{project_id}.ci.test" }
        env = { TLS_KEY = "private_key" }

        [[rules]]
        name = "project 42"
        project_id = 42
        grant = ["tls-client"]
        """)
        var job = SimulatedJob(script: [#"echo "key-lines=$(printf '%s\n' "$TLS_KEY" | wc -l)""#])
        job.idTokens = ["AIRLOCK_ID_TOKEN": issuer.mint(issuer.claims(for: job, audience: Self.audience))]
        let r = world.simulate(job) { $0.runnerMasking = false }
        #expect(r.status == "success", "\(TestWorld.redacted(r.log))")
        #expect(r.output.contains("key-lines=28\n") || r.output.contains("key-lines=27\n"), "\(TestWorld.redacted(r.output))")
        #expect(try vault.liveLeases(prefix: "pki/issue/ci/").isEmpty, "the certificate's lease outlived cleanup")
        let settled = world.auditRecords().filter { $0["event"] as? String == "revoked" }
        #expect(settled.count == 1 && settled.first?["outcome"] as? String == "partly_revoked", "\(settled)")
        #expect((settled.first?["remains"] as? String ?? "").contains("batch login token"))
        #expect(settled.first?["expires_at"] != nil)
        #expect(r.runnerLog.contains("its lease revoked; the batch login token"), "\(TestWorld.redacted(r.runnerLog))")
    }

    /// Vault down at cleanup: the credential is recorded `revoke_failed` with when it expires, the
    /// ledger is kept, and the runner's log says so; sweep later tries again and still keeps it.
    @Test func revocationFailureIsRecordedAndTheLedgerKept() throws {
        let issuer = try TestIssuer()
        let vault = try Self.bao(issuer)
        let world = try Self.tokenWorld(issuer, address: vault.address)
        var job = SimulatedJob(script: [#"echo "token-length=${#VAULT_TOKEN}""#])
        job.idTokens = ["AIRLOCK_ID_TOKEN": issuer.mint(issuer.claims(for: job, audience: Self.audience))]
        let env = try world.runnerEnvironment(jobID: job.jobID, variables: [
            "CI_PROJECT_PATH": job.projectPath, "AIRLOCK_ID_TOKEN": job.idTokens["AIRLOCK_ID_TOKEN"] ?? ""])
        let prep = world.execute("airlock-prepare", environment: env)
        #expect(prep.code == 0, "\(prep.stderr)")
        vault.stop()
        let cleanup = world.execute("airlock-cleanup", environment: env)
        let out = cleanup.stdout + cleanup.stderr
        #expect(out.contains("vault-token (hmac:") && out.contains("revocation failed"), "\(TestWorld.redacted(out))")
        let failed = world.auditRecords().filter { $0["event"] as? String == "revoke_failed" }
        #expect(failed.count == 1 && failed.first?["expires_at"] != nil, "\(failed)")
        #expect(FileManager.default.fileExists(atPath: "\(world.stateDir)/jobs/\(job.jobID)/ledger.json"), "the ledger of an unrevoked credential was removed")
        let swept = world.run(["sweep", "--config", world.configPath, "--force"])
        #expect(swept.stdout.contains("job \(job.jobID): 1 credential(s) could not be revoked, kept"), "\(swept.stdout)\(swept.stderr)")
        #expect(world.auditRecords().contains { $0["event"] as? String == "swept" && $0["outcome"] as? String == "revoke_failed" })
        // The login and child tokens (from the kept ledger) are in no output. Computed first: a
        // failing expectation prints its operands.
        let ledger = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(world.stateDir)/jobs/\(job.jobID)/ledger.json"))) as? [[String: Any]] ?? []
        let tokens = ledger.flatMap { (($0["credential"] as? [String: Any])?["secrets"] as? [String: String] ?? [:]).values }
        #expect(tokens.count == 2)
        let leaked = [out, swept.stdout, swept.stderr, world.auditText].contains { text in tokens.contains { text.contains($0) } }
        #expect(!leaked)
    }

    /// Issue 13: a value too short to mask (under 8 bytes) is never in a job's environment. A KV
    /// field delivered as env fails the job (a system failure naming the profile, the field and the
    /// fix) and what was issued is revoked; delivered as a file it is given, and the log says so.
    @Test(arguments: ["env", "file"])
    func aValueTooShortToMaskIsOnlyEverAFile(deliver: String) throws {
        let issuer = try TestIssuer()
        let vault = try Self.bao(issuer)
        try vault.putKV("ci/42", ["pin": "4711"])
        let world = try TestWorld(extra: """
        [gitlab]
        issuer = "\(issuer.issuer)"
        audience = "\(Self.audience)"

        \(PeerTables.vault(address: vault.address))
        [profiles.pin]
        provider = "vault"
        role = "ci-{project_id}"
        kv = "secret/ci/{project_id}"
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
            #expect(try vault.liveAccessors().isEmpty, "the Vault login outlived the refusal")
        } else {
            #expect(r.status == "success", "\(TestWorld.redacted(r.log))")
            #expect(r.output.contains("pin-length=4\n"), "\(TestWorld.redacted(r.output))")
            #expect(r.log.contains("Airlock: profile pin: PIN shorter than 8 bytes, too short to mask in this log: delivered only as a file"), "\(TestWorld.redacted(r.log))")
        }
    }
}
