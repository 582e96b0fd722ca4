import _CryptoExtras
import AirlockTesting
import Crypto
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Identity
import Testing

/// Issue 17: providers that trust Airlock's issuer, not GitLab's. Every peer that verifies the job's
/// token here knows Airlock only by the documents `airlock issuer publish` wrote, served by a
/// loopback static server: the Entra fake (federation.md A2; FIC issuer = Airlock's url), the Google
/// STS fake (A3; pool provider issuer = Airlock's url, no allowed audiences, so `https:` + its name),
/// an OAuth token-exchange server (A5; subject token aud = its origin), and OpenBao itself (A4; JWT
/// auth with `oidc_discovery_url` = Airlock's url, a role bound to an audience and to the
/// `airlock_profile` claim only Airlock's token carries). moto does not check tokens at all, so
/// for AWS the audit shows what was presented. GitLab's token, presented directly, is refused by each.
@Suite(.serialized)
struct AirlockIssuerEndToEndTests {
    static let gitlabAudience = "https://airlock.test"
    static let client = "8a3b1c2d-0000-4e5f-9a8b-7c6d5e4f3a2b"
    static let wip = "//iam.googleapis.com/projects/123456789/locations/global/workloadIdentityPools/airlock/providers/runners"
    static let sa = "ci-42@platform-prod.iam.gserviceaccount.com"
    static let subject = "project_path:platform/api:ref_type:branch:ref:main"
    static let vaultAudience = "https://vault.airlock.test"

    final class Peers: @unchecked Sendable {
        let gitlab: TestIssuer
        let world: TestWorld
        let site: StaticSite
        /// Each verifying peer's own view of Airlock's issuer (so each one's fetches can be counted).
        let trustAzure: PublishedIssuer, trustGoogle: PublishedIssuer, trustOAuth: PublishedIssuer
        var trust: PublishedIssuer { trustAzure }
        let moto: MotoServer
        let azure: FakeAzure
        let google: FakeGoogle
        let oauth: FakeOAuthServer
        let bao: OpenBaoServer
        let keyA: String
        var kidA: String { (try? IssuerKey.load(path: keyA).kid) ?? "?" }

        /// `p256`: the signing key is P-256 (ES256) rather than RSA.
        init(endpoint: Bool = false, p256: Bool = false) throws {
            gitlab = try TestIssuer()
            world = try TestWorld()
            site = try StaticSite(root: world.root + "/site")
            keyA = world.root + "/etc/issuer-a.pem"
            let pem = p256 ? P256.Signing.PrivateKey().pemRepresentation : try _RSA.Signing.PrivateKey(keySize: .bits2048).pemRepresentation
            FileManager.default.createFile(atPath: keyA, contents: Data(pem.utf8), attributes: [.posixPermissions: 0o600])
            trustAzure = PublishedIssuer(issuer: site.url)
            trustGoogle = PublishedIssuer(issuer: site.url)
            trustOAuth = PublishedIssuer(issuer: site.url)
            moto = try MotoServer()
            azure = try FakeAzure(issuer: trustAzure)
            azure.addApp(AirlockIssuerEndToEndTests.client, [.init(issuer: site.url, subject: AirlockIssuerEndToEndTests.subject)])
            google = try FakeGoogle(issuer: trustGoogle)
            google.addProvider(AirlockIssuerEndToEndTests.wip, .init(issuer: site.url))
            google.addServiceAccount(AirlockIssuerEndToEndTests.sa, impersonators: [AirlockIssuerEndToEndTests.subject])
            oauth = try FakeOAuthServer(issuer: trustOAuth, subjectAudience: "")
            oauth.subjectAudience = oauth.baseURL  // the token endpoint's origin
            oauth.revocationEnabled = false
            oauth.register(clientID: "public-client", .init())
            bao = try OpenBaoServer()
            try writeConfig(signing: keyA, endpoint: endpoint)
            try publish()
            // OpenBao reads Airlock's discovery document when its JWT auth is configured.
            try bao.enableJWT(issuer: site.url)
            try bao.writePolicy("ci", OpenBaoServer.readmePolicy)
            try bao.writeRole("ci-42", audience: AirlockIssuerEndToEndTests.vaultAudience,
                              boundClaims: ["project_id": "42", "airlock_profile": "vault-token"], policies: ["ci"])
        }

        /// Each peer table with `identity = "airlock"` (and `more`) added.
        static func airlock(_ table: String, _ more: String = "") -> String {
            String(table.dropLast()) + "identity = \"airlock\"\n" + more + "\n"
        }

        func writeConfig(signing: String, previous: [String] = [], endpoint: Bool = false) throws {
            try world.writeConfig(extra: """
            [gitlab]
            issuer = "\(gitlab.issuer)"
            audience = "\(AirlockIssuerEndToEndTests.gitlabAudience)"

            [issuer]
            url = "\(site.url)"
            signing_key_file = "\(signing)"
            previous_key_files = [\(previous.map { "\"\($0)\"" }.joined(separator: ", "))]

            \(Self.airlock(PeerTables.aws(moto: moto)))\(Self.airlock(PeerTables.azure(azure)))\(Self.airlock(PeerTables.gcp(google)))\(Self.airlock(PeerTables.oauth("plain", oauth, clientID: "public-client")))\(Self.airlock(PeerTables.vault(address: bao.address), "audience = \"\(AirlockIssuerEndToEndTests.vaultAudience)\"\n"))
            \(PeerTables.fiveProfiles(azureClient: AirlockIssuerEndToEndTests.client, workloadIdentityProvider: AirlockIssuerEndToEndTests.wip,
                                      serviceAccount: AirlockIssuerEndToEndTests.sa, vaultRole: "ci-{project_id}",
                                      deployExtra: endpoint ? "deliver = \"endpoint\"" : ""))
            [[rules]]
            name = "project 42"
            project_id = 42
            grant = ["deploy", "arm", "gcs", "plain", "vault-token"]
            """)
        }

        /// `airlock issuer publish` into the static site.
        func publish() throws {
            let r = world.run(["issuer", "publish", "--config", world.configPath, "--out", site.root])
            guard r.code == 0 else { throw AirlockFailureForTest("publish failed: \(r.stderr)") }
        }

        /// A job that declares only the ID token Airlock's policy reads: no second token for Entra.
        func job(_ script: [String], profiles: String) -> SimulatedJob {
            var j = SimulatedJob(script: script)
            j.variables = ["AIRLOCK_PROFILES": profiles, "AWS_ENDPOINT_URL_STS": moto.url]
            j.idTokens = ["AIRLOCK_ID_TOKEN": gitlab.mint(gitlab.claims(for: j, audience: AirlockIssuerEndToEndTests.gitlabAudience))]
            return j
        }

        /// A GitLab ID token for `audience`, as a job can ask GitLab for one.
        func gitlabToken(audience: String) -> String {
            gitlab.mint(gitlab.claims(for: SimulatedJob(script: []), audience: audience))
        }

        func issued() -> [[String: Any]] { world.auditRecords().filter { $0["event"] as? String == "issued" } }
    }

    struct AirlockFailureForTest: Error, CustomStringConvertible {
        let description: String
        init(_ d: String) { description = d }
    }

    static func post(_ url: String, form: [(String, String)], json: Bool = false) async throws -> (status: Int, body: String) {
        var req = URLRequest(url: URL(string: url)!)
        req.httpMethod = "POST"
        if json {
            req.setValue("application/json", forHTTPHeaderField: "Content-Type")
            req.httpBody = try JSONSerialization.data(withJSONObject: Dictionary(uniqueKeysWithValues: form))
        } else {
            req.setValue("application/x-www-form-urlencoded", forHTTPHeaderField: "Content-Type")
            let allowed = CharacterSet.alphanumerics.union(CharacterSet(charactersIn: "-._~"))
            req.httpBody = Data(form.map { "\($0.0)=\($0.1.addingPercentEncoding(withAllowedCharacters: allowed)!)" }.joined(separator: "&").utf8)
        }
        let (data, resp) = try await URLSession.shared.data(for: req)
        return ((resp as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: data, as: UTF8.self))
    }

    @Test func everyProviderAcceptsAirlocksTokenAndNoneAcceptsGitLabs() async throws {
        let p = try Peers()
        let job = p.job([#"echo "lengths=${#AWS_SESSION_TOKEN}:${#PLAIN_TOKEN}:${#VAULT_TOKEN}""#], profiles: "deploy,arm,gcs,plain,vault-token")
        let r = p.world.simulate(job) { $0.runnerMasking = false }
        #expect(r.status == "success", "\(TestWorld.redacted(r.log))")
        #expect(r.output.firstMatch(of: /lengths=[1-9][0-9]*:[1-9][0-9]*:[1-9][0-9]*\n/) != nil, "\(TestWorld.redacted(r.output))")
        // Each exchange presented its own token from Airlock's key, for what its provider expects.
        let issued = p.issued()
        let audience = Dictionary(issued.map { ($0["profile"] as? String ?? "?", $0["identity_audience"] as? String ?? "none") }, uniquingKeysWith: { a, _ in a })
        #expect(audience == ["deploy": "sts.amazonaws.com", "arm": "api://AzureADTokenExchange", "gcs": "https:" + Self.wip,
                             "plain": p.oauth.baseURL, "vault-token": Self.vaultAudience], "\(issued)")
        #expect(issued.allSatisfy { $0["identity"] as? String == "airlock" && $0["identity_kid"] as? String == p.kidA })
        #expect(Set(issued.compactMap { $0["identity_jti"] as? String }).count == 5)
        // Each peer that checks signatures fetched Airlock's documents (discovery, then JWKS) from the static site.
        #expect(p.trustAzure.fetchCount >= 2 && p.trustGoogle.fetchCount >= 2 && p.trustOAuth.fetchCount >= 2)
        // No token, Airlock's or GitLab's, is in the audit log or the job log.
        let inAudit = p.world.auditText.contains("eyJ"), inLog = r.log.contains("eyJ")
        #expect(!inAudit && !inLog)

        // A provider that refuses Airlock's token: the failure names the token presented (jti, kid,
        // audience) so that it can be found in the provider's own logs; nothing is issued.
        p.google.addProvider(Self.wip, .init(issuer: p.site.url, condition: { $0["ref_protected"] == "false" }))
        let refused = p.world.simulate(p.job(["echo ran"], profiles: "gcs")) { $0.runnerMasking = false }
        #expect(refused.status == "failed" && !refused.output.contains("ran\n"))
        let failed = p.world.auditRecords().last { $0["event"] as? String == "federation_failed" }
        #expect(failed?["profile"] as? String == "gcs" && failed?["identity_kid"] as? String == p.kidA, "\(String(describing: failed))")
        #expect(failed?["identity_audience"] as? String == "https:" + Self.wip && (failed?["identity_jti"] as? String)?.count == 36)

        // GitLab's token, for exactly the audience each expects, presented directly: refused by each.
        let entra = try await Self.post("\(p.azure.authorityHost)/\(p.azure.tenant)/oauth2/v2.0/token", form: [
            ("grant_type", "client_credentials"), ("client_id", Self.client), ("scope", "https://management.azure.com/.default"),
            ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
            ("client_assertion", p.gitlabToken(audience: "api://AzureADTokenExchange"))])
        #expect(entra.status == 401 && entra.body.contains("AADSTS700211"), "\(entra.body)")
        let sts = try await Self.post(p.google.stsEndpoint, form: [
            ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"), ("audience", Self.wip),
            ("scope", "https://www.googleapis.com/auth/cloud-platform"), ("requested_token_type", "urn:ietf:params:oauth:token-type:access_token"),
            ("subject_token", p.gitlabToken(audience: "https:" + Self.wip)), ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt")])
        #expect(sts.status == 400 && sts.body.contains("invalid_grant"), "\(sts.body)")
        let exchange = try await Self.post(p.oauth.tokenEndpoint, form: [
            ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"), ("client_id", "public-client"),
            ("subject_token", p.gitlabToken(audience: p.oauth.baseURL)), ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt")])
        #expect(exchange.status == 400 && exchange.body.contains("invalid_grant"), "\(exchange.body)")
        var gitlabClaims = p.gitlab.claims(for: SimulatedJob(script: []), audience: Self.vaultAudience)
        gitlabClaims["airlock_profile"] = "vault-token"  // a GitLab token that even carries the bound claim
        let login = try await Self.post("\(p.bao.address)/v1/auth/jwt/login", form: [("role", "ci-42"), ("jwt", p.gitlab.mint(gitlabClaims))], json: true)
        #expect(login.status == 400 && !login.body.contains("client_token"), "\(login.body)")
        // The peers (OpenBao, the fakes) live in `p`: keep it until the last request has been answered.
        withExtendedLifetime(p) {}
    }

    /// Rotation with overlap: a token signed with the old key stays verifiable while that key is
    /// still published as a previous key, new tokens are signed with the new key, and once the old
    /// key is no longer published its tokens are refused; a token past its exp is refused anyway.
    /// A configured key that is not yet published is what `airlock check` reports.
    @Test func rotationKeepsOldTokensVerifiableUntilTheOldKeyIsWithdrawn() async throws {
        let p = try Peers()
        let job = VerifiedJob(claims: ["sub": Self.subject, "project_id": "42", "runner_id": "5"])
        let minterA = IdentityMinter(issuer: p.site.url, key: try IssuerKey.load(path: p.keyA), lifetime: 300, runnerHost: "runner")
        let oldToken = try await minterA.mint(job: job, audience: "sts.amazonaws.com", subject: Self.subject, profile: "deploy", now: Date()).token
        let expired = try await minterA.mint(job: job, audience: "sts.amazonaws.com", subject: Self.subject, profile: "deploy",
                                             now: Date().addingTimeInterval(-400)).token
        #expect(p.trust.verifiedClaims(oldToken) != nil)
        #expect(p.trust.verifiedClaims(expired) == nil)

        // Step 1: a new key, published beside the old one before it signs anything.
        let keyB = p.world.root + "/etc/issuer-b.pem"
        let rotate = p.world.run(["issuer", "rotate", "--config", p.world.configPath, "--new-key", keyB])
        #expect(rotate.code == 0, "\(rotate.stderr)")
        #expect(rotate.stdout.contains("airlock issuer publish"), "\(rotate.stdout)")
        let kidB = try IssuerKey.load(path: keyB).kid
        #expect(try IssuerKey.load(path: keyB).algorithm == .rs256)  // the current key's type: Entra verifies RSA only
        try p.writeConfig(signing: keyB, previous: [p.keyA])
        // Not yet published: airlock check names the key.
        let before = p.world.run(["check", "--config", p.world.configPath])
        #expect(before.code != 0 && (before.stdout + before.stderr).contains("kid \(kidB)) is not published"), "\(before.stdout)\(before.stderr)")
        try p.publish()
        let after = p.world.run(["check", "--config", p.world.configPath])
        #expect(!(after.stdout + after.stderr).contains("is not published"), "\(after.stdout)\(after.stderr)")
        #expect(after.stdout.contains("[providers.azure] is shown Airlock's identity, not GitLab's (aud api://AzureADTokenExchange)"), "\(after.stdout)")
        #expect(p.trust.verifiedClaims(oldToken) != nil)

        // New jobs are signed with the new key, and every provider still accepts them.
        let r = p.world.simulate(p.job(["echo ok"], profiles: "deploy,arm,gcs,plain,vault-token")) { $0.runnerMasking = false }
        #expect(r.status == "success", "\(TestWorld.redacted(r.log))")
        #expect(p.issued().count == 5 && p.issued().allSatisfy { $0["identity_kid"] as? String == kidB })

        // Step 3: the old key withdrawn (after the old tokens' lifetime): its tokens are refused.
        try p.writeConfig(signing: keyB)
        try p.publish()
        #expect(p.trust.verifiedClaims(oldToken) == nil)
        withExtendedLifetime(p) {}
    }

    /// Part 4: in endpoint mode the job's state keeps no GitLab token when every served profile's
    /// provider is shown Airlock's; the SDK still gets its credentials.
    @Test func theEndpointSessionKeepsNoGitLabToken() async throws {
        let p = try Peers(endpoint: true)
        let release = p.world.signalPath("release")
        let j = p.job([TestWorld.waitFor(release),
                       "python3 -c 'import boto3; print(\"boto3\", boto3.client(\"sts\").get_caller_identity()[\"Arn\"])'"], profiles: "deploy")
        final class Box: @unchecked Sendable { var result: SimulationResult?; let done = DispatchSemaphore(value: 0) }
        let box = Box()
        let world = p.world
        Thread.detachNewThread { box.result = world.simulate(j) { $0.runnerMasking = false }; box.done.signal() }
        defer { world.signal(release) }
        let file = "\(world.stateDir)/jobs/\(j.jobID)/endpoint.json"
        var session: [String: Any]?
        for _ in 0..<1200 where session == nil {
            try await Task.sleep(nanoseconds: 50_000_000)
            session = FileManager.default.contents(atPath: file).flatMap { try? JSONSerialization.jsonObject(with: $0) as? [String: Any] }
        }
        let s = try #require(session)
        #expect(s["idToken"] as? String == "" && (s["providerTokens"] as? [String: String])?.isEmpty == true)
        let raw = (FileManager.default.contents(atPath: file)).map { String(decoding: $0, as: UTF8.self) } ?? ""
        let holdsAToken = raw.contains("eyJ")  // computed first: a failing expectation would print the file
        #expect(!holdsAToken)
        world.signal(release)
        box.done.wait()
        let r = try #require(box.result)
        #expect(r.status == "success", "\(TestWorld.redacted(r.log))")
        #expect(r.output.contains("boto3 arn:aws:sts::123456789012:assumed-role/gitlab-42/"), "\(TestWorld.redacted(r.output))")
        withExtendedLifetime(p) {}
    }

    /// Entra verifies RSA-signed tokens only (AADSTS5002738 for ES256). With a P-256 issuer key the
    /// Azure exchange fails before anything is sent, as the system's fault, nothing reaches the job
    /// and nothing issued survives, and `airlock check` says what to do; the providers that take
    /// ES256 (Google, OpenBao, the OAuth server) get their credentials.
    @Test func anIssuerKeyEntraCannotVerifyIsCaughtBeforeTheExchange() async throws {
        let p = try Peers(p256: true)
        let ok = p.world.simulate(p.job(["echo ok"], profiles: "gcs,plain,vault-token")) { $0.runnerMasking = false }
        #expect(ok.status == "success", "\(TestWorld.redacted(ok.log))")
        let r = p.world.simulate(p.job(["echo ran"], profiles: "arm,gcs")) { $0.runnerMasking = false }
        #expect(r.status == "failed" && !r.output.contains("ran\n"))
        #expect(r.log.contains("verifies only RS256") && r.log.contains("openssl genpkey -algorithm RSA"), "\(TestWorld.redacted(r.log))")
        let failed = p.world.auditRecords().filter { $0["event"] as? String == "federation_failed" }
        #expect(failed.contains { $0["code"] as? String == "IssuerKeyAlgorithm" && $0["fault"] as? String == "system" }, "\(failed)")
        #expect(p.azure.requestedScopes.isEmpty)
        // What was issued before the failure (gcs) was taken back.
        let gcs = p.world.auditRecords().filter { $0["profile"] as? String == "gcs" && ["issued", "revoked"].contains($0["event"] as? String) }
        #expect(gcs.filter { $0["event"] as? String == "issued" }.count == gcs.filter { $0["event"] as? String == "revoked" }.count, "\(gcs)")
        #expect(gcs.contains { $0["event"] as? String == "revoked" && $0["reason"] as? String == "rollback" }, "\(gcs)")
        let check = p.world.run(["check", "--config", p.world.configPath])
        #expect(check.code != 0 && (check.stdout + check.stderr).contains("[providers.azure] (azure) verifies only RS256"), "\(check.stdout)\(check.stderr)")
        // The fake refuses such a token as Entra does, had Airlock sent it.
        let minter = IdentityMinter(issuer: p.site.url, key: try IssuerKey.load(path: p.keyA), lifetime: 300, runnerHost: "runner")
        let es256 = try await minter.mint(job: VerifiedJob(claims: ["sub": Self.subject]), audience: "api://AzureADTokenExchange",
                                          subject: Self.subject, profile: "arm", now: Date()).token
        let entra = try await Self.post("\(p.azure.authorityHost)/\(p.azure.tenant)/oauth2/v2.0/token", form: [
            ("grant_type", "client_credentials"), ("client_id", Self.client), ("scope", "https://management.azure.com/.default"),
            ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"), ("client_assertion", es256)])
        #expect(entra.status == 400 && entra.body.contains("AADSTS5002738"), "\(entra.body)")
        withExtendedLifetime(p) {}
    }
}
