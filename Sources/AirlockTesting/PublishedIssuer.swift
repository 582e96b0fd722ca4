import _CryptoExtras
import Crypto
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Identity

/// An OIDC issuer as the services that trust it see it: a relying party's check of a JWT.
/// The fakes of Entra, Google's STS and OAuth servers verify assertions through it.
public protocol TrustedIssuer: Sendable {
    /// The `iss` it answers for.
    var issuer: String { get }
    /// The claims of `jwt` if its signature verifies with one of the issuer's published keys, else nil.
    func verifiedClaims(_ jwt: String) -> [String: Any]?
}

extension TestIssuer: TrustedIssuer {}

/// An issuer known only by what it publishes: every check fetches
/// `<issuer>/.well-known/openid-configuration` (its `issuer` must be the issuer itself), then the
/// `jwks_uri` it names, takes the key the token's `kid` names, and verifies RS256 (an RSA key) or
/// ES256 (a P-256 key) with swift-crypto, not with the jwt-kit Airlock signs with. `iss` must be the
/// issuer; an expired token or one not yet valid is refused. Nothing is cached: a key removed from
/// the published JWKS stops verifying at once, as a relying party would see it after its cache.
///
/// Follows OpenID Connect Discovery 1.0 §3/§4.3 (the issuer check) and RFC 7515/7518 §3.3, §3.4 (the
/// JWS signatures: PKCS#1 v1.5 for RS256, the 64-byte R‖S for ES256).
public final class PublishedIssuer: TrustedIssuer, @unchecked Sendable {
    public let issuer: String
    private let lock = NSLock()
    private var fetches = 0

    public init(issuer: String) { self.issuer = issuer }

    /// How many documents were fetched.
    public var fetchCount: Int { lock.withLock { fetches } }

    public func verifiedClaims(_ jwt: String) -> [String: Any]? {
        let parts = jwt.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let h = Base64URL.decode(parts[0]), let p = Base64URL.decode(parts[1]), let sig = Base64URL.decode(parts[2]),
              let header = try? JSONSerialization.jsonObject(with: h) as? [String: Any], let alg = header["alg"] as? String,
              let kid = header["kid"] as? String, let claims = try? JSONSerialization.jsonObject(with: p) as? [String: Any],
              claims["iss"] as? String == issuer else { return nil }
        let base = issuer.hasSuffix("/") ? String(issuer.dropLast()) : issuer
        guard let discovery = fetchJSON(base + "/.well-known/openid-configuration"), discovery["issuer"] as? String == issuer,
              let jwksURI = discovery["jwks_uri"] as? String, let jwks = fetchJSON(jwksURI),
              let keys = jwks["keys"] as? [[String: Any]], let jwk = keys.first(where: { $0["kid"] as? String == kid }) else { return nil }
        let input = Data("\(parts[0]).\(parts[1])".utf8)
        switch (alg, jwk["kty"] as? String) {
        case ("RS256", "RSA"):
            guard let n = (jwk["n"] as? String).flatMap(Base64URL.decode), let e = (jwk["e"] as? String).flatMap(Base64URL.decode),
                  let key = try? _RSA.Signing.PublicKey(n: n, e: e),
                  key.isValidSignature(_RSA.Signing.RSASignature(rawRepresentation: sig), for: input, padding: .insecurePKCS1v1_5) else { return nil }
        case ("ES256", "EC"):
            guard jwk["crv"] as? String == "P-256", let x = (jwk["x"] as? String).flatMap(Base64URL.decode),
                  let y = (jwk["y"] as? String).flatMap(Base64URL.decode), x.count == 32, y.count == 32,
                  let key = try? P256.Signing.PublicKey(rawRepresentation: x + y),
                  let signature = try? P256.Signing.ECDSASignature(rawRepresentation: sig),
                  key.isValidSignature(signature, for: input) else { return nil }
        default:
            return nil
        }
        let now = Date().timeIntervalSince1970
        guard let exp = (claims["exp"] as? NSNumber)?.doubleValue, exp > now else { return nil }
        if let nbf = (claims["nbf"] as? NSNumber)?.doubleValue, nbf > now + 60 { return nil }
        return claims
    }

    private func fetchJSON(_ url: String) -> [String: Any]? {
        guard let u = URL(string: url), u.host == "127.0.0.1" || u.host == "localhost" else { return nil }  // loopback only
        lock.withLock { fetches += 1 }
        let box = Box()
        let done = DispatchSemaphore(value: 0)
        URLSession.shared.dataTask(with: u) { data, response, _ in
            if (response as? HTTPURLResponse)?.statusCode == 200 { box.data = data }
            done.signal()
        }.resume()
        guard done.wait(timeout: .now() + 5) == .success, let data = box.data else { return nil }
        return try? JSONSerialization.jsonObject(with: data) as? [String: Any]
    }

    private final class Box: @unchecked Sendable { var data: Data? }
}

/// A directory served over loopback HTTP, as a bucket or a web server serves `airlock issuer
/// publish`'s output.
public final class StaticSite: @unchecked Sendable {
    public let root: String
    public let server: LoopbackHTTPServer
    public var url: String { server.baseURL }

    public init(root: String) throws {
        self.root = root
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        server = try LoopbackHTTPServer { r in
            guard !r.path.contains(".."), let data = FileManager.default.contents(atPath: root + r.path) else {
                return FakeResponse(status: 404, body: Data())
            }
            return FakeResponse(status: 200, body: data)
        }
    }
}
