import Federation
import Identity
import AirlockConfiguration
import Foundation
import RunnerContract

/// Finds ID tokens a job must never hold: JWTs from the configured issuer with an audience Airlock
/// accepts (`[gitlab] audience`, each provider's `token_audience`).
///
/// GitLab mints an ID token for any `id_tokens:` entry a job declares, under any variable name, and a
/// job can copy one into another variable; scrubbing only the configured variable's last value would
/// leave those. So the whole stage script is scanned: every JWT-shaped run of characters whose
/// payload names the issuer and a trusted audience is returned, whatever holds it. The signature is
/// not checked: a forged token with those claims is scrubbed too, which costs nothing.
enum TrustedTokens {
    /// The distinct trusted tokens that occur in `text`.
    static func find(in text: String, config: AirlockConfig) -> [String] {
        let view = JobView(config)
        return find(in: text, issuer: view.tokenIssuer, audiences: view.tokenAudiences)
    }

    /// The distinct tokens in `text` from `issuer` with one of `audiences` (`JobView`'s).
    static func find(in text: String, issuer: String?, audiences: [String]) -> [String] {
        guard let issuer else { return [] }
        let audiences = Set(audiences)
        var found = Set<String>()
        let bytes = Array(text.utf8)
        func isJWTByte(_ c: UInt8) -> Bool {
            (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c == 0x2d || c == 0x5f || c == 0x2e
        }
        var i = 0
        while i + 3 < bytes.count {
            // A JWT's header is base64url JSON: it starts with "eyJ" ({").
            guard bytes[i] == 0x65, bytes[i + 1] == 0x79, bytes[i + 2] == 0x4a, i == 0 || !isJWTByte(bytes[i - 1]) else { i += 1; continue }
            var j = i
            while j < bytes.count && isJWTByte(bytes[j]) { j += 1 }
            let candidate = String(decoding: bytes[i..<j], as: UTF8.self)
            i = j
            let parts = candidate.split(separator: ".", omittingEmptySubsequences: false)
            guard parts.count == 3, let payload = base64URL(parts[1]), let claims = try? JSONReader.parse(payload),
                  claims["iss"]?.string == issuer else { continue }
            let aud = claims["aud"]?.strings ?? claims["aud"]?.string.map { [$0] } ?? []
            if aud.contains(where: audiences.contains) { found.insert(candidate) }
        }
        return found.sorted()
    }

    static func base64URL(_ s: Substring) -> Data? {
        var t = s.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while t.count % 4 != 0 { t += "=" }
        return Data(base64Encoded: t)
    }
}
