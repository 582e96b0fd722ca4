import AirlockAdmin
import AirlockConfiguration
import AirlockTesting
import ConfigSyntax
import Crypto
import _CryptoExtras
import Foundation
import HTTPClient
import Identity
import JWTKit
import RunnerContract
import Testing

/// Airlock as its own OIDC issuer (issue 17, parts 1 and 2): keys, the published documents, and
/// `airlock check` against them as a static web server serves them.
struct IssuerTests {
    /// A scratch directory with a key, a configuration whose [issuer] url is a loopback static
    /// server serving `site`, and the server.
    final class World {
        let dir = "/var/tmp/airlock-issuer-\(UUID().uuidString)"
        var site: String { dir + "/site" }
        let server: LoopbackHTTPServer

        init() throws {
            try FileManager.default.createDirectory(atPath: dir + "/site", withIntermediateDirectories: true)
            let site = dir + "/site"
            server = try LoopbackHTTPServer { r in
                guard let data = FileManager.default.contents(atPath: site + r.path) else { return FakeResponse(status: 404, body: Data()) }
                return FakeResponse(status: 200, body: data)
            }
        }
        deinit { try? FileManager.default.removeItem(atPath: dir) }

        func key(_ name: String, pem: String, mode: Int = 0o600) -> String {
            let path = dir + "/" + name
            FileManager.default.createFile(atPath: path, contents: Data(pem.utf8), attributes: [.posixPermissions: mode])
            return path
        }

        func config(issuer: String? = nil, signing: String, previous: [String] = [], extra: String = "") throws -> AirlockConfig {
            let toml = """
            [runner]
            builds_root = "\(dir)/builds"
            cache_root = "\(dir)/cache"
            state_dir = "\(dir)/state"
            audit_log = "\(dir)/audit.jsonl"
            isolation = "none"

            [issuer]
            url = "\(issuer ?? server.baseURL)"
            signing_key_file = "\(signing)"
            previous_key_files = [\(previous.map { "\"\($0)\"" }.joined(separator: ", "))]
            \(extra)
            """
            try Data(toml.utf8).write(to: URL(fileURLWithPath: dir + "/airlock.toml"))
            return try AirlockConfig.load(path: dir + "/airlock.toml")
        }

        func check(_ c: AirlockConfig) async -> (problems: [String], notes: [String]) {
            var notes: [String] = []
            let problems = await IssuerTools.problems(c.issuer!, transport: URLSessionTransport(), notes: &notes)
            return (problems, notes)
        }
    }

    /// RFC 7638 §3.1's own example: its RSA key's thumbprint is NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs,
    /// and the members that are not required (kid, alg, use) do not change it.
    @Test func theKidIsTheRFC7638Thumbprint() {
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
        #expect(IssuerKey.thumbprint(["kty": "RSA", "n": n, "e": "AQAB"]) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")
        #expect(IssuerKey.thumbprint(["kty": "RSA", "n": n, "e": "AQAB", "kid": "2011-04-29", "alg": "RS256", "use": "sig"]) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")
    }

    @Test func p256SignsES256AndRSASignsRS256AndWhatItSignsVerifiesWithThePublishedKey() async throws {
        let w = try World()
        let ec = try IssuerKey.load(path: w.key("ec.pem", pem: P256.Signing.PrivateKey().pemRepresentation))
        let rsa = try IssuerKey.load(path: w.key("rsa.pem", pem: try _RSA.Signing.PrivateKey(keySize: .bits2048).pemRepresentation))
        #expect(ec.algorithm == .es256 && ec.jwk["crv"] == "P-256" && ec.jwk["kid"] == ec.kid && ec.jwk["d"] == nil)
        #expect(rsa.algorithm == .rs256 && rsa.jwk["e"] == "AQAB" && rsa.jwk["d"] == nil)
        // A token it signs verifies against its published JWK, with its kid in the header.
        struct Claims: JWTPayload {
            var iss: IssuerClaim
            var sub: SubjectClaim
            var exp: ExpirationClaim
            func verify(using algorithm: some JWTAlgorithm) throws { try exp.verifyNotExpired() }
        }
        for key in [ec, rsa] {
            let token = try await key.sign(Claims(iss: "https://airlock.test", sub: "project_path:g/p:ref_type:branch:ref:main",
                                                  exp: .init(value: Date().addingTimeInterval(300))))
            let jwks = try JSONDecoder().decode(JWKS.self, from: IssuerDocuments.jwks([key]))
            let verifier = JWTKeyCollection()
            try await verifier.add(jwks: jwks)
            let claims = try await verifier.verify(token, as: Claims.self)
            #expect(claims.sub.value == "project_path:g/p:ref_type:branch:ref:main")
            let header = String(token.split(separator: ".")[0])
            let fields = try JSONSerialization.jsonObject(with: Base64URL.decode(header)!) as? [String: Any]
            #expect(fields?["kid"] as? String == key.kid && fields?["alg"] as? String == key.algorithm.rawValue)
        }
    }

    /// A key file others can read, a small RSA key, or not a key: each a clear error naming the file.
    @Test func unusableKeysAreRefusedWithWhatToDo() throws {
        let w = try World()
        let open = w.key("open.pem", pem: P256.Signing.PrivateKey().pemRepresentation, mode: 0o644)
        #expect(throws: IssuerKey.Problem.self) { try IssuerKey.load(path: open) }
        #expect(throws: ConfigError.self) { _ = try w.config(signing: open) }
        do { _ = try w.config(signing: open) } catch {
            #expect("\(error)".contains("signing_key_file") && "\(error)".contains("chmod 600"))
        }
        let small = w.key("small.pem", pem: try _RSA.Signing.PrivateKey(unsafeKeySize: .init(bitCount: 1024)).pemRepresentation)
        do { _ = try IssuerKey.load(path: small); Issue.record("a 1024-bit key was accepted") } catch {
            #expect(error.description.contains("at least 2048 bits") && error.description.contains(small), "\(error.description)")
        }
        let junk = w.key("junk.pem", pem: "not a key")
        #expect(throws: IssuerKey.Problem.self) { try IssuerKey.load(path: junk) }
        let good = w.key("good.pem", pem: P256.Signing.PrivateKey().pemRepresentation)
        do { _ = try w.config(issuer: "http://airlock.example.com", signing: good); Issue.record("plain http off loopback was accepted") } catch {
            #expect("\(error)".contains("[issuer] url"))
        }
        do { _ = try w.config(signing: good, extra: "token_lifetime = \"20m\""); Issue.record("a 20m lifetime was accepted") } catch {
            #expect("\(error)".contains("token_lifetime"))
        }
        do { _ = try w.config(signing: good, previous: [good]); Issue.record("the signing key as a previous key was accepted") } catch {
            #expect("\(error)".contains("previous_key_files"))
        }
    }

    /// What `airlock issuer publish` writes is what `airlock check` then finds served, for the
    /// signing key and a previous one; a key that is not published, or another issuer, is a problem.
    @Test func publishedDocumentsAreCheckedAgainstTheConfiguredKeys() async throws {
        let w = try World()
        let current = w.key("current.pem", pem: P256.Signing.PrivateKey().pemRepresentation)
        let previous = w.key("previous.pem", pem: try _RSA.Signing.PrivateKey(keySize: .bits2048).pemRepresentation)
        let c = try w.config(signing: current, previous: [previous])
        // Nothing served yet.
        #expect(await w.check(c).problems.first?.contains("airlock issuer publish") == true)
        let files = try IssuerTools.publish(config: c, out: w.site)
        #expect(files == [w.site + "/.well-known/openid-configuration", w.site + "/jwks.json"])
        let discovery = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: files[0]))) as? [String: Any]
        #expect(discovery?["issuer"] as? String == w.server.baseURL && discovery?["jwks_uri"] as? String == w.server.baseURL + "/jwks.json")
        #expect(discovery?["id_token_signing_alg_values_supported"] as? [String] == ["ES256", "RS256"])
        let jwks = try String(contentsOfFile: files[1], encoding: .utf8)
        #expect(!jwks.contains("\"d\""))  // no private member
        let ok = await w.check(c)
        #expect(ok.problems.isEmpty, "\(ok.problems)")
        #expect(ok.notes.first?.contains("2 key(s) published") == true)
        // The documents served are older than the configuration: a rotated-in key is missing.
        let next = w.key("next.pem", pem: P256.Signing.PrivateKey().pemRepresentation)
        let rotated = try w.config(signing: current, previous: [previous, next])
        let missing = await w.check(rotated).problems
        let nextKid = try IssuerKey.load(path: next).kid
        #expect(missing.count == 1 && missing[0].contains(nextKid))
        // Served for another issuer: refused.
        let other = try w.config(issuer: "http://127.0.0.1:\(w.server.port)/other", signing: current, previous: [previous])
        #expect(await w.check(other).problems.contains { $0.contains("names issuer") } == false)  // nothing at /other/.well-known
        _ = try IssuerTools.publish(config: other, out: w.site + "/other")
        _ = try IssuerTools.publish(config: c, out: w.site + "/other")  // the wrong issuer's documents at /other
        #expect(await w.check(other).problems.contains { $0.contains("names issuer \(w.server.baseURL)") })
    }

    /// `airlock issuer rotate`'s key: a new 0600 P-256 key; an existing file is never replaced.
    @Test func aNewKeyNeverReplacesAFile() throws {
        let w = try World()
        let path = w.dir + "/new.pem"
        let key = try IssuerKey.generateP256(path: path)
        #expect(key.algorithm == .es256)
        let mode = (try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int) ?? 0
        #expect(mode == 0o600)
        let before = try Data(contentsOf: URL(fileURLWithPath: path))
        #expect(throws: IssuerKey.Problem.self) { _ = try IssuerKey.generateP256(path: path) }
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == before)
    }

    /// Issue 17, part 3: the token Airlock presents for a job. It verifies (jwt-kit, against the
    /// published JWKS) for ES256 and RS256 keys; it carries Airlock's iss, the provider's aud, the
    /// given sub, the job's verified GitLab claims as GitLab sent them (runner_id a number, lists as
    /// lists) but not GitLab's own iss/aud/exp/nbf/iat/jti, plus runner_host and airlock_profile;
    /// its life is the configured lifetime; each token has its own jti.
    @Test func aMintedTokenCarriesTheVerifiedJobAndVerifiesWithThePublishedKeys() async throws {
        let w = try World()
        let job = VerifiedJob(claims: ["iss": "https://gitlab.example.com", "aud": "https://airlock.example.com", "sub": "project_path:g/p:ref_type:branch:ref:main",
                                       "exp": "1999999999", "iat": "1700000000", "nbf": "1700000000", "jti": "gitlab-jti",
                                       "project_id": "42", "namespace_id": "7", "ref": "main", "ref_protected": "true", "environment": "production",
                                       "pipeline_source": "push", "job_id": "901", "runner_id": "5"],
                              listClaims: ["groups_direct": ["platform", "platform/ops"], "user_identities": []])
        struct Claims: JWTPayload {
            var iss: IssuerClaim
            var aud: AudienceClaim
            var exp: ExpirationClaim
            func verify(using algorithm: some JWTAlgorithm) throws {
                try exp.verifyNotExpired()
                try aud.verifyIntendedAudience(includes: "sts.amazonaws.com")
            }
        }
        let ec = try IssuerKey.load(path: w.key("ec.pem", pem: P256.Signing.PrivateKey().pemRepresentation))
        let rsa = try IssuerKey.load(path: w.key("rsa.pem", pem: try _RSA.Signing.PrivateKey(keySize: .bits2048).pemRepresentation))
        var jtis: Set<String> = []
        for key in [ec, rsa] {
            let minter = IdentityMinter(issuer: "https://airlock.example.com", key: key, lifetime: 300, runnerHost: "runner-7")
            let now = Date()
            let minted = try await minter.mint(job: job, audience: "sts.amazonaws.com", subject: "project_path:g/p:ref_type:branch:ref:main", profile: "deploy", now: now)
            jtis.insert(minted.jti)
            let verifier = JWTKeyCollection()
            try await verifier.add(jwks: try JSONDecoder().decode(JWKS.self, from: IssuerDocuments.jwks([key])))
            let verified = try await verifier.verify(minted.token, as: Claims.self)
            #expect(verified.iss.value == "https://airlock.example.com" && minted.kid == key.kid)
            let payload = try #require(try JSONSerialization.jsonObject(with: Base64URL.decode(String(minted.token.split(separator: ".")[1]))!) as? [String: Any])
            let t = Int(now.timeIntervalSince1970)
            #expect(payload["sub"] as? String == "project_path:g/p:ref_type:branch:ref:main" && payload["aud"] as? String == "sts.amazonaws.com")
            #expect(payload["iat"] as? Int == t && payload["nbf"] as? Int == t && payload["exp"] as? Int == t + 300)
            #expect(payload["jti"] as? String == minted.jti && minted.jti != "gitlab-jti")
            for (name, value) in ["project_id": "42", "namespace_id": "7", "ref": "main", "ref_protected": "true", "environment": "production",
                                  "pipeline_source": "push", "job_id": "901", "runner_host": "runner-7", "airlock_profile": "deploy"] {
                #expect(payload[name] as? String == value, "\(name)")
            }
            #expect(payload["runner_id"] as? Int == 5)
            #expect(payload["groups_direct"] as? [String] == ["platform", "platform/ops"])
            #expect(Set(payload.keys) == Set(["iss", "aud", "sub", "iat", "nbf", "exp", "jti", "project_id", "namespace_id", "ref", "ref_protected",
                                               "environment", "pipeline_source", "job_id", "runner_id", "groups_direct", "runner_host", "airlock_profile"]))
        }
        #expect(jtis.count == 2)
    }
}
