public import Foundation
import JWTKit

/// Verifies a GitLab ID token: size, shape, header, algorithm against the key, signature (jwt-kit),
/// issuer, audience, time claims with a small skew, required claims. `jku`, `x5u`, `x5c` and
/// embedded `jwk` headers are never used: keys come only from the configured issuer's JWKS.
public struct TokenVerifier: Sendable {
    public let settings: IssuerSettings
    public let keys: JWKSStore

    public init(settings: IssuerSettings, keys: JWKSStore) {
        self.settings = settings
        self.keys = keys
    }

    /// Verifies `token` at time `now`.
    /// - Throws: `TokenRejection` (the job's fault) naming the failed check, or `KeySetUnavailable`
    ///   (the system's fault) when no keys can be had.
    public func verify(_ token: String, now: Date) async throws -> VerifiedJob {
        let bytes = token.utf8.count
        guard bytes <= settings.maxTokenBytes else {
            throw TokenRejection(.size, "the token is \(bytes) bytes, over the \(settings.maxTokenBytes)-byte limit")
        }
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, !parts[0].isEmpty, !parts[1].isEmpty, parts.allSatisfy({ $0.utf8.allSatisfy(Base64URL.isAlphabet) }) else {
            throw TokenRejection(.format, "not a signed JWT: expected three non-empty base64url segments separated by '.', got \(parts.count) segment(s)")
        }
        guard let headerData = Base64URL.decode(parts[0]),
              let header = try? JSONSerialization.jsonObject(with: headerData) as? [String: Any] else {
            throw TokenRejection(.header, "the header segment is not base64url-encoded JSON")
        }
        guard let alg = header["alg"] as? String else { throw TokenRejection(.header, "the header has no alg") }
        if alg.lowercased() == "none" { throw TokenRejection(.algorithm, "alg \"none\" (an unsigned token) is refused") }
        if alg.uppercased().hasPrefix("HS") {
            throw TokenRejection(.algorithm, "alg \(alg) (HMAC, a shared secret) is refused: GitLab signs with RS256")
        }
        guard settings.algorithms.contains(alg) else {
            throw TokenRejection(.algorithm, "alg \(alg.prefix(16)) is not accepted; accepted: \(settings.algorithms.joined(separator: ", "))")
        }
        guard let kid = header["kid"] as? String else { throw TokenRejection(.keyID, "the header has no kid") }
        guard !kid.isEmpty, kid.count <= 128, kid.utf8.allSatisfy({ Base64URL.isAlphabet($0) || $0 == 0x2e }) else {
            throw TokenRejection(.keyID, "the kid has characters outside [A-Za-z0-9._-] or is longer than 128")
        }
        guard !parts[2].isEmpty else { throw TokenRejection(.signature, "the signature segment is empty") }
        let untrustedKeyHeaders = ["jku", "x5u", "x5c", "jwk"].filter { header[$0] != nil }

        var set = try await keys.current(now: now)
        if set.keys[kid] == nil, let fresh = await keys.refreshForUnknownKid(now: now) { set = fresh }
        guard let keyJSON = set.keys[kid] else {
            let note = untrustedKeyHeaders.isEmpty ? "" : " (its \(untrustedKeyHeaders.joined(separator: "/")) header is ignored: keys come only from the issuer's JWKS)"
            throw TokenRejection(.unknownKey, "kid \(kid) is not among \(settings.issuer)'s signing keys\(note)")
        }
        let jwkData = try Self.checkKey(keyJSON, alg: alg)

        // Signature, with a collection that holds this one key only: jwt-kit falls back to a
        // default key for an unknown kid, which must never happen here.
        let collection = JWTKeyCollection()
        do {
            let jwk = try JSONDecoder().decode(JWK.self, from: jwkData)
            try await collection.add(jwk: jwk)
        } catch {
            throw KeySetUnavailable("the issuer's key \(kid) cannot be loaded: \(error)")
        }
        do {
            _ = try await collection.verify(token, as: SignatureOnly.self)
        } catch {
            throw TokenRejection(.signature, "the signature does not verify with the issuer's key \(kid)")
        }

        guard let payloadData = Base64URL.decode(parts[1]),
              let claims = try? JSONDecoder().decode([String: ClaimValue].self, from: payloadData) else {
            throw TokenRejection(.payload, "the payload is not a JSON object")
        }
        return try checkClaims(claims, now: now)
    }

    /// The key must suit the algorithm: RSA for RS/PS, EC on the matching curve for ES, `use`
    /// "sig" if given, and its own `alg` if given must equal the token's.
    static func checkKey(_ json: Data, alg: String) throws -> Data {
        guard var key = try? JSONSerialization.jsonObject(with: json) as? [String: Any] else {
            throw KeySetUnavailable("a key in the issuer's JWKS is not a JSON object")
        }
        let kty = key["kty"] as? String ?? ""
        let ok: Bool
        switch alg {
        case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512": ok = kty == "RSA"
        case "ES256": ok = kty == "EC" && key["crv"] as? String == "P-256"
        case "ES384": ok = kty == "EC" && key["crv"] as? String == "P-384"
        default: ok = false
        }
        guard ok else { throw TokenRejection(.keyMismatch, "the token says alg \(alg) but key is \(kty)\((key["crv"] as? String).map { " " + $0 } ?? "")") }
        if let use = key["use"] as? String, use != "sig" { throw TokenRejection(.keyMismatch, "the key's use is \(use), not sig") }
        if let kalg = key["alg"] as? String, kalg != alg { throw TokenRejection(.keyMismatch, "the token says alg \(alg) but the key is for \(kalg)") }
        key["alg"] = alg
        return (try? JSONSerialization.data(withJSONObject: key)) ?? json
    }

    func checkClaims(_ c: [String: ClaimValue], now: Date) throws -> VerifiedJob {
        for name in settings.requiredClaims where c[name] == nil || c[name] == .null {
            throw TokenRejection(.missingClaim, "required claim \(name) is missing")
        }
        guard case .string(let iss) = c["iss"], iss == settings.issuer else {
            throw TokenRejection(.issuer, "iss is \(c["iss"]?.display.prefix(200) ?? "absent"), expected exactly \(settings.issuer.debugDescription)")
        }
        let aud: [String]
        switch c["aud"] {
        case .string(let a): aud = [a]
        case .list(let l): aud = l.compactMap { if case .string(let s) = $0 { s } else { nil } }
        default: aud = []
        }
        guard aud.contains(settings.audience) else {
            throw TokenRejection(.audience, "aud is \(aud.map(\.debugDescription).joined(separator: ", ").prefix(300)), which does not contain \(settings.audience.debugDescription): set `aud: \(settings.audience)` in the job's id_tokens: block")
        }
        let t = now.timeIntervalSince1970
        func number(_ n: String) throws -> Double? {
            switch c[n] {
            case nil, .null?: return nil
            case .number(let d)?: return d
            default: throw TokenRejection(.payload, "claim \(n) is not a number")
            }
        }
        guard let exp = try number("exp") else { throw TokenRejection(.missingClaim, "required claim exp is missing") }
        if exp <= t - settings.clockSkew {
            throw TokenRejection(.expired, "the token expired at \(Self.iso(exp)) (now \(Self.iso(t)), skew \(Int(settings.clockSkew))s)")
        }
        if let nbf = try number("nbf"), nbf > t + settings.clockSkew {
            throw TokenRejection(.notYetValid, "the token is not valid before \(Self.iso(nbf)) (now \(Self.iso(t)))")
        }
        if let iat = try number("iat"), iat > t + settings.clockSkew {
            throw TokenRejection(.issuedInFuture, "the token was issued in the future, at \(Self.iso(iat)) (now \(Self.iso(t)))")
        }
        var strings: [String: String] = [:]
        var lists: [String: [String]] = [:]
        for (k, v) in c {
            switch v {
            case .string(let s): strings[k] = s
            case .bool(let b): strings[k] = b ? "true" : "false"
            case .number: strings[k] = v.display
            case .list(let l): lists[k] = l.compactMap { if case .string(let s) = $0 { s } else { nil } }
            default: continue
            }
        }
        strings["aud"] = aud.joined(separator: " ")
        return VerifiedJob(claims: strings, listClaims: lists)
    }

    static func iso(_ t: Double) -> String {
        ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: t))
    }
}

/// One claim's JSON value, decoded strictly (a number is never taken for a boolean).
enum ClaimValue: Decodable, Equatable {
    case string(String), number(Double), bool(Bool), list([ClaimValue]), object, null

    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let d = try? c.decode(Double.self) { self = .number(d) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let l = try? c.decode([ClaimValue].self) { self = .list(l) }
        else { _ = try c.decode([String: ClaimValue].self); self = .object }
    }

    var display: String {
        switch self {
        case .string(let s): return s.debugDescription
        case .number(let d): return d == d.rounded() && abs(d) < 1e15 ? String(Int64(d)) : String(d)
        case .bool(let b): return b ? "true" : "false"
        case .list: return "a list"
        case .object: return "an object"
        case .null: return "null"
        }
    }
}

/// A payload type that decodes nothing and checks nothing: jwt-kit is used for the signature only,
/// and the claims are checked against Airlock's own clock.
struct SignatureOnly: JWTPayload {
    init(from decoder: any Decoder) throws {}
    func encode(to encoder: any Encoder) throws {}
    func verify(using algorithm: some JWTAlgorithm) async throws {}
}

/// base64url without padding (RFC 7515 §2).
public enum Base64URL {
    /// Whether a byte belongs to the base64url alphabet.
    public static func isAlphabet(_ c: UInt8) -> Bool {
        (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c == 0x2d || c == 0x5f
    }

    /// Decodes; nil when malformed.
    public static func decode(_ s: some StringProtocol) -> Data? {
        var b = s.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while b.count % 4 != 0 { b += "=" }
        return Data(base64Encoded: b)
    }

    /// Encodes without padding.
    public static func encode(_ d: Data) -> String {
        d.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }
}
