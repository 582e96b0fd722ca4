import _CryptoExtras
import AirlockTesting
import Foundation
import Testing

/// OAuth through the built executables, and AWS (moto) + Vault (OpenBao; FakeVault only where a
/// login must be slow on purpose) + OAuth (FakeOAuthServer, federation.md A5) granted to one job.
@Suite(.serialized)
struct MultiProviderEndToEndTests {
    static let audience = "https://airlock.test"

    final class Peers: @unchecked Sendable {
        let issuer: TestIssuer
        let moto: MotoServer
        /// A slow Vault (fault injection) for the concurrency test, else nil.
        let slowVault: FakeVault?
        /// OpenBao, the real server, everywhere else.
        let bao: OpenBaoServer?
        let auth0: FakeOAuthServer
        let plain: FakeOAuthServer
        let world: TestWorld

        init(oauthClient: String = "ci-rsa", slowVaultLogin: Double? = nil) throws {
            issuer = try TestIssuer()
            moto = try MotoServer()
            let vaultAddress: String
            if let delay = slowVaultLogin {
                let v = try FakeVault(issuer: issuer)
                v.addRole("ci-42", .init(boundAudience: MultiProviderEndToEndTests.audience, mayCreateTokens: true))
                v.loginDelay = delay
                slowVault = v
                bao = nil
                vaultAddress = v.address
            } else {
                let b = try OpenBaoServer()
                try b.enableJWT(issuer: issuer.issuer)
                try b.writePolicy("ci", OpenBaoServer.readmePolicy)
                try b.writeRole("ci-42", audience: MultiProviderEndToEndTests.audience, boundClaims: ["project_id": "42"], policies: ["ci"])
                bao = b
                slowVault = nil
                vaultAddress = b.address
            }
            auth0 = try FakeOAuthServer(issuer: issuer, subjectAudience: MultiProviderEndToEndTests.audience)
            auth0.subjectTokenType = "https://airlock.example.com/gitlab-id-token"
            plain = try FakeOAuthServer(issuer: issuer, subjectAudience: MultiProviderEndToEndTests.audience)
            plain.revocationEnabled = false
            plain.jwtAccessTokens = false  // a server with opaque tokens
            let key = try _RSA.Signing.PrivateKey(keySize: .bits2048)
            auth0.register(clientID: "ci-rsa", .init(rsaKey: key.publicKey))
            plain.register(clientID: "public-client", .init())
            world = try TestWorld()
            let keyFile = world.root + "/etc/auth0-client.pem"
            FileManager.default.createFile(atPath: keyFile, contents: Data(key.pemRepresentation.utf8), attributes: [.posixPermissions: 0o600])
            try world.writeConfig(extra: """
            [gitlab]
            issuer = "\(issuer.issuer)"
            audience = "\(MultiProviderEndToEndTests.audience)"

            \(PeerTables.aws(moto: moto))\(PeerTables.vault(address: vaultAddress))\(PeerTables.oauth("auth0", auth0, clientID: oauthClient, keyFile: keyFile, revocation: true, introspection: true))\(PeerTables.oauth("plain", plain, clientID: "public-client"))
            [profiles.deploy]
            provider = "aws"
            role_arn = "arn:aws:iam::123456789012:role/gitlab-{project_id}"

            [profiles.vault-token]
            provider = "vault"
            role = "ci-{project_id}"
            token = true

            [profiles.api]
            provider = "auth0"
            grant = "token_exchange"
            subject_token_type = "https://airlock.example.com/gitlab-id-token"
            audience = "https://api.example.com"
            scope = "deploy offline_access"
            variable = "API_TOKEN"

            [profiles.m2m]
            provider = "auth0"
            grant = "client_credentials"
            audience = "https://m2m.example.com"
            variable = "M2M_TOKEN"

            [profiles.checked]
            provider = "auth0"
            grant = "client_credentials"
            audience = "https://m2m.example.com"
            variable = "CHECKED_TOKEN"
            introspect = true

            [profiles.plain]
            provider = "plain"
            grant = "token_exchange"
            variable = "PLAIN_TOKEN"

            [[rules]]
            name = "project 42"
            project_id = 42
            grant = ["deploy", "vault-token", "api", "m2m", "plain", "checked"]
            """)
        }

        func job(_ script: [String], profiles: String) -> SimulatedJob {
            var j = SimulatedJob(script: script)
            j.variables = ["AIRLOCK_PROFILES": profiles, "AWS_ENDPOINT_URL_STS": moto.url]
            j.idTokens = ["AIRLOCK_ID_TOKEN": issuer.mint(issuer.claims(for: j, audience: MultiProviderEndToEndTests.audience))]
            return j
        }

        func audit() -> [[String: Any]] { world.auditRecords() }
    }

    @Test func exchangeAndPrivateKeyJWTTokensReachTheJobAndAreRevoked() throws {
        let p = try Peers()
        let job = p.job([#"echo "lengths=${#API_TOKEN}:${#M2M_TOKEN}:${#PLAIN_TOKEN}""#,
                         #"echo "api=[$API_TOKEN] m2m=[$M2M_TOKEN] plain=[$PLAIN_TOKEN]""#],
                        profiles: "api,m2m,plain")
        let r = p.world.simulate(job) { $0.runnerMasking = false }
        #expect(r.status == "success", "\(TestWorld.redacted(r.log))")
        // Each variable holds a token (Auth0's are JWTs; the plain server's "at_" + 96 characters)...
        let lengths = try #require(r.output.firstMatch(of: /lengths=(\d+):(\d+):99\n/), "\(TestWorld.redacted(r.output))")
        #expect((Int(lengths.1) ?? 0) > 400 && (Int(lengths.2) ?? 0) > 400)
        // ...and each printed token is masked where it stood.
        // Computed first: a failing expectation would print the log, and with it the secret.
        let masked1 = r.output.contains("api=[[MASKED]] m2m=[[MASKED]] plain=[[MASKED]]\n")
        #expect(masked1, "\(TestWorld.redacted(r.output))")
        let present1 = r.log.contains("at_") || r.log.contains("eyJ")
        #expect(!present1)
        // Only the exchange that asked for offline_access got a refresh token (Auth0), and only it
        // was revoked: Auth0's JWT access tokens are never sent to revocation, never called revoked.
        #expect(p.auth0.refreshTokens.count == 1)
        #expect(p.auth0.revoked.count == 1 && p.auth0.revoked[0].hint == "refresh_token")
        #expect(p.auth0.refreshTokens.allSatisfy { !p.auth0.isActive($0) })
        let revoked = p.audit().filter { $0["event"] as? String == "revoked" }
        #expect(revoked.first { $0["profile"] as? String == "plain" }?["outcome"] as? String == "expires_at")
        #expect(revoked.first { $0["profile"] as? String == "m2m" }?["outcome"] as? String == "expires_at")
        let api = revoked.first { $0["profile"] as? String == "api" }
        #expect(api?["outcome"] as? String == "partly_revoked" && api?["revoked_part"] as? String == "its refresh token", "\(revoked)")
        #expect((api?["remains"] as? String ?? "").contains("a JWT") && api?["expires_at"] != nil)
        #expect(!revoked.contains { $0["outcome"] as? String == "revoked" })
    }

    @Test func threeProvidersFederateConcurrently() throws {
        let p = try Peers(slowVaultLogin: 1.0)
        p.auth0.tokenDelay = 1.0
        let job = p.job([#"echo "lengths=${#AWS_SECRET_ACCESS_KEY}:${#VAULT_TOKEN}:${#API_TOKEN}""#],
                        profiles: "deploy,vault-token,api")
        let r = p.world.simulate(job)
        #expect(r.status == "success", "\(TestWorld.redacted(r.log))")
        // moto's secret keys are 40 characters, the fake Vault's tokens 44, Auth0's JWTs longer.
        let lengths = try #require(r.output.firstMatch(of: /lengths=40:44:(\d+)\n/), "\(TestWorld.redacted(r.output))")
        #expect((Int(lengths.1) ?? 0) > 400)
        // The Vault login and the OAuth exchange were in flight at the same time: each arrived
        // before the other was answered.
        let login = try #require(p.slowVault?.server.requestSpans.first { $0.path.hasSuffix("/login") })
        let token = try #require(p.auth0.server.requestSpans.first { $0.path == "/oauth/token" })
        #expect(login.start < token.end && token.start < login.end)
    }

    @Test func oneProviderFailingRevokesTheOtherTwo() throws {
        let p = try Peers(oauthClient: "unregistered-client")
        let job = p.job([#"echo "ran-$((6*7))""#], profiles: "deploy,vault-token,m2m")
        let r = p.world.simulate(job)
        #expect(r.failureReason == "system_failure", "\(TestWorld.redacted(r.log))")
        #expect(r.log.contains("invalid_client"))
        let records = p.audit()
        let issued = Set(records.filter { $0["event"] as? String == "issued" }.compactMap { $0["credential_id"] as? String })
        let revoked = Set(records.filter { $0["event"] as? String == "revoked" }.compactMap { $0["credential_id"] as? String })
        #expect(!issued.isEmpty && issued == revoked)
        // The Vault login was made, and it and its child token were revoked with everything else.
        #expect(records.contains { $0["event"] as? String == "issued" && $0["provider"] as? String == "vault" }, "\(records)")
        #expect(try p.bao?.liveAccessors().isEmpty == true)
    }

    /// `introspect = true`: a token the server says is not active is never handed to the job, and
    /// what was issued with it is revoked; with an active token the job runs.
    @Test func introspectionRefusesAnInactiveToken() throws {
        let p = try Peers()
        let ok = p.world.simulate(p.job([#"echo "checked-length=${#CHECKED_TOKEN}""#], profiles: "checked,deploy"))
        #expect(ok.status == "success", "\(ok.log)")
        let checked = try #require(ok.output.firstMatch(of: /checked-length=(\d+)\n/), "\(TestWorld.redacted(ok.output))")
        #expect((Int(checked.1) ?? 0) > 400)
        p.auth0.issuedTokensInactive = true
        let job = p.job([#"echo "ran-$((6*7))""#], profiles: "checked,deploy")
        let r = p.world.simulate(job)
        #expect(r.status == "failed", "\(TestWorld.redacted(r.log))")
        #expect(r.log.contains("introspection says the token just issued is not active"), "\(TestWorld.redacted(r.log))")
        let present2 = r.output.contains("ran-42")
        #expect(!present2)
        let records = p.audit().filter { $0["job_id"] as? String == "\(job.jobID)" }
        let issued = Set(records.filter { $0["event"] as? String == "issued" }.compactMap { $0["credential_id"] as? String })
        let revoked = Set(records.filter { $0["event"] as? String == "revoked" }.compactMap { $0["credential_id"] as? String })
        // The AWS profile granted beside it is rolled back; the inactive token never made the ledger.
        #expect(!issued.isEmpty && issued == revoked, "\(records)")
        #expect(!records.contains { $0["event"] as? String == "issued" && $0["profile"] as? String == "checked" })
    }
}
