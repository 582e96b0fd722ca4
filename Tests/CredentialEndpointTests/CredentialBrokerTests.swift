import AirlockConfiguration
import AirlockCore
import CredentialEndpoint
import Federation
import Foundation
import Identity
import Ledger
import RunnerContract
import Synchronization
import Testing
import Crypto

/// A provider that issues what the test says, slowly if asked, and records revocations.
final class ScriptedProvider: CredentialProvider {
    let name = "aws"
    struct State {
        var issued: [String] = []
        var revoked: [String] = []
        var lifetimes: [Double] = []
        var failure: FederationError?
        /// The identity token each exchange presented.
        var presented: [String] = []
    }
    let state = Mutex(State())
    let delay: Double
    init(lifetimes: [Double], delay: Double = 0) {
        state.withLock { $0.lifetimes = lifetimes }
        self.delay = delay
    }

    func issue(_ request: IssueRequest) async throws -> IssuedCredential {
        if delay > 0 { try await Task.sleep(nanoseconds: UInt64(delay * 1e9)) }
        state.withLock { $0.presented.append(request.idToken) }
        if let f = state.withLock({ $0.failure }) { throw f }
        let lifetime = state.withLock { $0.lifetimes.isEmpty ? 3600 : $0.lifetimes.removeFirst() }
        let c = IssuedCredential(profile: request.profile, provider: name, providerType: "aws",
                                 secrets: ["AccessKeyId": "ASIA\(UUID().uuidString.prefix(16))", "SecretAccessKey": UUID().uuidString, "SessionToken": UUID().uuidString],
                                 details: ["role_arn": "arn:aws:iam::123456789012:role/ci"], expiresAt: Date().addingTimeInterval(lifetime),
                                 revocationHandle: nil, delivery: DeliveryContract(), summary: "role")
        state.withLock { $0.issued.append(c.id) }
        return c
    }

    func revoke(_ c: IssuedCredential, now: Date) async throws -> RevokeOutcome {
        state.withLock { $0.revoked.append(c.id) }
        return .notRevocable(expiresAt: c.expiresAt)
    }
}

/// The credential server's broker (issue 16: it had no unit tests): one exchange for concurrent
/// requests, the ledger before serving, a credential near its end replaced and the old one revoked,
/// failures audited.
struct CredentialBrokerTests {
    final class World {
        let dir = NSTemporaryDirectory() + "airlock-broker-\(UUID().uuidString)"
        let config: AirlockConfig
        var state: String { dir + "/state/jobs/7" }
        var audit: AuditLog { AuditLog(path: dir + "/audit.jsonl") }

        /// `airlockIdentity`: the provider is shown Airlock's own token (issue 17), signed with `keyFile`.
        init(airlockIdentity: Bool = false) throws {
            try FileManager.default.createDirectory(atPath: dir + "/state/jobs/7", withIntermediateDirectories: true)
            FileManager.default.createFile(atPath: dir + "/issuer.pem", contents: Data(P256.Signing.PrivateKey().pemRepresentation.utf8),
                                           attributes: [.posixPermissions: 0o600])
            let issuer = airlockIdentity ? "[issuer]\nurl = \"https://airlock.example.com\"\nsigning_key_file = \"\(dir)/issuer.pem\"\n" : ""
            let toml = """
            [runner]
            builds_root = "\(dir)/builds"
            cache_root = "\(dir)/cache"
            state_dir = "\(dir)/state"
            audit_log = "\(dir)/audit.jsonl"
            isolation = "none"

            \(issuer)
            [providers.aws]
            type = "aws"
            sts_endpoint = "http://127.0.0.1:9"
            identity = "\(airlockIdentity ? "airlock" : "gitlab")"

            [profiles.deploy]
            provider = "aws"
            role_arn = "arn:aws:iam::123456789012:role/ci"
            deliver = "endpoint"
            """
            try Data(toml.utf8).write(to: URL(fileURLWithPath: dir + "/airlock.toml"))
            config = try AirlockConfig.load(path: dir + "/airlock.toml")
        }
        deinit { try? FileManager.default.removeItem(atPath: dir) }

        func broker(_ provider: ScriptedProvider, idToken: String = "id-token") throws -> CredentialBroker {
            let session = EndpointSession(secret: "s", idToken: idToken, providerTokens: [:],
                                          verified: VerifiedJob(claims: ["project_id": "42", "sub": "project_path:platform/api:ref_type:branch:ref:main", "runner_id": "5"]),
                                          profiles: ["deploy"], jobTimeoutSeconds: 600)
            return try CredentialBroker(config: config, state: state, session: session, identity: ["job_id": .string("7")], providers: ["aws": provider])
        }
    }

    @Test func concurrentRequestsShareOneExchangeAndTheLedgerHasItFirst() async throws {
        let w = try World()
        let provider = ScriptedProvider(lifetimes: [3600], delay: 0.2)
        let broker = try w.broker(provider)
        let ids = try await withThrowingTaskGroup(of: String.self) { g in
            for _ in 0..<10 { g.addTask { try await broker.credential("deploy").id } }
            return try await g.reduce(into: Set<String>()) { $0.insert($1) }
        }
        #expect(ids.count == 1 && provider.state.withLock { $0.issued.count } == 1)
        let ledger = try JobLedger(stateDirectory: w.state).entries()
        #expect(ledger.map(\.credential.id) == Array(ids) && ledger.first?.state == .issued)
        #expect(w.audit.records().contains { $0["event"] == .string("issued") && $0["reason"] == .string("refresh") })
    }

    @Test func aCredentialAtItsEndIsReplacedAndTheOldOneRevoked() async throws {
        let w = try World()
        // 3 s, of which the last second is stale: the second request has 2 s to come (it failed
        // once, in a loaded CI run, when the lifetime was 1.5 s and it had half a second).
        let provider = ScriptedProvider(lifetimes: [3, 3600])
        let broker = try w.broker(provider)
        let first = try await broker.credential("deploy")
        #expect(try await broker.credential("deploy").id == first.id)  // just issued: served as it is
        try await Task.sleep(nanoseconds: 2_200_000_000)  // now ≤ 0.8 s left: stale
        let second = try await broker.credential("deploy")
        #expect(second.id != first.id)
        #expect(provider.state.withLock { $0.revoked } == [first.id])
        let entries = try JobLedger(stateDirectory: w.state).entries()
        #expect(entries.first { $0.credential.id == first.id }?.state == .settled)
        #expect(entries.first { $0.credential.id == second.id }?.state == .issued)
        #expect(w.audit.records().contains { $0["event"] == .string("revoked") && $0["reason"] == .string("refreshed") && $0["credential_id"] == .string(first.id) })
    }

    /// The server's fast path (`credentialAtHand`, read without entering the actor) gives the
    /// credential the actor would serve, and nothing once it is stale: never one being replaced or
    /// revoked, never another profile's. A broker started on a ledger has the issued one at hand.
    @Test func theCredentialAtHandIsOnlyEverAFreshOne() async throws {
        let w = try World()
        let provider = ScriptedProvider(lifetimes: [3, 3600])
        let broker = try w.broker(provider)
        // Ids only in what a failure prints: a credential's description would show its values.
        #expect(broker.credentialAtHand("deploy")?.id == nil)  // nothing issued yet
        let first = try await broker.credential("deploy")
        #expect(broker.credentialAtHand("deploy")?.id == first.id)
        #expect(broker.credentialAtHand("other")?.id == nil)
        try await Task.sleep(nanoseconds: 2_200_000_000)  // ≤ 0.8 s left: stale
        #expect(broker.credentialAtHand("deploy")?.id == nil)
        let second = try await broker.credential("deploy")
        #expect(second.id != first.id && broker.credentialAtHand("deploy")?.id == second.id)
        // A new broker (the server restarted) on the same ledger: the issued one, at once.
        let again = try w.broker(provider)
        #expect(again.credentialAtHand("deploy")?.id == second.id)
    }

    @Test func aProfileNotServedIsTheJobsFaultAndAFailedExchangeIsAudited() async throws {
        let w = try World()
        let provider = ScriptedProvider(lifetimes: [])
        let broker = try w.broker(provider)
        await #expect(throws: AirlockFailure.self) { _ = try await broker.credential("other") }
        provider.state.withLock { $0.failure = FederationError(fault: .job, profile: "deploy", provider: "aws", code: "AccessDenied", message: "trust policy") }
        await #expect(throws: FederationError.self) { _ = try await broker.credential("deploy") }
        let failed = w.audit.records().first { $0["event"] == .string("federation_failed") }
        #expect(failed?["reason"] == .string("refresh") && failed?["code"] == .string("AccessDenied") && failed?["fault"] == .string("job"))
        #expect(try JobLedger(stateDirectory: w.state).entries().isEmpty)
    }

    /// Issue 17, part 4: with identity = "airlock" the server keeps no GitLab token (prepare writes
    /// none) and every exchange presents a token minted for it: its own jti, Airlock's iss, the
    /// provider's aud, GitLab's sub, and the claims as verified at prepare.
    @Test func withAirlocksIdentityEveryRefreshMintsItsOwnTokenAndNoGitLabTokenIsKept() async throws {
        let w = try World(airlockIdentity: true)
        let provider = ScriptedProvider(lifetimes: [1.5, 3600])
        let broker = try w.broker(provider, idToken: "")
        let first = try await broker.credential("deploy")
        try await Task.sleep(nanoseconds: 700_000_000)
        let second = try await broker.credential("deploy")
        #expect(second.id != first.id)
        let presented = provider.state.withLock { $0.presented }
        #expect(presented.count == 2)
        let claims = presented.map { t -> [String: Any] in
            let part = String(t.split(separator: ".")[1])
            return (Base64URL.decode(part).flatMap { try? JSONSerialization.jsonObject(with: $0) as? [String: Any] }) ?? [:]
        }
        #expect(claims.allSatisfy { $0["iss"] as? String == "https://airlock.example.com" && $0["aud"] as? String == "sts.amazonaws.com" })
        #expect(claims.allSatisfy { $0["sub"] as? String == "project_path:platform/api:ref_type:branch:ref:main" && $0["project_id"] as? String == "42" })
        #expect(claims.allSatisfy { $0["runner_id"] as? Int == 5 && $0["airlock_profile"] as? String == "deploy" })
        #expect(Set(claims.compactMap { $0["jti"] as? String }).count == 2)
        // Each credential's audit facts carry its token's jti and kid, never the token.
        let key = try IssuerKey.load(path: w.dir + "/issuer.pem")
        #expect(first.details["identity_jti"] == claims[0]["jti"] as? String && second.details["identity_jti"] == claims[1]["jti"] as? String)
        #expect(first.details["identity_kid"] == key.kid && first.details["identity_audience"] == "sts.amazonaws.com")
        let issued = w.audit.records().filter { $0["event"] == .string("issued") }
        #expect(issued.count == 2 && issued.allSatisfy { $0["identity_kid"] == .string(key.kid) && $0["identity"] == .string("airlock") })
        let auditText = (try? String(contentsOfFile: w.dir + "/audit.jsonl", encoding: .utf8)) ?? ""
        let leaked = presented.contains { auditText.contains($0) }
        #expect(!leaked)
    }

    /// With GitLab's identity and no GitLab token kept (it was dropped), a refresh fails as the
    /// system's fault, and says so; it never presents an empty token.
    @Test func withoutAKeptGitLabTokenARefreshFailsClearly() async throws {
        let w = try World()
        let provider = ScriptedProvider(lifetimes: [])
        let broker = try w.broker(provider, idToken: "")
        await #expect(throws: FederationError.self) { _ = try await broker.credential("deploy") }
        #expect(provider.state.withLock { $0.presented }.isEmpty)
        #expect(w.audit.records().contains { $0["event"] == .string("federation_failed") && $0["code"] == .string("IdentityTokenDropped") })
    }

    /// A signing key that became unusable after the config was read (here: readable by others) fails
    /// the exchanges that need it as the system's fault, audited, and presents nothing.
    @Test func anUnusableSigningKeyFailsTheExchangeAndIsAudited() async throws {
        let w = try World(airlockIdentity: true)
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: w.dir + "/issuer.pem")
        let provider = ScriptedProvider(lifetimes: [])
        let broker = try w.broker(provider, idToken: "")
        let error = await #expect(throws: FederationError.self) { _ = try await broker.credential("deploy") }
        #expect(error?.code == "IssuerKeyUnusable" && error?.fault == .system && error?.message.contains("chmod 600") == true, "\(String(describing: error))")
        #expect(provider.state.withLock { $0.presented }.isEmpty)
        #expect(w.audit.records().contains { $0["event"] == .string("federation_failed") && $0["code"] == .string("IssuerKeyUnusable") })
    }
}
