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
            "test -n \"$DB_USER\" && test -n \"$DB_PASSWORD\" && echo db-user=${DB_USER%%-*}",
            "test -f \"$API_KEY\" && echo api-key-file=$API_KEY && cat \"$API_KEY\"; echo",
            "echo \"password: $DB_PASSWORD\"",
        ])
        job.idTokens = ["AIRLOCK_ID_TOKEN": issuer.mint(issuer.claims(for: job, audience: Self.audience))]
        let r = world.simulate(job) { $0.runnerMasking = false }
        #expect(r.status == "success", "\(r.log)")
        #expect(r.log.contains("db-user=v"))
        #expect(r.log.contains("api-key-file=/run/airlock/secrets/app-config-API_KEY"))
        #expect(!r.log.contains("kv-secret-value-0123456789"))
        #expect(r.log.contains("password: [MASKED]"))
        // Cleanup revoked both logins and, with them, the database lease.
        #expect(vault.revokedAccessors.count == 2)
        #expect(vault.revokedLeases.count == 1 && vault.allLeases.count == 1)
        let audit = try String(contentsOfFile: world.auditLog, encoding: .utf8)
        #expect(!audit.contains("hvs."))
        #expect(audit.contains("\"accessor\""))
        #expect(audit.components(separatedBy: "\"outcome\":\"revoked\"").count == 3)
    }
}
