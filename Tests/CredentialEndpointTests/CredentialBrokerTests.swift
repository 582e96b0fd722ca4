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

/// A provider that issues what the test says, slowly if asked, and records revocations.
final class ScriptedProvider: CredentialProvider {
    let name = "aws"
    struct State {
        var issued: [String] = []
        var revoked: [String] = []
        var lifetimes: [Double] = []
        var failure: FederationError?
    }
    let state = Mutex(State())
    let delay: Double
    init(lifetimes: [Double], delay: Double = 0) {
        state.withLock { $0.lifetimes = lifetimes }
        self.delay = delay
    }

    func issue(_ request: IssueRequest) async throws -> IssuedCredential {
        if delay > 0 { try await Task.sleep(nanoseconds: UInt64(delay * 1e9)) }
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

        init() throws {
            try FileManager.default.createDirectory(atPath: dir + "/state/jobs/7", withIntermediateDirectories: true)
            let toml = """
            [runner]
            builds_root = "\(dir)/builds"
            cache_root = "\(dir)/cache"
            state_dir = "\(dir)/state"
            audit_log = "\(dir)/audit.jsonl"
            isolation = "none"

            [providers.aws]
            type = "aws"
            sts_endpoint = "http://127.0.0.1:9"

            [profiles.deploy]
            provider = "aws"
            role_arn = "arn:aws:iam::123456789012:role/ci"
            deliver = "endpoint"
            """
            try Data(toml.utf8).write(to: URL(fileURLWithPath: dir + "/airlock.toml"))
            config = try AirlockConfig.load(path: dir + "/airlock.toml")
        }
        deinit { try? FileManager.default.removeItem(atPath: dir) }

        func broker(_ provider: ScriptedProvider) throws -> CredentialBroker {
            let session = EndpointSession(secret: "s", idToken: "id-token", providerTokens: [:], verified: VerifiedJob(claims: ["project_id": "42"]),
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
        let provider = ScriptedProvider(lifetimes: [1.5, 3600])
        let broker = try w.broker(provider)
        let first = try await broker.credential("deploy")
        #expect(try await broker.credential("deploy").id == first.id)  // just issued: served as it is
        try await Task.sleep(nanoseconds: 700_000_000)  // now ≤ 1 s left: stale
        let second = try await broker.credential("deploy")
        #expect(second.id != first.id)
        #expect(provider.state.withLock { $0.revoked } == [first.id])
        let entries = try JobLedger(stateDirectory: w.state).entries()
        #expect(entries.first { $0.credential.id == first.id }?.state == .settled)
        #expect(entries.first { $0.credential.id == second.id }?.state == .issued)
        #expect(w.audit.records().contains { $0["event"] == .string("revoked") && $0["reason"] == .string("refreshed") && $0["credential_id"] == .string(first.id) })
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
}
