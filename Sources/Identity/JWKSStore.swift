import Crypto
public import Foundation

/// The issuer's public keys, by `kid`, each as its JWK JSON.
public struct KeySet: Sendable {
    public let keys: [String: Data]
    public let fetchedAt: Date
    /// Where the keys came from, for messages.
    public let source: String

    /// Parses a JWKS document; keys without a `kid` are skipped (GitLab's always carry one).
    /// - Throws: `KeySetUnavailable` when the document is not a JWKS.
    public init(jwks: Data, fetchedAt: Date, source: String) throws(KeySetUnavailable) {
        guard let obj = try? JSONSerialization.jsonObject(with: jwks) as? [String: Any], let list = obj["keys"] as? [[String: Any]] else {
            throw KeySetUnavailable("\(source) is not a JWKS document (expected {\"keys\": [...]})")
        }
        var keys: [String: Data] = [:]
        for k in list {
            guard let kid = k["kid"] as? String, let d = try? JSONSerialization.data(withJSONObject: k) else { continue }
            keys[kid] = d
        }
        self.keys = keys
        self.fetchedAt = fetchedAt
        self.source = source
    }
}

/// Fetches the issuer's JWKS through OIDC discovery and caches it on disk (atomic writes), so that
/// each prepare, a separate process, does not refetch. Refreshes at the TTL and once on an unknown
/// `kid`, at most once per `unknownKidRefreshInterval` across all processes; while GitLab is
/// unreachable a cached set within the grace period still verifies (with a warning).
public struct JWKSStore: Sendable {
    public let settings: IssuerSettings
    /// Directory for the cache file (under Airlock's state dir, 0700).
    public let cacheDirectory: String
    public let transport: any HTTPTransport
    /// Receives warnings (stale cache in use, refresh failed).
    public let warn: @Sendable (String) -> Void

    public init(settings: IssuerSettings, cacheDirectory: String, transport: any HTTPTransport,
                warn: @escaping @Sendable (String) -> Void = { _ in }) {
        self.settings = settings
        self.cacheDirectory = cacheDirectory
        self.transport = transport
        self.warn = warn
    }

    struct CacheFile: Codable {
        var issuer: String
        var jwksURI: String
        var fetchedAt: Date
        var lastForcedRefresh: Date?
        var jwks: String
    }

    var cachePath: String {
        let h = Fingerprint.hex(SHA256.hash(data: Data(settings.issuer.utf8)).prefix(8))
        return "\(cacheDirectory)/jwks-\(h).json"
    }

    /// The keys to verify with now.
    /// - Throws: `KeySetUnavailable` (system) when neither GitLab nor the cache can provide keys.
    public func current(now: Date) async throws(KeySetUnavailable) -> KeySet {
        if let file = settings.jwksFile {
            guard let data = FileManager.default.contents(atPath: file) else {
                throw KeySetUnavailable("cannot read [gitlab] jwks_file \(file)")
            }
            return try KeySet(jwks: data, fetchedAt: now, source: file)
        }
        let cache = readCache()
        if let cache, now.timeIntervalSince(cache.fetchedAt) < settings.jwksCacheTTL {
            return try KeySet(jwks: Data(cache.jwks.utf8), fetchedAt: cache.fetchedAt, source: cache.jwksURI)
        }
        do {
            return try await fetch(now: now, previous: cache, forced: false)
        } catch {
            if let cache, now.timeIntervalSince(cache.fetchedAt) < settings.jwksCacheTTL + settings.jwksGrace {
                let age = Int(now.timeIntervalSince(cache.fetchedAt))
                warn("cannot refresh GitLab's keys (\(error)); verifying with the cached key set fetched \(age)s ago (grace period \(Int(settings.jwksGrace))s)")
                return try KeySet(jwks: Data(cache.jwks.utf8), fetchedAt: cache.fetchedAt, source: cache.jwksURI)
            }
            let why = cache == nil ? "no cached keys" : "the cached keys are older than jwks_cache_ttl + grace"
            throw KeySetUnavailable("cannot fetch GitLab's signing keys for \(settings.issuer) (\(error)) and \(why): check that this runner can reach \(settings.issuer)/.well-known/openid-configuration, or set [gitlab] jwks_file")
        }
    }

    /// A fresh key set after a token named an unknown `kid`, or nil when a refresh was made too
    /// recently (so that garbage kids cannot make Airlock hammer GitLab) or failed.
    public func refreshForUnknownKid(now: Date) async -> KeySet? {
        guard settings.jwksFile == nil else { return nil }
        let cache = readCache()
        if let last = cache?.lastForcedRefresh, now.timeIntervalSince(last) < settings.unknownKidRefreshInterval {
            return nil
        }
        do {
            return try await fetch(now: now, previous: cache, forced: true)
        } catch {
            warn("refreshing GitLab's keys for an unknown kid failed: \(error)")
            if var c = cache { c.lastForcedRefresh = now; writeCache(c) }
            return nil
        }
    }

    /// Fetches discovery and the JWKS now, updating the cache (for `airlock check`).
    /// - Throws: the transport or format error, with the URL that failed.
    public func fetchNow(now: Date) async throws -> KeySet {
        try await fetch(now: now, previous: readCache(), forced: false)
    }

    private func fetch(now: Date, previous: CacheFile?, forced: Bool) async throws -> KeySet {
        let base = settings.issuer.hasSuffix("/") ? String(settings.issuer.dropLast()) : settings.issuer
        guard let discoveryURL = URL(string: base + "/.well-known/openid-configuration") else {
            throw KeySetUnavailable("[gitlab] issuer \(settings.issuer) is not a URL")
        }
        let d = try await transport.send(HTTPRequest(url: discoveryURL, headers: ["Accept": "application/json"], timeout: 10))
        guard d.status == 200 else { throw TransportError("\(discoveryURL.absoluteString) answered HTTP \(d.status)") }
        guard let doc = try? JSONSerialization.jsonObject(with: d.body) as? [String: Any],
              let uri = doc["jwks_uri"] as? String, let jwksURL = URL(string: uri) else {
            throw TransportError("\(discoveryURL.absoluteString) has no jwks_uri")
        }
        if let iss = doc["issuer"] as? String, iss != settings.issuer {
            throw TransportError("discovery document names issuer \(iss), not the configured \(settings.issuer)")
        }
        guard jwksURL.scheme == "https" || URL(string: settings.issuer)?.scheme == "http" else {
            throw TransportError("jwks_uri \(uri) is not https")
        }
        let k = try await transport.send(HTTPRequest(url: jwksURL, headers: ["Accept": "application/json"], timeout: 10))
        guard k.status == 200 else { throw TransportError("\(uri) answered HTTP \(k.status)") }
        let set = try KeySet(jwks: k.body, fetchedAt: now, source: uri)
        writeCache(CacheFile(issuer: settings.issuer, jwksURI: uri, fetchedAt: now,
                             lastForcedRefresh: forced ? now : previous?.lastForcedRefresh,
                             jwks: String(decoding: k.body, as: UTF8.self)))
        return set
    }

    private func readCache() -> CacheFile? {
        guard let d = FileManager.default.contents(atPath: cachePath) else { return nil }
        let dec = JSONDecoder()
        dec.dateDecodingStrategy = .secondsSince1970
        guard let c = try? dec.decode(CacheFile.self, from: d), c.issuer == settings.issuer else { return nil }
        return c
    }

    private func writeCache(_ c: CacheFile) {
        let enc = JSONEncoder()
        enc.dateEncodingStrategy = .secondsSince1970
        guard let data = try? enc.encode(c) else { return }
        try? FileManager.default.createDirectory(atPath: cacheDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let tmp = "\(cachePath).tmp-\(getpid())"
        guard FileManager.default.createFile(atPath: tmp, contents: data, attributes: [.posixPermissions: 0o600]) else { return }
        if rename(tmp, cachePath) != 0 { unlink(tmp) }
    }
}
