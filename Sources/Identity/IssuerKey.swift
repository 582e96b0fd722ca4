import _CryptoExtras
import Crypto
public import Foundation
public import JWTKit

/// A key Airlock signs its own ID tokens with (issue 17): a P-256 key signs ES256, an RSA key of at
/// least 2048 bits RS256. Its `kid` is the RFC 7638 thumbprint of its public JWK, so the published
/// JWKS and the token header name the key the same way wherever it is computed.
public struct IssuerKey: Sendable {
    public enum Algorithm: String, Sendable { case es256 = "ES256", rs256 = "RS256" }

    /// Why a key cannot be used: the file, and what to do.
    public struct Problem: Error, Sendable, CustomStringConvertible {
        public let description: String
    }

    public let path: String
    public let algorithm: Algorithm
    /// The RFC 7638 thumbprint of `jwk`.
    public let kid: String
    /// The public key as a JWK (`kty`, `crv`/`x`/`y` or `n`/`e`, `kid`, `alg`, `use`), as published.
    public let jwk: [String: String]
    let pem: Data

    /// Loads a private key file: a regular file only its owner can read (0600), holding a P-256 or an
    /// RSA (≥ 2048 bits) private key in PEM.
    public static func load(path: String) throws(Problem) -> IssuerKey {
        guard let file = KeyFile.read(path) else {
            throw Problem(description: "\(path) cannot be read: create it (openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out \(path); chmod 600 \(path))")
        }
        let (pem, mode) = (file.pem, file.mode)
        guard mode & 0o170000 == 0o100000 else {
            throw Problem(description: "\(path) is not a regular file")
        }
        guard mode & 0o077 == 0 else {
            throw Problem(description: "\(path) is readable by group or others (mode \(String(mode & 0o777, radix: 8))): it signs every job's identity; chmod 600 \(path)")
        }
        if let ec = try? ES256PrivateKey(pem: pem), let (x, y) = ec.publicKey.parameters {
            let members = ["kty": "EC", "crv": "P-256", "x": x, "y": y]
            return IssuerKey(path: path, algorithm: .es256, members: members, pem: pem)
        }
        let rsaKey: JWTKit.Insecure.RSA.PrivateKey?
        do {
            rsaKey = try JWTKit.Insecure.RSA.PrivateKey(pem: pem)
        } catch {
            // jwt-kit refuses RSA keys under 2048 bits itself (its RSAError.keySizeTooSmall is internal).
            let text = String(decoding: pem, as: UTF8.self)
            if "\(error)".contains("keySizeTooSmall") || text.contains("BEGIN RSA PRIVATE KEY") {
                throw Problem(description: "\(path) is an RSA key that cannot be used (\(error)): an issuer key must be RSA of at least 2048 bits, or P-256")
            }
            rsaKey = nil
        }
        if let rsa = rsaKey, let (n, e) = try? rsa.publicKey.getKeyPrimitives() {
            let bits = n.drop { $0 == 0 }.count * 8
            guard bits >= 2048 else {
                throw Problem(description: "\(path) is a \(bits)-bit RSA key; an issuer key must have at least 2048 bits (or be P-256)")
            }
            let members = ["kty": "RSA", "n": Base64URL.encode(n), "e": Base64URL.encode(e)]
            return IssuerKey(path: path, algorithm: .rs256, members: members, pem: pem)
        }
        throw Problem(description: "\(path) is not a P-256 or RSA private key in PEM")
    }

    /// Writes a new P-256 private key to `path` (0600, created exclusively: an existing file is never
    /// replaced) and loads it.
    public static func generateP256(path: String) throws(Problem) -> IssuerKey {
        try generate(.es256, path: path)
    }

    /// Writes a new key for `algorithm` (P-256, or RSA of 3072 bits) to `path` (0600, created
    /// exclusively) and loads it.
    public static func generate(_ algorithm: Algorithm, path: String) throws(Problem) -> IssuerKey {
        let text: String
        switch algorithm {
        case .es256: text = P256.Signing.PrivateKey().pemRepresentation
        case .rs256:
            do { text = try _RSA.Signing.PrivateKey(keySize: .bits3072).pemRepresentation } catch {
                throw Problem(description: "cannot generate an RSA key: \(error)")
            }
        }
        let pem = Data(text.utf8)
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw Problem(description: "cannot create \(path): \(String(cString: strerror(errno))) (an existing key is never replaced)") }
        let written = pem.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
        guard written == pem.count else { throw Problem(description: "cannot write \(path)") }
        return try load(path: path)
    }

    init(path: String, algorithm: Algorithm, members: [String: String], pem: Data) {
        self.path = path
        self.algorithm = algorithm
        kid = Self.thumbprint(members)
        var jwk = members
        jwk["kid"] = kid
        jwk["alg"] = algorithm.rawValue
        jwk["use"] = "sig"
        self.jwk = jwk
        self.pem = pem
    }

    /// RFC 7638 §3: SHA-256 over the JSON of the key type's required members (EC: crv, kty, x, y;
    /// RSA: e, kty, n) in lexicographic order, without whitespace; base64url.
    public static func thumbprint(_ jwk: [String: String]) -> String {
        let required = jwk["kty"] == "RSA" ? ["e", "kty", "n"] : ["crv", "kty", "x", "y"]
        let json = "{" + required.map { "\"\($0)\":\"\(jwk[$0] ?? "")\"" }.joined(separator: ",") + "}"
        return Base64URL.encode(Data(SHA256.hash(data: Data(json.utf8))))
    }

    /// Signs `payload` as a JWT whose header names this key (`kid`) and its algorithm.
    public func sign(_ payload: some JWTPayload) async throws -> String {
        let keys = JWTKeyCollection()
        switch algorithm {
        case .es256: await keys.add(ecdsa: try ES256PrivateKey(pem: pem), kid: JWKIdentifier(string: kid))
        case .rs256: await keys.add(rsa: try Insecure.RSA.PrivateKey(pem: pem), digestAlgorithm: .sha256, kid: JWKIdentifier(string: kid))
        }
        var header = JWTHeader()
        header.typ = "JWT"
        return try await keys.sign(payload, kid: JWKIdentifier(string: kid), header: header)
    }
}

/// The documents an issuer publishes (OpenID Connect Discovery 1.0 §3, RFC 7517): what providers
/// fetch to verify Airlock's tokens.
public enum IssuerDocuments {
    /// `.well-known/openid-configuration`.
    public static func discovery(issuer: String, algorithms: [String]) -> Data {
        let doc: [String: Any] = [
            "issuer": issuer, "jwks_uri": jwksURI(issuer),
            "id_token_signing_alg_values_supported": Array(Set(algorithms)).sorted(),
            "response_types_supported": ["id_token"], "subject_types_supported": ["public"],
            "claims_supported": ["iss", "sub", "aud", "exp", "nbf", "iat", "jti", "project_id", "namespace_id", "ref", "ref_protected",
                                 "environment", "pipeline_source", "job_id", "runner_id", "runner_host", "airlock_profile"],
        ]
        return (try? JSONSerialization.data(withJSONObject: doc, options: [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes])) ?? Data()
    }

    /// `jwks.json`: every key a token may still carry (the signing key and the previous ones).
    public static func jwks(_ keys: [IssuerKey]) -> Data {
        let doc: [String: Any] = ["keys": keys.map(\.jwk)]
        return (try? JSONSerialization.data(withJSONObject: doc, options: [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes])) ?? Data()
    }

    public static func jwksURI(_ issuer: String) -> String {
        (issuer.hasSuffix("/") ? String(issuer.dropLast()) : issuer) + "/jwks.json"
    }

    public static func discoveryURI(_ issuer: String) -> String {
        (issuer.hasSuffix("/") ? String(issuer.dropLast()) : issuer) + "/.well-known/openid-configuration"
    }
}
