import Policy
import AirlockConfiguration
import _CryptoExtras
import AirlockCore
import AirlockTesting
import Crypto
import Foundation
import HTTPClient
import Identity
import Ledger
import RunnerContract
import Testing

/// Every hostile token is refused with the check it failed, gets no grant, and leaves exactly one
/// audit record: the denial. Background: alg confusion (CVE-2015-9235 class), `none` tokens,
/// jku/x5u/jwk key injection (RFC 8725 §3.1, §3.10) and kid path traversal.
struct HostileTokenTests {
    /// A hostile token, and the attacker's servers Airlock must never contact to judge it.
    struct Attack: Sendable {
        var token: String
        var mustNotBeFetched: [LoopbackHTTPServer] = []
    }

    struct Case: Sendable, CustomTestStringConvertible {
        let name: String
        let check: TokenRejection.Check
        /// Extra `[gitlab]` settings for this case's config.
        let gitlab: String
        let make: @Sendable (IdentityFixture) throws -> Attack

        init(_ name: String, _ check: TokenRejection.Check, gitlab: String = "", token: @escaping @Sendable (IdentityFixture) throws -> String) {
            self.init(name, check, gitlab: gitlab, attack: { Attack(token: try token($0)) })
        }

        init(_ name: String, _ check: TokenRejection.Check, gitlab: String = "", attack: @escaping @Sendable (IdentityFixture) throws -> Attack) {
            self.name = name
            self.check = check
            self.gitlab = gitlab
            make = attack
        }

        var testDescription: String { name }
    }

    static let cases: [Case] = [
        .init("expired", .expired) { f in var c = f.claims(); c["exp"] = Int(Date().timeIntervalSince1970) - 600; return f.issuer.mint(c) },
        .init("not yet valid", .notYetValid) { f in var c = f.claims(); c["nbf"] = Int(Date().timeIntervalSince1970) + 600; return f.issuer.mint(c) },
        .init("issued in the future", .issuedInFuture) { f in var c = f.claims(); c["iat"] = Int(Date().timeIntervalSince1970) + 600; return f.issuer.mint(c) },
        .init("wrong issuer", .issuer) { f in var c = f.claims(); c["iss"] = "https://gitlab.evil.example"; return f.issuer.mint(c) },
        .init("wrong audience", .audience) { f in var c = f.claims(); c["aud"] = "https://someone-else.example"; return f.issuer.mint(c) },
        .init("alg none", .algorithm) { f in TestIssuer.segment(["alg": "none", "typ": "JWT"]) + "." + TestIssuer.segment(f.claims()) + "." },
        .init("HS256 keyed with the RSA public key", .algorithm) { f in
            TestIssuer.mintHS256(f.claims(), header: ["kid": f.issuer.currentKid], secret: Data(f.issuer.publicKeyPEM().utf8)) },
        .init("unknown kid", .unknownKey) { f in try TestIssuer.mintWithForeignKey(f.claims(), header: ["kid": "not-a-published-key"]) },
        .init("tampered payload", .signature) { f in
            let t = f.issuer.mint(f.claims()).split(separator: ".")
            var c = f.claims(); c["project_path"] = "platform/other"
            return "\(t[0]).\(TestIssuer.segment(c)).\(t[2])" },
        .init("tampered signature", .signature) { f in
            var t = f.issuer.mint(f.claims()).split(separator: ".").map(String.init)
            t[2] = String(t[2].reversed())
            return t.joined(separator: ".") },
        .init("truncated", .format) { f in let t = f.issuer.mint(f.claims()); return String(t.prefix(t.count / 3)) },
        .init("not base64", .format) { _ in "!!notbase64!!.@@@.###" },
        .init("oversized", .size) { f in var c = f.claims(); c["padding"] = String(repeating: "A", count: 20_000); return f.issuer.mint(c) },
        .init("missing claims", .missingClaim) { f in var c = f.claims(); c.removeValue(forKey: "project_id"); return f.issuer.mint(c) },
        .init("a claim required_claims adds is missing", .missingClaim, gitlab: "required_claims = [\"environment\"]") { f in f.issuer.mint(f.claims()) },
        // Key injection with a working attacker: its own valid key pair signs the token, and the
        // jku server is reachable and serves that key. Only ignoring the headers refuses these.
        .init("jku to the attacker's reachable JWKS", .unknownKey) { f in
            let a = try Attacker()
            return Attack(token: a.sign(f.claims(), header: ["kid": a.kid, "jku": a.jwksURL]), mustNotBeFetched: [a.server]) },
        .init("jku to the attacker's JWKS under the issuer's kid", .signature) { f in
            let a = try Attacker(kid: f.issuer.currentKid)
            return Attack(token: a.sign(f.claims(), header: ["kid": a.kid, "jku": a.jwksURL]), mustNotBeFetched: [a.server]) },
        .init("x5u to the attacker's server", .unknownKey) { f in
            let a = try Attacker()
            return Attack(token: a.sign(f.claims(), header: ["kid": a.kid, "x5u": a.server.baseURL + "/cert.pem"]), mustNotBeFetched: [a.server]) },
        .init("embedded jwk of the attacker's key", .unknownKey) { f in
            let a = try Attacker()
            return Attack(token: a.sign(f.claims(), header: ["kid": a.kid, "jwk": a.publicJWK])) },
        .init("embedded jwk of the attacker's key under the issuer's kid", .signature) { f in
            let a = try Attacker(kid: f.issuer.currentKid)
            return Attack(token: a.sign(f.claims(), header: ["kid": a.kid, "jwk": a.publicJWK])) },
        .init("kid with path characters", .keyID) { f in f.issuer.mint(f.claims(), header: ["kid": "../../../etc/passwd"]) },
        .init("ES256 claimed for an RSA key", .keyMismatch) { f in f.issuer.mint(f.claims(), header: ["alg": "ES256"]) },
        .init("header is not JSON", .header) { f in
            let t = f.issuer.mint(f.claims()).split(separator: ".")
            return "\(Base64URL.encode(Data("not json".utf8))).\(t[1]).\(t[2])" },
        .init("numeric exp as a string", .payload) { f in var c = f.claims(); c["exp"] = "9999999999"; return f.issuer.mint(c) },
        // The token must be this job's: job and project as the runner's payload says (README "Threat model").
        .init("another job's token", .wrongJob) { f in var c = f.claims(); c["job_id"] = "\(f.job.jobID + 1)"; return f.issuer.mint(c) },
        .init("another project's token (project_id)", .wrongJob) { f in var c = f.claims(); c["project_id"] = "\(f.job.projectID + 1)"; return f.issuer.mint(c) },
        .init("job_project_id names another project", .wrongJob) { f in var c = f.claims(); c["job_project_id"] = "\(f.job.projectID + 1)"; return f.issuer.mint(c) },
    ]

    @Test(arguments: cases)
    func hostileTokenIsRefused(_ c: Case) async throws {
        let f = try IdentityFixture(extraGitLab: c.gitlab)
        let attack = try c.make(f)
        let token = attack.token
        let r = await #expect(throws: TokenRejection.self) { _ = try await f.authorize(token) }
        #expect(r?.check == c.check, "\(r.map { "\($0)" } ?? "accepted")")
        #expect(r?.fault == .job)
        #expect(r?.description.contains(token) == false, "the message contains the token")
        #expect((r?.description.count ?? 0) < 600)
        for server in attack.mustNotBeFetched {
            #expect(server.requestCount == 0, "Airlock contacted the attacker's server named in the token's header")
        }
        let records = f.audit.records()
        #expect(records.count == 1, "\(records)")
        #expect(records.first?["decision"] == .string("denied"))
        #expect(records.first?["reason"] == .string("token_\(c.check.rawValue)"))
        let auditText = (try? String(contentsOfFile: f.config.runner.auditLog, encoding: .utf8)) ?? ""
        #expect(!auditText.contains(token))
        #expect(records.first?["profiles"] == nil)
    }

    /// Airlock names every one of its checks for some hostile token: a check that no token can
    /// reach, or two checks merged into one reason, shows up here.
    @Test func airlockReachesEveryCheck() async throws {
        var seen: Set<TokenRejection.Check> = []
        for c in Self.cases {
            let f = try IdentityFixture(extraGitLab: c.gitlab)
            let token = try c.make(f).token
            do {
                _ = try await f.authorize(token)
            } catch let r as TokenRejection {
                seen.insert(r.check)
            }
        }
        #expect(seen == Set(TokenRejection.Check.allCases), "never reached: \(Set(TokenRejection.Check.allCases).subtracting(seen).map(\.rawValue).sorted())")
    }

    /// The key-injection cases are real attacks: the token verifies under the attacker's key, and
    /// the jku URL serves that key. A verifier that followed the headers would accept them.
    @Test func theKeyInjectionTokensVerifyUnderTheAttackersKey() async throws {
        let f = try IdentityFixture()
        let a = try Attacker()
        let token = a.sign(f.claims(), header: ["kid": a.kid, "jku": a.jwksURL, "jwk": a.publicJWK])
        let parts = token.split(separator: ".")
        let signature = _RSA.Signing.RSASignature(rawRepresentation: try #require(Base64URL.decode(parts[2])))
        #expect(a.key.publicKey.isValidSignature(signature, for: Data("\(parts[0]).\(parts[1])".utf8), padding: .insecurePKCS1v1_5))
        let served = try await URLSessionTransport().send(HTTPRequest(url: URL(string: a.jwksURL)!))
        let jwks = try JSONSerialization.jsonObject(with: served.body) as? [String: Any]
        let keys = try #require(jwks?["keys"] as? [[String: Any]])
        #expect(keys.first?["n"] as? String == a.publicJWK["n"])
        // The same claims signed by the issuer are accepted: the refusal is about the key alone.
        #expect(try await f.authorize(f.issuer.mint(f.claims())).grants.count == 1)
    }

    @Test func validTokenIsGranted() async throws {
        let f = try IdentityFixture()
        let auth = try await f.authorize(f.issuer.mint(f.claims()))
        #expect(auth.grants.map(\.profile) == ["deploy-prod"])
        let r = f.audit.records()
        #expect(r.count == 1)
        #expect(r[0]["decision"] == .string("granted"))
        #expect(r[0]["rules"] == .array([.string("protected main of platform projects")]))
        #expect(r[0]["ref"] == .string("main"))
        #expect(r[0]["token_jti"] != nil)
    }

    /// A fork's merge request: `project_id` is the fork, `job_project_id` the project that runs the
    /// job, and that one must match the payload.
    @Test func aForksTokenMatchesOnJobProjectID() async throws {
        let f = try IdentityFixture(rules: """
        [[rules]]
        name = "project 42"
        job_project_id = "42"
        grant = ["read-only"]
        """)
        #expect(f.job.projectID == 42)
        var c = f.claims()
        c["project_id"] = "\(f.job.projectID + 1000)"
        c["job_project_id"] = "\(f.job.projectID)"
        let auth = try await f.authorize(f.issuer.mint(c))
        #expect(auth.verified?["job_project_id"] == "\(f.job.projectID)")
    }

    @Test func requiredClaimsPresentIsGranted() async throws {
        let f = try IdentityFixture(extraGitLab: "required_claims = [\"environment\"]")
        let token = f.issuer.mint(f.issuer.claims(for: f.job, audience: IdentityFixture.audience, environment: "production"))
        #expect(try await f.authorize(token).grants.map(\.profile) == ["deploy-prod"])
    }

    /// `clock_skew` is the tolerance on exp, nbf and iat, in both directions; judged at a fixed `now`.
    struct SkewCase: Sendable, CustomTestStringConvertible {
        let claim: String
        let offset: Int
        let skew: String?
        let refusal: TokenRejection.Check?
        var testDescription: String {
            "\(claim) = now \(offset < 0 ? "-" : "+") \(abs(offset))s, skew \(skew ?? "default 30s"): \(refusal.map { "refused (\($0.rawValue))" } ?? "accepted")"
        }
    }

    static let skewCases: [SkewCase] = [
        .init(claim: "exp", offset: -29, skew: nil, refusal: nil),
        .init(claim: "exp", offset: -31, skew: nil, refusal: .expired),
        .init(claim: "nbf", offset: 29, skew: nil, refusal: nil),
        .init(claim: "nbf", offset: 31, skew: nil, refusal: .notYetValid),
        .init(claim: "iat", offset: 29, skew: nil, refusal: nil),
        .init(claim: "iat", offset: 31, skew: nil, refusal: .issuedInFuture),
        .init(claim: "exp", offset: -4, skew: "5s", refusal: nil),
        .init(claim: "exp", offset: -6, skew: "5s", refusal: .expired),
        .init(claim: "nbf", offset: 6, skew: "5s", refusal: .notYetValid),
        .init(claim: "exp", offset: -299, skew: "5m", refusal: nil),
        .init(claim: "exp", offset: -301, skew: "5m", refusal: .expired),
    ]

    @Test(arguments: skewCases)
    func clockSkewBounds(_ s: SkewCase) async throws {
        let f = try IdentityFixture(extraGitLab: s.skew.map { "clock_skew = \"\($0)\"" } ?? "")
        let now = Date(timeIntervalSince1970: Double(Int(Date().timeIntervalSince1970)))
        var c = f.claims(now: now)
        c[s.claim] = Int(now.timeIntervalSince1970) + s.offset
        if s.claim == "iat" { c["nbf"] = Int(now.timeIntervalSince1970) - 5 }
        let token = f.issuer.mint(c)
        if let refusal = s.refusal {
            let r = await #expect(throws: TokenRejection.self) { _ = try await f.authorize(token, now: now) }
            #expect(r?.check == refusal)
        } else {
            #expect(try await f.authorize(token, now: now).grants.count == 1)
        }
    }

    @Test func jobWithoutTokenRunsWithNoGrants() async throws {
        let f = try IdentityFixture()
        let auth = try await f.authorize(nil)
        #expect(auth.grants.isEmpty)
        #expect(f.audit.records().first?["decision"] == .string("no_token"))
    }

    @Test func requireTokenShowsTheIdTokensBlock() async throws {
        let f = try IdentityFixture(extraGitLab: "require_token = true")
        let e = await #expect(throws: AirlockFailure.self) { _ = try await f.authorize(nil) }
        #expect(e?.fault == .job)
        #expect(e?.message.contains("id_tokens:\n    AIRLOCK_ID_TOKEN:\n      aud: https://airlock.test") == true)
    }
}

/// The second ID token a provider with `token_variable` wants (Entra's audience): verified like the
/// main one, and it must be the same job's, with the same `sub` (README "[providers.NAME]").
struct SecondTokenTests {
    static let entraAudience = "api://AzureADTokenExchange"
    static let azure = """
    [providers.entra]
    type = "azure"
    tenant_id = "72f988bf-86f1-41af-91ab-2d7cd011db47"

    [profiles.azure-arm]
    provider = "entra"
    client_id = "11111111-2222-4333-8444-555555555555"
    resource = "arm"
    """
    static let rules = """
    [[rules]]
    name = "platform"
    project_path = "platform/*"
    grant = ["azure-arm"]
    """

    static func fixture() throws -> IdentityFixture { try IdentityFixture(extraConfig: azure, rules: rules) }

    @Test func theSameJobsSecondTokenIsAccepted() async throws {
        let f = try Self.fixture()
        let second = f.issuer.mint(f.issuer.claims(for: f.job, audience: Self.entraAudience))
        let auth = try await f.authorize(f.issuer.mint(f.claims()), extra: ["AZURE_ID_TOKEN": second])
        #expect(auth.grants.map(\.profile) == ["azure-arm"])
        #expect(auth.providerTokens["entra"]?.value == second)
    }

    struct Mismatch: Sendable, CustomTestStringConvertible {
        let name: String
        let check: TokenRejection.Check
        let change: @Sendable (inout [String: Any], IdentityFixture) -> Void
        var testDescription: String { name }
    }

    static let mismatches: [Mismatch] = [
        .init(name: "another sub", check: .wrongJob) { c, _ in c["sub"] = "project_path:platform/api:ref_type:branch:ref:other" },
        .init(name: "another job", check: .wrongJob) { c, f in c["job_id"] = "\(f.job.jobID + 1)" },
        .init(name: "another project", check: .wrongJob) { c, f in c["project_id"] = "\(f.job.projectID + 1)" },
        .init(name: "the main audience instead of Entra's", check: .audience) { c, _ in c["aud"] = IdentityFixture.audience },
        .init(name: "expired", check: .expired) { c, _ in c["exp"] = Int(Date().timeIntervalSince1970) - 600 },
    ]

    @Test(arguments: mismatches)
    func aSecondTokenThatIsNotTheSameJobsIsRefused(_ m: Mismatch) async throws {
        let f = try Self.fixture()
        var c = f.issuer.claims(for: f.job, audience: Self.entraAudience)
        m.change(&c, f)
        let second = f.issuer.mint(c)
        let r = await #expect(throws: TokenRejection.self) {
            _ = try await f.authorize(f.issuer.mint(f.claims()), extra: ["AZURE_ID_TOKEN": second])
        }
        #expect(r?.check == m.check, "\(r.map { "\($0)" } ?? "accepted")")
        #expect(r?.description.contains("AZURE_ID_TOKEN") == true)
        #expect(r?.description.contains(second) == false)
        let records = f.audit.records()
        #expect(records.count == 1)
        #expect(records.first?["decision"] == .string("denied"))
        #expect(records.first?["reason"] == .string("provider_token"))
    }
}

/// An attacker with a valid RSA key pair of its own, and a loopback server that publishes the
/// public key as a JWKS at `/jwks.json` (and anything else it is asked for).
final class Attacker: @unchecked Sendable {
    let key: _RSA.Signing.PrivateKey
    let kid: String
    let publicJWK: [String: String]
    let server: LoopbackHTTPServer
    var jwksURL: String { server.baseURL + "/jwks.json" }

    init(kid: String = "attacker-key") throws {
        key = try _RSA.Signing.PrivateKey(keySize: .bits2048)
        self.kid = kid
        let p = try key.publicKey.getKeyPrimitives()
        let jwk = ["kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": Base64URL.encode(p.modulus), "e": Base64URL.encode(p.publicExponent)]
        publicJWK = jwk
        let jwks = try JSONSerialization.data(withJSONObject: ["keys": [jwk]])
        server = try LoopbackHTTPServer { _ in FakeResponse(body: jwks) }
    }

    /// An RS256 token signed with the attacker's key; `header` adds to alg and typ.
    func sign(_ claims: [String: Any], header: [String: Any]) -> String {
        var h: [String: Any] = ["alg": "RS256", "typ": "JWT"]
        for (k, v) in header { h[k] = v }
        let input = TestIssuer.segment(h) + "." + TestIssuer.segment(claims)
        let sig = try! key.signature(for: Data(input.utf8), padding: .insecurePKCS1v1_5)
        return input + "." + Base64URL.encode(sig.rawRepresentation)
    }
}
