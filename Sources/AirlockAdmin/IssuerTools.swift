public import AirlockConfiguration
import Foundation
public import Identity
import Ledger
public import RunnerContract

/// `airlock issuer …`: Airlock as its own OIDC issuer (issue 17). The documents providers fetch to
/// verify Airlock's tokens, written for static hosting, and checked where they are served.
public enum IssuerTools {
    /// Every configured key (signing key first), loaded and checked.
    /// - Throws: `AirlockFailure` (system) naming the key file and what to do.
    public static func keys(_ s: AirlockIssuerSettings) throws(AirlockFailure) -> [IssuerKey] {
        var out: [IssuerKey] = []
        for (i, path) in s.keyFiles.enumerated() {
            do {
                out.append(try IssuerKey.load(path: path))
            } catch {
                throw AirlockFailure(.system, "[issuer] \(i == 0 ? "signing_key_file" : "previous_key_files"): \(error)")
            }
        }
        return out
    }

    /// `airlock issuer publish`: writes `DIR/.well-known/openid-configuration` and `DIR/jwks.json`
    /// (0644: they are public) for the configured issuer and keys. Returns the files written.
    public static func publish(config: AirlockConfig, out dir: String) throws(AirlockFailure) -> [String] {
        guard let s = config.issuer else {
            throw AirlockFailure(.system, "\(config.path) has no [issuer] section: add url and signing_key_file (see README \"Airlock as its own issuer\")")
        }
        let keys = try keys(s)
        let dir = dir.hasPrefix("/") ? dir : FileManager.default.currentDirectoryPath + "/" + dir
        try Files.makeDirectories(dir + "/.well-known", mode: 0o755)
        let discovery = dir + "/.well-known/openid-configuration", jwks = dir + "/jwks.json"
        try Files.writeAtomically(IssuerDocuments.discovery(issuer: s.url, algorithms: keys.map(\.algorithm.rawValue)), to: discovery, mode: 0o644)
        try Files.writeAtomically(IssuerDocuments.jwks(keys), to: jwks, mode: 0o644)
        return [discovery, jwks]
    }

    /// What `airlock check` says of the issuer: each key usable, and the documents served at `url`
    /// naming this issuer and publishing every configured key as it is.
    public static func problems(_ s: AirlockIssuerSettings, transport: any HTTPTransport, notes: inout [String]) async -> [String] {
        let keys: [IssuerKey]
        do { keys = try Self.keys(s) } catch { return [error.message] }
        let republish = "publish them again (airlock issuer publish --config FILE --out DIR) and serve DIR at \(s.url)"
        struct Unfetched: Error { let why: String }
        func fetch(_ url: String) async -> Result<[String: Any], Unfetched> {
            guard let u = URL(string: url) else { return .failure(Unfetched(why: "\(url) is not a URL")) }
            do {
                let r = try await transport.send(HTTPRequest(url: u, headers: ["Accept": "application/json"], timeout: 10))
                guard r.status == 200 else { return .failure(Unfetched(why: "\(url) answered HTTP \(r.status)")) }
                guard let o = try? JSONSerialization.jsonObject(with: r.body) as? [String: Any] else { return .failure(Unfetched(why: "\(url) is not a JSON object")) }
                return .success(o)
            } catch {
                return .failure(Unfetched(why: "cannot fetch \(url): \(error)"))
            }
        }
        let discoveryURL = IssuerDocuments.discoveryURI(s.url)
        let discovery: [String: Any]
        switch await fetch(discoveryURL) {
        case .failure(let e): return ["[issuer] \(e.why): providers cannot verify Airlock's tokens; \(republish)"]
        case .success(let o): discovery = o
        }
        var problems: [String] = []
        if discovery["issuer"] as? String != s.url {
            problems.append("[issuer] \(discoveryURL) names issuer \(String(describing: discovery["issuer"] ?? "none")), not \(s.url): providers would refuse every token; \(republish)")
        }
        guard let jwksURI = discovery["jwks_uri"] as? String else {
            return problems + ["[issuer] \(discoveryURL) has no jwks_uri; \(republish)"]
        }
        let published: [[String: Any]]
        switch await fetch(jwksURI) {
        case .failure(let e): return problems + ["[issuer] \(e.why); \(republish)"]
        case .success(let o): published = o["keys"] as? [[String: Any]] ?? []
        }
        for key in keys {
            let match = published.first { $0["kid"] as? String == key.kid }
            let same = match.map { m in ["kty", "crv", "x", "y", "n", "e"].allSatisfy { (m[$0] as? String) == key.jwk[$0] } } ?? false
            if !same {
                problems.append("[issuer] the key in \(key.path) (kid \(key.kid)) is not published at \(jwksURI)\(match == nil ? "" : " as it is"): tokens it signs would be refused; \(republish)")
            }
        }
        if problems.isEmpty {
            notes.append("issuer \(s.url): \(keys.count) key(s) published (\(keys.map { "\($0.algorithm.rawValue) \($0.kid)" }.joined(separator: ", ")))")
        }
        return problems
    }
}
