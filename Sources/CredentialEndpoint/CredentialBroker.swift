public import AirlockConfiguration
public import AirlockCore
public import Federation
import Foundation
public import Identity
import Synchronization
package import Ledger
public import RunnerContract

/// The credentials a job's server hands out, kept fresh: a credential with less than
/// `minValidity` left is replaced by federating again with the job's ID token. Concurrent requests
/// share one exchange. Each new credential is in the ledger (and so masked in the job log) before it
/// is served; the one it replaces is then revoked where the provider can.
public actor CredentialBroker: CredentialSource {
    let config: AirlockConfig
    let session: EndpointSession
    let ledger: JobLedger
    let providers: [String: any CredentialProvider]
    let identity: [String: JSONValue]
    let minValidity: Double
    let identities: ExchangeIdentity
    private var current: [String: IssuedCredential] = [:]
    private var inflight: [String: Task<IssuedCredential, any Error>] = [:]
    public private(set) var federations = 0

    public init(config: AirlockConfig, state: String, session: EndpointSession, job: JobContext, transport: any HTTPTransport) throws {
        try self.init(config: config, state: state, session: session, identity: Authorizer.identity(session.verified, job: job),
                      providers: config.credentialProviders(transport: transport))
    }

    /// With the providers given (tests: a stub provider).
    package init(config: AirlockConfig, state: String, session: EndpointSession, identity: AuditSubject,
                 providers: [String: any CredentialProvider]) throws {
        self.config = config
        self.session = session
        ledger = JobLedger(stateDirectory: state)
        self.providers = providers
        self.identity = identity
        minValidity = config.runner.endpointMinValidity
        identities = ExchangeIdentity(config: config)
        var issued: [String: IssuedCredential] = [:]
        for e in try ledger.entries() where e.state == .issued && session.profiles.contains(e.credential.profile) {
            issued[e.credential.profile] = e.credential
        }
        current = issued
        atHand.withLock { $0.credentials = issued }
    }

    /// Whether a credential should be replaced: too little validity left, unless just issued (so that
    /// a lifetime shorter than `minValidity` does not federate on every request).
    nonisolated func stale(_ c: IssuedCredential, issuedAt: Date?, now: Date) -> Bool {
        let left = c.expiresAt.timeIntervalSince(now)
        if left <= 1 { return true }
        guard left < minValidity else { return false }
        let age = issuedAt.map { now.timeIntervalSince($0) } ?? .infinity
        return age > min(60, minValidity / 4)
    }

    private var issuedAt: [String: Date] = [:]
    /// `current` and `issuedAt` as the actor last left them, for `credentialAtHand`; both change in
    /// one step.
    private nonisolated let atHand = Mutex<(credentials: [String: IssuedCredential], issuedAt: [String: Date])>(([:], [:]))

    /// The profile's credential when it is fresh, read without entering the actor: a request for a
    /// credential at hand (nearly all of them) does not wait behind a refresh or hop threads.
    public nonisolated func credentialAtHand(_ profile: String) -> IssuedCredential? {
        let now = Date()
        return atHand.withLock { a in
            guard let c = a.credentials[profile], !stale(c, issuedAt: a.issuedAt[profile], now: now) else { return nil }
            return c
        }
    }

    /// The profile's credential, fresh.
    public func credential(_ profile: String) async throws -> IssuedCredential {
        guard session.profiles.contains(profile) else {
            throw AirlockFailure(.job, "profile \(profile) is not served to this job")
        }
        if let c = current[profile], !stale(c, issuedAt: issuedAt[profile], now: Date()) { return c }
        if let t = inflight[profile] { return try await t.value }
        let old = current[profile]
        let task = Task { try await self.refresh(profile, replacing: old) }
        inflight[profile] = task
        defer { inflight[profile] = nil }
        let c = try await task.value
        let now = Date()
        current[profile] = c
        issuedAt[profile] = now
        atHand.withLock { a in
            a.credentials[profile] = c
            a.issuedAt[profile] = now
        }
        return c
    }

    private func refresh(_ profile: String, replacing old: IssuedCredential?) async throws -> IssuedCredential {
        guard let spec = config.profiles[profile], let provider = providers[spec.provider] else {
            throw AirlockFailure(.system, "profile \(profile) has no provider")
        }
        federations += 1
        let now = Date()
        let audit = AuditLog(path: config.runner.auditLog)
        var c: IssuedCredential
        var presented: MintedIdentity?
        do {
            // A new token for every exchange when the provider trusts Airlock's issuer (GitLab's is then not kept).
            let (idToken, minted) = try await identities.token(profile: profile, job: session.verified, gitlab: session.idToken,
                                                               providerTokens: session.providerTokens, now: now)
            presented = minted
            let request = IssueRequest(profile: profile, job: session.verified, idToken: idToken, jobTimeoutSeconds: session.jobTimeoutSeconds,
                                       now: now, deadline: now.addingTimeInterval(config.runner.federationTimeout))
            c = try await provider.issue(request)
            ExchangeIdentity.note(minted, in: &c)
        } catch {
            try? audit.append(FederationFailedRecord(subject: identity, failure: error, profile: profile, provider: spec.provider, reason: "refresh",
                                                     presented: ExchangeIdentity.auditFacts(presented)))
            throw error
        }
        // Ledger first: the run stage masks it from there before the job can print it.
        do {
            try ledger.record(c, at: Date())
        } catch {
            _ = try? await provider.revoke(c, now: Date())
            throw error
        }
        try? audit.append(IssuedRecord(subject: identity, credential: c, duration: Date().timeIntervalSince(now), reason: "refresh"))
        if let old {
            _ = await Revoker.revoke(old, provider: provider, ledger: ledger, audit: audit, identity: identity, reason: "refreshed", now: Date())
        }
        return c
    }

    /// Counts a refused request (wrong secret, ungranted resource, rate limit). The audit log gets
    /// one `endpoint_refused` line per reason and minute with the count, never a line per request:
    /// a flood cannot fill the disk or drown the log. `detail` names a route or resource, never a secret.
    public nonisolated func refused(_ reason: String, _ detail: String) {
        for (minute, counts) in refusals.add(reason, detail, now: Date()) { writeRefusals(minute, counts) }
    }

    /// Writes the counts not yet in the audit log (the server stops, or a minute passed).
    public nonisolated func flushRefusals() {
        for (minute, counts) in refusals.drain() { writeRefusals(minute, counts) }
    }

    private nonisolated func writeRefusals(_ minute: Date, _ counts: [String: (count: Int, detail: String)]) {
        let audit = AuditLog(path: config.runner.auditLog)
        for (reason, c) in counts.sorted(by: { $0.key < $1.key }) {
            try? audit.append(EndpointRefusedRecord(subject: identity, reason: reason, count: c.count, minute: minute, detail: c.detail))
        }
    }

    /// The profile spec (for scopes, service account...).
    public nonisolated func spec(_ profile: String) -> ProfileSpec? { config.profiles[profile] }
    public nonisolated var servedProfiles: [String] { session.profiles }
    public nonisolated var secret: String { session.secret }
    private let counter = RequestCounter()
    private let refusals = RefusalCounter()
    public nonisolated func countRequest() { counter.add() }
    public nonisolated var requestCount: Int { counter.value }
}

/// Refusals counted per reason within the current minute; a new minute hands back the last one's.
final class RefusalCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var minute: Date?
    private var counts: [String: (count: Int, detail: String)] = [:]

    func add(_ reason: String, _ detail: String, now: Date) -> [(Date, [String: (count: Int, detail: String)])] {
        let m = Date(timeIntervalSince1970: (now.timeIntervalSince1970 / 60).rounded(.down) * 60)
        return lock.withLock {
            var out: [(Date, [String: (count: Int, detail: String)])] = []
            if let cur = minute, cur != m, !counts.isEmpty { out.append((cur, counts)); counts = [:] }
            minute = m
            counts[reason] = ((counts[reason]?.count ?? 0) + 1, counts[reason]?.detail ?? detail)
            return out
        }
    }

    func drain() -> [(Date, [String: (count: Int, detail: String)])] {
        lock.withLock {
            defer { counts = [:] }
            guard let m = minute, !counts.isEmpty else { return [] }
            return [(m, counts)]
        }
    }
}

final class RequestCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var n = 0
    func add() { lock.withLock { n += 1 } }
    var value: Int { lock.withLock { n } }
}
