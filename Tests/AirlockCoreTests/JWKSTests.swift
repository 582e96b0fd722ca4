import AirlockCore
import AirlockTesting
import Crypto
import Foundation
import HTTPClient
import Identity
import Ledger
import RunnerContract
import Testing

/// Key rotation and GitLab outages, against the loopback test issuer.
struct JWKSTests {
    @Test func rotationRefreshesOnceThenVerifies() async throws {
        let f = try IdentityFixture()
        _ = try await f.authorize(f.issuer.mint(f.claims()))
        #expect(f.issuer.jwksFetchCount == 1)
        _ = try await f.authorize(f.issuer.mint(f.claims()))
        #expect(f.issuer.jwksFetchCount == 1)  // cached on disk
        try f.issuer.addKey(publish: true)      // GitLab rotates: a new kid appears
        let auth = try await f.authorize(f.issuer.mint(f.claims()))
        #expect(auth.grants.count == 1)
        #expect(f.issuer.jwksFetchCount == 2)
    }

    @Test func unknownKidRefreshIsRateLimited() async throws {
        let f = try IdentityFixture()
        _ = try await f.authorize(f.issuer.mint(f.claims()))
        for _ in 0..<5 {
            let bogus = try TestIssuer.mintWithForeignKey(f.claims(), header: ["kid": "garbage\(UUID().uuidString.prefix(4))"])
            await #expect(throws: TokenRejection.self) { _ = try await f.authorize(bogus) }
        }
        #expect(f.issuer.jwksFetchCount == 2)  // one initial fetch, one forced refresh for five garbage kids
    }

    @Test func gitlabDownWithWarmCacheStillVerifies() async throws {
        let f = try IdentityFixture(extraGitLab: "jwks_cache_ttl = \"1s\"")
        _ = try await f.authorize(f.issuer.mint(f.claims()))
        f.issuer.setDown(true)
        let later = Date().addingTimeInterval(120)  // past the TTL, within the grace period
        let token = f.issuer.mint(f.issuer.claims(for: f.job, audience: IdentityFixture.audience, now: later))
        let auth = try await f.authorize(token, now: later)
        #expect(auth.grants.count == 1)
    }

    /// `jwks_grace`: while GitLab is down, a cached key set verifies up to TTL + grace past its
    /// fetch, with a warning; one second later it does not, and that is the system's fault.
    @Test func theGracePeriodRunsOut() async throws {
        let f = try IdentityFixture(extraGitLab: "jwks_cache_ttl = \"1m\"\njwks_grace = \"1h\"")
        let t0 = Date(timeIntervalSince1970: Double(Int(Date().timeIntervalSince1970)))
        func token(at t: Date) -> String { f.issuer.mint(f.issuer.claims(for: f.job, audience: IdentityFixture.audience, now: t)) }
        _ = try await f.authorize(token(at: t0), now: t0)
        #expect(f.issuer.jwksFetchCount == 1)
        f.issuer.setDown(true)
        let lastGraceSecond = t0.addingTimeInterval(60 + 3600 - 1)
        #expect(try await f.authorize(token(at: lastGraceSecond), now: lastGraceSecond).grants.count == 1)
        #expect(f.warnings.all.contains { $0.contains("verifying with the cached key set") && $0.contains("grace period 3600s") })
        let pastGrace = t0.addingTimeInterval(60 + 3600 + 1)
        let e = await #expect(throws: KeySetUnavailable.self) { _ = try await f.authorize(token(at: pastGrace), now: pastGrace) }
        #expect(e?.fault == .system)
        #expect(e?.message.contains("the cached keys are older than jwks_cache_ttl + grace") == true, "\(e?.message ?? "accepted")")
        #expect(f.audit.records().last?["reason"] == .string("jwks_unavailable"))
        // GitLab back: the same token verifies (the refusal was the stale keys, not the token).
        f.issuer.setDown(false)
        #expect(try await f.authorize(token(at: pastGrace), now: pastGrace).grants.count == 1)
        #expect(f.issuer.jwksFetchCount == 2)
    }

    /// The unknown-kid refresh limit lives in the disk cache, so it holds across prepares (separate
    /// processes): verifiers that share nothing but the cache directory, as two prepares do.
    @Test func theUnknownKidLimitHoldsAcrossProcesses() async throws {
        let issuer = try TestIssuer()
        let dir = "/var/tmp/airlock-unit-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let settings = IssuerSettings(issuer: issuer.issuer, audience: IdentityFixture.audience, unknownKidRefreshInterval: 60)
        func prepare(_ cache: String = dir) -> TokenVerifier {
            TokenVerifier(settings: settings, keys: JWKSStore(settings: settings, cacheDirectory: cache, transport: URLSessionTransport()))
        }
        let job = SimulatedJob(script: [])
        let t0 = Date(timeIntervalSince1970: Double(Int(Date().timeIntervalSince1970)))
        func garbage() throws -> String {
            try TestIssuer.mintWithForeignKey(issuer.claims(for: job, audience: IdentityFixture.audience, now: t0), header: ["kid": "garbage-\(UUID().uuidString.prefix(8))"])
        }
        _ = try await prepare().verify(issuer.mint(issuer.claims(for: job, audience: IdentityFixture.audience, now: t0)), now: t0)
        #expect(issuer.jwksFetchCount == 1)
        let first = try garbage()
        await #expect(throws: TokenRejection.self) { _ = try await prepare().verify(first, now: t0.addingTimeInterval(1)) }
        #expect(issuer.jwksFetchCount == 2)  // the one forced refresh
        for i in 0..<4 {
            let t = try garbage()
            await #expect(throws: TokenRejection.self) { _ = try await prepare().verify(t, now: t0.addingTimeInterval(10 + Double(i))) }
        }
        #expect(issuer.jwksFetchCount == 2)  // four more prepares within the interval: none
        let later = try garbage()
        await #expect(throws: TokenRejection.self) { _ = try await prepare().verify(later, now: t0.addingTimeInterval(62)) }
        #expect(issuer.jwksFetchCount == 3)  // the interval is over: one more
        // A prepare with a cache of its own knows of no refresh: the limit is the shared file.
        let elsewhere = try garbage()
        await #expect(throws: TokenRejection.self) { _ = try await prepare(dir + "-other").verify(elsewhere, now: t0.addingTimeInterval(63)) }
        try? FileManager.default.removeItem(atPath: dir + "-other")
        #expect(issuer.jwksFetchCount == 5)  // its first fetch and its forced refresh
    }

    @Test func gitlabDownWithColdCacheIsASystemFailure() async throws {
        let f = try IdentityFixture()
        f.issuer.setDown(true)
        do {
            _ = try await f.authorize(f.issuer.mint(f.claims()))
            Issue.record("accepted")
        } catch let e as KeySetUnavailable {
            #expect(e.fault == .system)
            #expect(e.message.contains("cannot fetch GitLab's signing keys"))
            #expect(e.message.contains("no cached keys"))
            #expect(e.message.contains("jwks_file"))
        }
        #expect(f.audit.records().first?["reason"] == .string("jwks_unavailable"))
    }

    /// Other issuers sign with ES256: the key must be EC P-256 and the token verifies with it;
    /// the same token claiming RS256 is refused for the key mismatch.
    @Test func es256IssuerVerifies() async throws {
        let probe = try IdentityFixture()
        let key = P256.Signing.PrivateKey()
        let raw = key.publicKey.rawRepresentation
        let jwk: [String: Any] = ["kty": "EC", "crv": "P-256", "kid": "ec-1", "use": "sig",
                                  "x": Base64URL.encode(raw.prefix(32)), "y": Base64URL.encode(raw.suffix(32))]
        let file = probe.dir + "/ec-jwks.json"
        try JSONSerialization.data(withJSONObject: ["keys": [jwk]]).write(to: URL(fileURLWithPath: file))
        let f = try IdentityFixture(extraGitLab: "jwks_file = \"\(file)\"")
        f.job = probe.job
        var c = probe.claims()
        c["iss"] = f.issuer.issuer
        func sign(_ alg: String) throws -> String {
            let input = TestIssuer.segment(["alg": alg, "kid": "ec-1", "typ": "JWT"]) + "." + TestIssuer.segment(c)
            return input + "." + Base64URL.encode(try key.signature(for: Data(input.utf8)).rawRepresentation)
        }
        let auth = try await f.authorize(try sign("ES256"))
        #expect(auth.grants.count == 1)
        do {
            _ = try await f.authorize(try sign("RS256"))
            Issue.record("accepted RS256 for an EC key")
        } catch let r as TokenRejection {
            #expect(r.check == .keyMismatch)
        }
    }

    /// With `jwks_file` the configured issuer is never contacted: it is down, and gets no request.
    @Test func staticJWKSFileNeedsNoNetwork() async throws {
        let probe = try IdentityFixture()
        let file = probe.dir + "/jwks.json"
        try probe.issuer.jwks().write(to: URL(fileURLWithPath: file))
        let f = try IdentityFixture(extraGitLab: "jwks_file = \"\(file)\"")
        f.issuer.setDown(true)
        // The second fixture trusts the first issuer's keys through the file, with its own iss.
        var c = probe.claims()
        c["iss"] = f.issuer.issuer
        f.job = probe.job
        let auth = try await f.authorize(probe.issuer.mint(c))
        #expect(auth.grants.count == 1)
        // An unknown kid does not make it fetch either.
        let bogus = try TestIssuer.mintWithForeignKey(c, header: ["kid": "not-in-the-file"])
        await #expect(throws: TokenRejection.self) { _ = try await f.authorize(bogus) }
        #expect(f.issuer.server.requestCount == 0)
        #expect(probe.issuer.server.requestCount == 0)
    }
}
