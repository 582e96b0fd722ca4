import AirlockCore
import AirlockTesting
import Foundation
import Identity
import Ledger
import RunnerContract
import Testing

/// Every hostile token is refused with the check it failed, gets no grant, and leaves exactly one
/// audit record: the denial. Background: alg confusion (CVE-2015-9235 class), `none` tokens,
/// jku/x5u key injection (RFC 8725 §3.1, §3.10) and kid path traversal.
struct HostileTokenTests {
    typealias Maker = @Sendable (IdentityFixture) throws -> String

    static let cases: [(String, TokenRejection.Check, Maker)] = [
        ("expired", .expired, { f in var c = f.claims(); c["exp"] = Int(Date().timeIntervalSince1970) - 600; return f.issuer.mint(c) }),
        ("not yet valid", .notYetValid, { f in var c = f.claims(); c["nbf"] = Int(Date().timeIntervalSince1970) + 600; return f.issuer.mint(c) }),
        ("issued in the future", .issuedInFuture, { f in var c = f.claims(); c["iat"] = Int(Date().timeIntervalSince1970) + 600; return f.issuer.mint(c) }),
        ("wrong issuer", .issuer, { f in var c = f.claims(); c["iss"] = "https://gitlab.evil.example"; return f.issuer.mint(c) }),
        ("wrong audience", .audience, { f in var c = f.claims(); c["aud"] = "https://someone-else.example"; return f.issuer.mint(c) }),
        ("alg none", .algorithm, { f in TestIssuer.segment(["alg": "none", "typ": "JWT"]) + "." + TestIssuer.segment(f.claims()) + "." }),
        ("HS256 keyed with the RSA public key", .algorithm, { f in
            TestIssuer.mintHS256(f.claims(), header: ["kid": f.issuer.currentKid], secret: Data(f.issuer.publicKeyPEM().utf8)) }),
        ("unknown kid", .unknownKey, { f in try TestIssuer.mintWithForeignKey(f.claims(), header: ["kid": "not-a-published-key"]) }),
        ("tampered payload", .signature, { f in
            let t = f.issuer.mint(f.claims()).split(separator: ".")
            var c = f.claims(); c["project_path"] = "platform/other"
            return "\(t[0]).\(TestIssuer.segment(c)).\(t[2])" }),
        ("tampered signature", .signature, { f in
            var t = f.issuer.mint(f.claims()).split(separator: ".").map(String.init)
            t[2] = String(t[2].reversed())
            return t.joined(separator: ".") }),
        ("truncated", .format, { f in let t = f.issuer.mint(f.claims()); return String(t.prefix(t.count / 3)) }),
        ("not base64", .format, { _ in "!!notbase64!!.@@@.###" }),
        ("oversized", .size, { f in var c = f.claims(); c["padding"] = String(repeating: "A", count: 20_000); return f.issuer.mint(c) }),
        ("missing claims", .missingClaim, { f in var c = f.claims(); c.removeValue(forKey: "project_id"); return f.issuer.mint(c) }),
        ("jku header pointing elsewhere", .unknownKey, { f in
            try TestIssuer.mintWithForeignKey(f.claims(), header: ["kid": "attacker-key", "jku": "https://evil.example/jwks.json"]) }),
        ("embedded jwk with a real kid", .signature, { f in
            try TestIssuer.mintWithForeignKey(f.claims(), header: ["kid": f.issuer.currentKid, "jwk": ["kty": "RSA", "n": "AQAB", "e": "AQAB"]]) }),
        ("kid with path characters", .keyID, { f in f.issuer.mint(f.claims(), header: ["kid": "../../../etc/passwd"]) }),
        ("ES256 claimed for an RSA key", .keyMismatch, { f in f.issuer.mint(f.claims(), header: ["alg": "ES256"]) }),
        ("header is not JSON", .header, { f in
            let t = f.issuer.mint(f.claims()).split(separator: ".")
            return "\(Base64URL.encode(Data("not json".utf8))).\(t[1]).\(t[2])" }),
        ("numeric exp as a string", .payload, { f in var c = f.claims(); c["exp"] = "9999999999"; return f.issuer.mint(c) }),
    ]

    @Test(arguments: cases.indices)
    func hostileTokenIsRefused(_ i: Int) async throws {
        let (name, check, make) = Self.cases[i]
        let f = try IdentityFixture()
        let token = try make(f)
        do {
            _ = try await f.authorize(token)
            Issue.record("\(name): accepted")
        } catch let r as TokenRejection {
            #expect(r.check == check, "\(name): \(r)")
            #expect(r.fault == .job)
            #expect(!r.description.contains(token), "\(name): message contains the token")
            #expect(r.description.count < 600)
        }
        let records = f.audit.records()
        #expect(records.count == 1, "\(name): \(records)")
        #expect(records.first?["decision"] == .string("denied"))
        #expect(records.first?["reason"] == .string("token_\(check.rawValue)"))
        let auditText = (try? String(contentsOfFile: f.config.runner.auditLog, encoding: .utf8)) ?? ""
        #expect(!auditText.contains(token))
        #expect(records.first?["profiles"] == nil)
    }

    @Test func distinctChecksCoverTheTable() {
        #expect(Set(Self.cases.map(\.1)).count >= 13)
        #expect(Self.cases.count >= 15)
    }

    @Test func validTokenIsGranted() async throws {
        let f = try IdentityFixture()
        let auth = try await f.authorize(f.issuer.mint(f.claims()))
        #expect(auth.grants.map(\.profile) == ["deploy-prod"])
        let r = f.audit.records()
        #expect(r.count == 1)
        #expect(r[0]["decision"] == .string("granted"))
        #expect(r[0]["rules"] == .array([.string("protected main of platform projects")]))
        #expect(r[0]["ref"] == .string("main"))
        #expect(r[0]["token_jti"] != nil)
    }

    @Test func anotherJobsTokenIsRefused() async throws {
        let f = try IdentityFixture()
        var other = f.job
        other.jobID += 1
        let token = f.issuer.mint(f.issuer.claims(for: other, audience: IdentityFixture.audience))
        await #expect(throws: TokenRejection.self) { _ = try await f.authorize(token) }
        #expect(f.audit.records().first?["reason"] == .string("token_wrong_job"))
    }

    @Test func jobWithoutTokenRunsWithNoGrants() async throws {
        let f = try IdentityFixture()
        let auth = try await f.authorize(nil)
        #expect(auth.grants.isEmpty)
        #expect(f.audit.records().first?["decision"] == .string("no_token"))
    }

    @Test func requireTokenShowsTheIdTokensBlock() async throws {
        let f = try IdentityFixture(extraGitLab: "require_token = true")
        do {
            _ = try await f.authorize(nil)
            Issue.record("accepted")
        } catch let e as AirlockFailure {
            #expect(e.fault == .job)
            #expect(e.message.contains("id_tokens:\n    AIRLOCK_ID_TOKEN:\n      aud: https://airlock.test"))
        }
    }
}
