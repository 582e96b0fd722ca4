import Foundation
import Identity
import RunnerContract

/// The HTTP exchange the JSON providers (Azure, GCP) share: one request inside the federation
/// deadline, a connection failure reported as a transient system fault, JSON bodies decoded.
struct Exchange: Sendable {
    let provider: String
    let transport: any HTTPTransport

    /// Sends a form (`application/x-www-form-urlencoded`) or JSON body.
    func send(_ method: String, _ url: URL, form: [(String, String)]? = nil, json: Data? = nil,
              headers: [String: String] = [:], profile: String, deadline: Date) async throws -> HTTPResponse {
        var h = headers
        h["Accept"] = "application/json"
        var body: Data?
        if let form {
            h["Content-Type"] = "application/x-www-form-urlencoded"
            body = Data(form.map { "\($0.0)=\(FormEncoding.encode($0.1))" }.joined(separator: "&").utf8)
        } else if let json {
            h["Content-Type"] = "application/json"
            body = json
        }
        do {
            return try await transport.send(HTTPRequest(method: method, url: url, headers: h, body: body,
                                                        timeout: max(1, deadline.timeIntervalSinceNow)))
        } catch {
            throw FederationError(fault: .system, profile: profile, provider: provider, code: "ConnectionFailed",
                                  message: "cannot reach \(url.absoluteString): \(error)", transient: true)
        }
    }

    static func object(_ r: HTTPResponse) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: r.body) as? [String: Any]) ?? [:]
    }

    /// `expires_in` as a number or a numeric string (both occur: federation.md A3).
    static func seconds(_ v: Any?) -> Double? {
        if let n = v as? NSNumber { return n.doubleValue }
        if let s = v as? String { return Double(s) }
        return nil
    }

    /// Whether a status is worth another attempt.
    static func transient(_ status: Int) -> Bool { status >= 500 || status == 429 }

    static func retryAfter(_ r: HTTPResponse) -> Double? { r.headers["retry-after"].flatMap(Double.init) }
}

/// The claims of a token Airlock has already verified, read for error messages (iss, sub, aud, exp).
enum PeekClaims {
    static func of(_ jwt: String) -> [String: Any] {
        let parts = jwt.split(separator: ".")
        guard parts.count == 3, let d = Base64URL.decode(parts[1]),
              let o = try? JSONSerialization.jsonObject(with: d) as? [String: Any] else { return [:] }
        return o
    }

    static func audience(_ claims: [String: Any]) -> String {
        if let s = claims["aud"] as? String { return s }
        return (claims["aud"] as? [String])?.joined(separator: ", ") ?? "?"
    }
}
