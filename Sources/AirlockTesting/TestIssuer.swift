import _CryptoExtras
import Crypto
public import Foundation
import Identity

/// A GitLab instance's OIDC side on loopback: discovery at `/.well-known/openid-configuration`,
/// JWKS at `/oauth/discovery/keys`, and tokens minted with the full claim set of a job's ID token
/// (custom-executor.md §2: RS256, kid matching the JWKS, iat = now, nbf = now - 5 s,
/// exp = now + job timeout, jti a UUID, IDs as strings, booleans as "true"/"false", runner_id a number).
///
/// Keys are generated at test time. Signing is done here with swift-crypto directly, not through
/// jwt-kit, so that the verifier under test and the minter do not share code.
public final class TestIssuer: @unchecked Sendable {
    public private(set) var server: LoopbackHTTPServer!
    private let lock = NSLock()
    private var rsaKeys: [(kid: String, key: _RSA.Signing.PrivateKey)] = []
    private var published: Set<String> = []
    private var isDown = false
    private var jwksFetches = 0

    /// The issuer URL (`iss`).
    public var issuer: String { server.baseURL }
    /// The kid of the current signing key.
    public var currentKid: String { lock.withLock { rsaKeys.last!.kid } }

    public init() throws {
        server = try LoopbackHTTPServer { [unowned self] req in self.handle(req) }
        _ = try addKey(publish: true)
    }

    /// Adds a signing key; `publish` puts it in the JWKS (rotation: a new kid appears).
    @discardableResult
    public func addKey(publish: Bool) throws -> String {
        let key = try _RSA.Signing.PrivateKey(keySize: .bits2048)
        let kid = Base64URL.encode(Data(SHA256.hash(data: key.publicKey.derRepresentation)))
        lock.withLock {
            rsaKeys.append((kid, key))
            if publish { published.insert(kid) }
        }
        return kid
    }

    /// Makes a key visible in the JWKS.
    public func publish(_ kid: String) { _ = lock.withLock { published.insert(kid) } }

    /// Makes GitLab unreachable (every request answers 503) or reachable again.
    public func setDown(_ down: Bool) { lock.withLock { isDown = down } }

    /// How many times the JWKS was served.
    public var jwksFetchCount: Int { lock.withLock { jwksFetches } }

    /// The JWKS document as GitLab serves it.
    public func jwks() -> Data {
        let keys: [[String: Any]] = lock.withLock {
            rsaKeys.filter { published.contains($0.kid) }.map { k in
                let p = try! k.key.publicKey.getKeyPrimitives()
                return ["kty": "RSA", "kid": k.kid, "use": "sig", "alg": "RS256",
                        "n": Base64URL.encode(p.modulus), "e": Base64URL.encode(p.publicExponent)]
            }
        }
        return try! JSONSerialization.data(withJSONObject: ["keys": keys], options: [.sortedKeys])
    }

    /// The public key of a kid as PEM (for the HS256-with-public-key attack).
    public func publicKeyPEM(_ kid: String? = nil) -> String {
        lock.withLock { (kid.flatMap { k in rsaKeys.first { $0.kid == k } } ?? rsaKeys.last!).key.publicKey.pemRepresentation }
    }

    private func handle(_ req: FakeRequest) -> FakeResponse {
        if lock.withLock({ isDown }) { return FakeResponse(status: 503, body: Data("down".utf8)) }
        switch req.path {
        case "/.well-known/openid-configuration":
            return .json(["issuer": issuer, "jwks_uri": issuer + "/oauth/discovery/keys",
                          "id_token_signing_alg_values_supported": ["RS256"], "response_types_supported": ["id_token"]])
        case "/oauth/discovery/keys":
            lock.withLock { jwksFetches += 1 }
            return FakeResponse(body: jwks())
        default:
            return FakeResponse(status: 404, body: Data("{}".utf8))
        }
    }

    /// The claims of `jwt` if it is RS256-signed by one of this issuer's published keys, else nil.
    /// Used by the fakes of other servers to check a job's ID token as those servers would (their
    /// own check, independent of Airlock's verifier).
    public func verifiedClaims(_ jwt: String) -> [String: Any]? {
        let parts = jwt.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let h = Base64URL.decode(parts[0]), let p = Base64URL.decode(parts[1]), let sig = Base64URL.decode(parts[2]),
              let header = try? JSONSerialization.jsonObject(with: h) as? [String: Any], header["alg"] as? String == "RS256",
              let kid = header["kid"] as? String, let claims = try? JSONSerialization.jsonObject(with: p) as? [String: Any],
              let key = lock.withLock({ rsaKeys.first { $0.kid == kid && published.contains($0.kid) }?.key.publicKey }),
              key.isValidSignature(_RSA.Signing.RSASignature(rawRepresentation: sig), for: Data("\(parts[0]).\(parts[1])".utf8), padding: .insecurePKCS1v1_5)
        else { return nil }
        return claims
    }

    /// The claims GitLab puts in a job's ID token.
    public func claims(for job: SimulatedJob, audience: String, now: Date = Date(), protected: Bool = true,
                       environment: String? = nil) -> [String: Any] {
        let t = Int(now.timeIntervalSince1970)
        let ns = job.projectPath.split(separator: "/").dropLast().joined(separator: "/")
        var c: [String: Any] = [
            "iss": issuer, "aud": audience, "sub": "project_path:\(job.projectPath):ref_type:branch:ref:\(job.ref)",
            "iat": t, "nbf": t - 5, "exp": t + job.timeout, "jti": UUID().uuidString.lowercased(),
            "namespace_id": "7", "namespace_path": ns, "project_id": "\(job.projectID)", "project_path": job.projectPath,
            "user_id": "11", "user_login": "alice", "user_email": "alice@example.com", "user_access_level": "maintainer",
            "pipeline_id": "\(job.pipelineID)", "pipeline_source": "push", "job_id": "\(job.jobID)",
            "ref": job.ref, "ref_type": "branch", "ref_path": "refs/heads/\(job.ref)", "ref_protected": protected ? "true" : "false",
            "runner_id": 5, "runner_environment": "self-hosted", "sha": job.sha, "project_visibility": "internal",
            "ci_config_ref_uri": "gitlab.example.com/\(job.projectPath)//.gitlab-ci.yml@refs/heads/\(job.ref)",
            "ci_config_sha": job.sha,
        ]
        if let environment {
            c["environment"] = environment
            c["environment_protected"] = "true"
            c["deployment_tier"] = "production"
            c["environment_action"] = "start"
        }
        return c
    }

    /// Mints a token. `header` entries override the defaults (alg RS256, typ JWT, kid current);
    /// a nil `kid` signs with the current key.
    public func mint(_ claims: [String: Any], header: [String: Any] = [:], kid: String? = nil) -> String {
        let signKid = kid ?? currentKid
        var h: [String: Any] = ["alg": "RS256", "typ": "JWT", "kid": signKid]
        for (k, v) in header { h[k] = v }
        let input = Self.segment(h) + "." + Self.segment(claims)
        let key = lock.withLock { rsaKeys.first { $0.kid == signKid }?.key ?? rsaKeys.last!.key }
        let sig = try! key.signature(for: Data(input.utf8), padding: .insecurePKCS1v1_5)
        return input + "." + Base64URL.encode(sig.rawRepresentation)
    }

    /// A JWT signed with HMAC-SHA256 under `secret` (for the algorithm-confusion attack).
    public static func mintHS256(_ claims: [String: Any], header: [String: Any], secret: Data) -> String {
        var h: [String: Any] = ["alg": "HS256", "typ": "JWT"]
        for (k, v) in header { h[k] = v }
        let input = segment(h) + "." + segment(claims)
        let mac = HMAC<SHA256>.authenticationCode(for: Data(input.utf8), using: SymmetricKey(data: secret))
        return input + "." + Base64URL.encode(Data(mac))
    }

    /// A JWT signed with a fresh key that is in nobody's JWKS.
    public static func mintWithForeignKey(_ claims: [String: Any], header: [String: Any]) throws -> String {
        let key = try _RSA.Signing.PrivateKey(keySize: .bits2048)
        var h: [String: Any] = ["alg": "RS256", "typ": "JWT"]
        for (k, v) in header { h[k] = v }
        let input = segment(h) + "." + segment(claims)
        let sig = try key.signature(for: Data(input.utf8), padding: .insecurePKCS1v1_5)
        return input + "." + Base64URL.encode(sig.rawRepresentation)
    }

    public static func segment(_ obj: [String: Any]) -> String {
        Base64URL.encode(try! JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys]))
    }
}
