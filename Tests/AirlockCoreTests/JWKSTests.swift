import AirlockCore
import AirlockTesting
import Crypto
import Foundation
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

    @Test func staticJWKSFileNeedsNoNetwork() async throws {
        let probe = try IdentityFixture()
        let file = probe.dir + "/jwks.json"
        try probe.issuer.jwks().write(to: URL(fileURLWithPath: file))
        probe.issuer.setDown(true)
        let f = try IdentityFixture(extraGitLab: "jwks_file = \"\(file)\"")
        // The second fixture trusts the first issuer's keys through the file, with its own iss.
        var c = probe.claims()
        c["iss"] = f.issuer.issuer
        f.job = probe.job
        let auth = try await f.authorize(probe.issuer.mint(c))
        #expect(auth.grants.count == 1)
    }
}
