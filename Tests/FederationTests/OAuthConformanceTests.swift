import _CryptoExtras
import AirlockTesting
import Crypto
@testable import Federation
import Foundation
import HTTPClient
import Identity
import RunnerContract
import Testing

/// OAuth 2.0 / Auth0 against FakeOAuthServer, which follows federation.md A5.
struct OAuthConformanceTests {
    static let audience = "https://airlock.test"

    final class Setup: @unchecked Sendable {
        let issuer: TestIssuer
        let server: FakeOAuthServer
        let dir: String
        let rsaKeyFile: String
        let ecKeyFile: String
        let request: IssueRequest

        init() throws {
            issuer = try TestIssuer()
            server = try FakeOAuthServer(issuer: issuer, subjectAudience: OAuthConformanceTests.audience)
            dir = "/var/tmp/airlock-oauth-\(UUID().uuidString.prefix(8))"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let rsa = try _RSA.Signing.PrivateKey(keySize: .bits2048)
            let ec = P256.Signing.PrivateKey()
            server.register(clientID: "ci-rsa", .init(rsaKey: rsa.publicKey))
            server.register(clientID: "ci-ec", .init(ecKey: ec.publicKey))
            rsaKeyFile = dir + "/rsa.pem"
            ecKeyFile = dir + "/ec.pem"
            FileManager.default.createFile(atPath: rsaKeyFile, contents: Data(rsa.pemRepresentation.utf8), attributes: [.posixPermissions: 0o600])
            FileManager.default.createFile(atPath: ecKeyFile, contents: Data(ec.pemRepresentation.utf8), attributes: [.posixPermissions: 0o600])
            var job = SimulatedJob(script: [])
            job.jobID = 1001
            request = IssueRequest(profile: "x", job: VerifiedJob(claims: ["project_id": "42", "job_id": "1001"]),
                                   idToken: issuer.mint(issuer.claims(for: job, audience: OAuthConformanceTests.audience)),
                                   jobTimeoutSeconds: 1800, now: Date(), deadline: Date().addingTimeInterval(60))
        }

        func provider(client: String = "ci-rsa", keyFile: String? = nil, revocation: Bool = true, es256: Bool = false,
                      tokenEndpoint: String? = nil, transport: any HTTPTransport = URLSessionTransport()) -> OAuthProvider {
            OAuthProvider(name: "auth0", tokenEndpoint: URL(string: tokenEndpoint ?? server.tokenEndpoint)!,
                          revocationEndpoint: revocation ? URL(string: server.baseURL + "/oauth/revoke") : nil,
                          introspectionEndpoint: URL(string: server.baseURL + "/oauth/introspect"),
                          clientID: client, clientKey: ClientKey(path: keyFile ?? rsaKeyFile, keyID: "k1", es256: es256), assertionAudience: nil, profiles: [
                "exchange": OAuthProfile(grant: .tokenExchange, audience: "https://api.example.com/{project_id}", scope: "deploy",
                                         subjectTokenType: "urn:ietf:params:oauth:token-type:jwt", variable: "API_TOKEN", introspect: true),
                "offline": OAuthProfile(grant: .tokenExchange, audience: "https://api.example.com/{project_id}", scope: "deploy offline_access",
                                        subjectTokenType: "urn:ietf:params:oauth:token-type:jwt", variable: "API_TOKEN", introspect: false),
                "m2m": OAuthProfile(grant: .clientCredentials, audience: "https://api.example.com", scope: nil,
                                    subjectTokenType: "", variable: "M2M_TOKEN", introspect: false),
            ], transport: transport)
        }

        func req(_ profile: String) -> IssueRequest { var r = request; r.profile = profile; return r }
        deinit { try? FileManager.default.removeItem(atPath: dir) }
    }

    /// Auth0 returns a refresh token only for `offline_access`; its access tokens are JWTs, which
    /// revocation does not end. Without a refresh token nothing is revoked and the audit says when the
    /// access token expires; with one, the refresh token is revoked and the outcome says the access
    /// token remains (partly_revoked), never "revoked".
    @Test func tokenExchangeRecordsWhatRevocationReallyEnded() async throws {
        let s = try Setup()
        try await ProviderConformance.lifecycle(s.provider(), profile: "exchange", request: s.req("exchange"))
        let plain = try await s.provider().issue(s.req("exchange"))
        #expect(plain.details["audience"] == "https://api.example.com/42")
        #expect(plain.secrets["refresh_token"] == nil)
        let before = s.server.revoked.count
        #expect(try await s.provider().revoke(plain, now: Date()) == .notRevocable(expiresAt: plain.expiresAt))
        #expect(s.server.revoked.count == before, "a JWT access token was sent to revocation")
        let c = try await s.provider().issue(s.req("offline"))
        let rt = try #require(c.secrets["refresh_token"])
        let outcome = try await s.provider().revoke(c, now: Date())
        #expect(outcome == .partlyRevoked(revoked: "its refresh token", remains: "the access token (a JWT, which revocation does not end)", expiresAt: c.expiresAt))
        #expect(s.server.revoked.contains { $0.token == rt && $0.hint == "refresh_token" })
        #expect(!s.server.revoked.contains { $0.hint == "access_token" })
        let rtActive = s.server.isActive(rt)  // computed first: #expect prints operands
        #expect(!rtActive)
    }

    /// A server with opaque access tokens that revokes them: that is `revoked`.
    @Test func anOpaqueAccessTokenTheServerRevokesIsRevoked() async throws {
        let s = try Setup()
        s.server.jwtAccessTokens = false
        s.server.refreshTokensOnlyRevocation = false
        let c = try await s.provider().issue(s.req("m2m"))
        #expect(try await s.provider().revoke(c, now: Date()) == .revoked)
        let stillActive = s.server.isActive(c.secrets["access_token"] ?? "")  // computed first: #expect prints operands
        #expect(!stillActive)
        // Without introspection a 200 proves nothing (RFC 7009 §2.2): recorded as live until it expires.
        let p = OAuthProvider(name: "auth0", tokenEndpoint: URL(string: s.server.tokenEndpoint)!,
                              revocationEndpoint: URL(string: s.server.baseURL + "/oauth/revoke"), introspectionEndpoint: nil,
                              clientID: "ci-rsa", clientKey: ClientKey(path: s.rsaKeyFile, keyID: "k1"), assertionAudience: nil,
                              profiles: ["m2m": OAuthProfile(grant: .clientCredentials, audience: "https://api.example.com", scope: nil,
                                                             subjectTokenType: "", variable: "M2M_TOKEN", introspect: false)],
                              transport: URLSessionTransport())
        let d = try await p.issue(s.req("m2m"))
        #expect(try await p.revoke(d, now: Date()) == .notRevocable(expiresAt: d.expiresAt))
    }

    @Test func privateKeyJWTClientCredentialsWithAnRSAKey() async throws {
        let s = try Setup()
        let c = try await s.provider().issue(s.req("m2m"))
        let active = s.server.isActive(c.secrets["access_token"] ?? "")  // computed first: #expect prints operands
        #expect(active)
        #expect(c.secrets["refresh_token"] == nil)
    }

    /// Auth0 takes RS256, RS384 and PS256 assertions only: a P-256 key is refused before anything is
    /// sent unless the operator says the server takes ES256 (assertion_algorithm = "ES256"); then
    /// a server that does works, and Auth0 itself refuses the assertion.
    @Test func anES256KeyOnlyWhereTheOperatorSaysTheServerTakesIt() async throws {
        let s = try Setup()
        let requests = s.server.server.requestSpans.count
        do {
            _ = try await s.provider(client: "ci-ec", keyFile: s.ecKeyFile).issue(s.req("m2m"))
            Issue.record("issued with an ES256 key")
        } catch let e as FederationError {
            #expect(e.fault == .system && e.code == "ClientKeyAlgorithm")
            #expect(e.message.contains("RS256, RS384 or PS256 only") && e.message.contains("assertion_algorithm = \"ES256\""), "\(e.message)")
        }
        #expect(s.server.server.requestSpans.count == requests, "the assertion was sent")
        do {
            _ = try await s.provider(client: "ci-ec", keyFile: s.ecKeyFile, es256: true).issue(s.req("m2m"))
            Issue.record("Auth0 took an ES256 assertion")
        } catch let e as FederationError {
            #expect(e.code == "invalid_client", "\(e)")
        }
        s.server.acceptsES256 = true
        let c = try await s.provider(client: "ci-ec", keyFile: s.ecKeyFile, es256: true).issue(s.req("m2m"))
        let active = s.server.isActive(c.secrets["access_token"] ?? "")  // computed first: #expect prints operands
        #expect(active)
        // And an RSA key with assertion_algorithm = "ES256" is a configuration mistake, named.
        await #expect(throws: FederationError.self) { _ = try await s.provider(es256: true).issue(s.req("m2m")) }
    }

    /// Auth0 refuses a replayed `jti`, and README promises a fresh assertion that lives 60 s: every
    /// exchange Airlock makes signs a new one, with its own jti, expiring at most 60 s after now.
    @Test func everyExchangeSignsAFreshAssertionThatLivesAtMost60Seconds() async throws {
        let s = try Setup()
        let recorder = RecordingTransport()
        let p = s.provider(transport: recorder)
        let before = Int(Date().timeIntervalSince1970)
        _ = try await p.issue(s.req("m2m"))
        _ = try await p.issue(s.req("m2m"))
        let after = Int(Date().timeIntervalSince1970)
        let sent = recorder.requests.filter { $0.url.path == "/oauth/token" }
        let assertions = sent.compactMap { FakeRequestForm.parse($0.body)["client_assertion"] }
        #expect(assertions.count == 2)
        let claims = try assertions.map { try Self.claims(of: $0) }
        let jtis = claims.compactMap { $0["jti"] as? String }
        #expect(jtis.count == 2 && Set(jtis).count == 2 && jtis.allSatisfy { !$0.isEmpty })
        for c in claims {
            let iat = try #require(c["iat"] as? Int), exp = try #require(c["exp"] as? Int)
            #expect(iat >= before && iat <= after)
            #expect(exp > iat && exp - iat <= 60, "lives \(exp - iat) s")
        }
        // (The fake's own replay refusal is a check of the fake, not of Airlock: see FakeOAuthServer.)
    }

    /// A retried exchange signs a new assertion: the one sent with the failed attempt may have
    /// reached the server, which then refuses its jti.
    @Test func aRetriedExchangeSignsANewAssertion() async throws {
        let s = try Setup()
        let seen = Recorded<String>()
        let flaky = try LoopbackHTTPServer { req in
            seen.add(req.form["client_assertion"] ?? "")
            if seen.count < 3 { return .json(["error": "temporarily_unavailable"], status: 503) }
            return .json(["access_token": "at-0123456789abcdef", "token_type": "Bearer", "expires_in": 600] as [String: Any])
        }
        let p = s.provider(tokenEndpoint: flaky.baseURL + "/oauth/token")
        var r = s.req("m2m")
        // A deadline far beyond the two short backoffs: the retries are under test, not their timing
        // (20 s ran out once on the 2-core machine with the whole suite running).
        r.deadline = Date().addingTimeInterval(120)
        _ = try await p.issue(r)
        let jtis = try seen.all.map { try Self.claims(of: $0)["jti"] as? String }
        #expect(jtis.count == 3)
        #expect(Set(jtis.compactMap { $0 }).count == 3)
    }

    static func claims(of jwt: String) throws -> [String: Any] {
        let parts = jwt.split(separator: ".")
        try #require(parts.count == 3, "not a JWS: \(parts.count) parts")
        let payload = try #require(Base64URL.decode(parts[1]))
        return try #require(try JSONSerialization.jsonObject(with: payload) as? [String: Any])
    }

    @Test func assertionClaimsFollowRFC7523AndAuth0() async throws {
        let s = try Setup()
        let auth = try await s.provider().clientAuth(profile: "m2m", now: Date())
        let jwt = try #require(auth.first { $0.0 == "client_assertion" }?.1)
        let parts = jwt.split(separator: ".")
        let header = try JSONSerialization.jsonObject(with: Base64URL.decode(parts[0])!) as! [String: Any]
        let claims = try JSONSerialization.jsonObject(with: Base64URL.decode(parts[1])!) as! [String: Any]
        #expect(header["alg"] as? String == "RS256" && header["kid"] as? String == "k1")
        #expect(claims["iss"] as? String == "ci-rsa" && claims["sub"] as? String == "ci-rsa")
        #expect(claims["aud"] as? String == s.server.baseURL + "/")  // origin with the trailing slash
        let exp = try #require(claims["exp"] as? Int), iat = try #require(claims["iat"] as? Int)
        #expect(exp > iat && exp - iat <= 60)  // README "Auth0": exp 60 s
        #expect((claims["jti"] as? String)?.isEmpty == false)
    }

    @Test func aKeyFileReadableByOthersIsRefused() async throws {
        let s = try Setup()
        chmod(s.rsaKeyFile, 0o644)
        do {
            _ = try await s.provider().issue(s.req("m2m"))
            Issue.record("issued")
        } catch let e as FederationError {
            #expect(e.code == "ClientKeyExposed")
            #expect(e.fault == .system)
        }
    }

    @Test func withoutARevocationEndpointItExpires() async throws {
        let s = try Setup()
        let p = s.provider(revocation: false)
        let c = try await p.issue(s.req("exchange"))
        #expect(try await p.revoke(c, now: Date()) == .notRevocable(expiresAt: c.expiresAt))
    }

    @Test func aWrongSubjectTokenTypeIsReported() async throws {
        let s = try Setup()
        s.server.subjectTokenType = "https://auth0.example.com/gitlab-id-token"
        do {
            _ = try await s.provider().issue(s.req("exchange"))
            Issue.record("issued")
        } catch let e as FederationError {
            #expect(e.code == "invalid_request")
            #expect(e.message.contains("subject_token_type must be https://auth0.example.com/gitlab-id-token"))
            #expect(!e.description.contains(s.request.idToken))
        }
    }
}

/// A transport that sends through URLSession and keeps every request.
final class RecordingTransport: HTTPTransport, @unchecked Sendable {
    private let lock = NSLock()
    private var sent: [HTTPRequest] = []
    private let next = URLSessionTransport()
    var requests: [HTTPRequest] { lock.withLock { sent } }
    func send(_ request: HTTPRequest) async throws -> HTTPResponse {
        lock.withLock { sent.append(request) }
        return try await next.send(request)
    }
}

/// Values collected from server threads.
final class Recorded<T: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [T] = []
    func add(_ t: T) { lock.withLock { items.append(t) } }
    var all: [T] { lock.withLock { items } }
    var count: Int { lock.withLock { items.count } }
}

/// An x-www-form-urlencoded body as a dictionary.
enum FakeRequestForm {
    static func parse(_ body: Data?) -> [String: String] {
        var out: [String: String] = [:]
        for pair in String(decoding: body ?? Data(), as: UTF8.self).split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1).map { String($0).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? String($0) }
            if let k = kv.first { out[k] = kv.count > 1 ? kv[1] : "" }
        }
        return out
    }
}
