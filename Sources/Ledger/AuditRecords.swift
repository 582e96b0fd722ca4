public import Federation
public import Foundation
public import RunnerContract

/// One record of the audit trail. Each event is a type here, so what it carries is declared once;
/// `AuditLog.append(_:)` adds `time`, `event` and `fingerprint_key`. Records carry fingerprints,
/// never a secret.
public protocol AuditRecord: Sendable {
    var event: String { get }
    /// The record's fields: who it is about (`subject`) and what happened.
    var fields: [String: JSONValue] { get }
}

/// Who a record is about: the job as the runner's payload says (`job_id`, `project_id`, ...) and,
/// once its token is verified, the token's claims.
public typealias AuditSubject = [String: JSONValue]

extension AuditLog {
    /// Appends one record.
    /// - Throws: `AirlockFailure` (system) when the log cannot be written.
    public func append(_ record: some AuditRecord, now: Date = Date()) throws(AirlockFailure) {
        try append(event: record.event, record.fields, now: now)
    }
}

/// The policy's decision for a job (prepare), whatever it is.
public struct DecisionRecord: AuditRecord {
    public enum Decision: String, Sendable {
        case granted, denied, error
        case noGrant = "no_grant", noPolicy = "no_policy", noToken = "no_token"
    }
    public var subject: AuditSubject
    public var decision: Decision
    public var reason: String?
    public var detail: String?
    /// The rules that matched, the profiles granted, the ones the job asked for (AIRLOCK_PROFILES).
    public var rules: [String]?
    public var profiles: [String]?
    public var requestedProfiles: [String]?
    /// A rejected token's fingerprint (never the token).
    public var tokenFingerprint: String?
    /// Team policy files left out (issue 18): why a team's rules could not grant this job anything.
    public var policyProblems: [String] = []

    public init(subject: AuditSubject, decision: Decision, reason: String? = nil, detail: String? = nil, rules: [String]? = nil,
                profiles: [String]? = nil, requestedProfiles: [String]? = nil, tokenFingerprint: String? = nil) {
        self.subject = subject
        self.decision = decision
        self.reason = reason
        self.detail = detail
        self.rules = rules
        self.profiles = profiles
        self.requestedProfiles = requestedProfiles
        self.tokenFingerprint = tokenFingerprint
    }

    public var event: String { "decision" }
    public var fields: [String: JSONValue] {
        var f = subject
        f["decision"] = .string(decision.rawValue)
        f["reason"] = reason.map(JSONValue.string)
        f["detail"] = detail.map(JSONValue.string)
        f["rules"] = rules.map { .array($0.map(JSONValue.string)) }
        f["profiles"] = profiles.map { .array($0.map(JSONValue.string)) }
        f["requested_profiles"] = requestedProfiles.map { .array($0.map(JSONValue.string)) }
        f["token_fingerprint"] = tokenFingerprint.map(JSONValue.string)
        if !policyProblems.isEmpty { f["policy_problems"] = .array(policyProblems.map(JSONValue.string)) }
        return f
    }
}

/// A credential issued: at prepare, or by the credential server's refresh (`reason` "refresh").
public struct IssuedRecord: AuditRecord {
    public var subject: AuditSubject
    public var credential: IssuedCredential
    /// How long its federation took.
    public var duration: TimeInterval?
    public var reason: String?

    public init(subject: AuditSubject, credential: IssuedCredential, duration: TimeInterval? = nil, reason: String? = nil) {
        self.subject = subject
        self.credential = credential
        self.duration = duration
        self.reason = reason
    }

    public var event: String { "issued" }
    public var fields: [String: JSONValue] {
        var f = subject
        let c = credential
        f["profile"] = .string(c.profile)
        f["provider"] = .string(c.provider)
        f["provider_type"] = .string(c.providerType)
        f["credential_id"] = .string(c.id)
        f["expires_at"] = .string(ISO8601.format(c.expiresAt))
        f["fingerprint"] = .string(c.fingerprint)
        // The provider's public facts: role, session name, accessor, scope...
        for (k, v) in c.details { f[k] = .string(v) }
        f["duration_ms"] = duration.map { .string(String(Int(($0 * 1000).rounded()))) }
        f["reason"] = reason.map(JSONValue.string)
        return f
    }
}

/// Federation failed: nothing reaches the job (prepare rolls back what was issued).
public struct FederationFailedRecord: AuditRecord {
    public var subject: AuditSubject
    public var failure: any Error
    /// Every profile the job was granted (prepare), or the one being refreshed.
    public var profiles: [String]?
    public var profile: String?
    public var provider: String?
    public var reason: String?
    /// What identifies the token Airlock minted for the failed exchange (`identity_jti`, ...), never the token.
    public var presented: [String: String]

    public init(subject: AuditSubject, failure: any Error, profiles: [String]? = nil, profile: String? = nil,
                provider: String? = nil, reason: String? = nil, presented: [String: String] = [:]) {
        self.subject = subject
        self.failure = failure
        self.profiles = profiles
        self.profile = profile
        self.provider = provider
        self.reason = reason
        self.presented = presented
    }

    public var event: String { "federation_failed" }
    public var fields: [String: JSONValue] {
        var f = subject
        f["profiles"] = profiles.map { .array($0.map(JSONValue.string)) }
        f["profile"] = profile.map(JSONValue.string)
        f["provider"] = provider.map(JSONValue.string)
        f["reason"] = reason.map(JSONValue.string)
        if let fe = failure as? FederationError {
            f["profile"] = .string(fe.profile)
            f["provider"] = .string(fe.provider)
            f["code"] = .string(fe.code)
            f["fault"] = .string(fe.fault.rawValue)
        }
        f["detail"] = .string("\(failure)")
        for (k, v) in presented { f[k] = .string(v) }
        return f
    }
}

/// What revocation did with one credential (cleanup, rollback, sweep, refresh).
public struct RevocationRecord: AuditRecord {
    public enum Result: Sendable {
        case outcome(RevokeOutcome)
        /// The provider could not be reached or refused: cleanup or sweep tries again.
        case failed(detail: String)
        /// The credential's provider is no longer in the configuration.
        case providerMissing
    }
    public var subject: AuditSubject
    public var credential: IssuedCredential
    public var reason: String
    public var result: Result

    public init(subject: AuditSubject, credential: IssuedCredential, reason: String, result: Result) {
        self.subject = subject
        self.credential = credential
        self.reason = reason
        self.result = result
    }

    public var event: String {
        if case .outcome = result { "revoked" } else { "revoke_failed" }
    }

    public var fields: [String: JSONValue] {
        var f = subject
        let c = credential
        f["profile"] = .string(c.profile)
        f["provider"] = .string(c.provider)
        f["credential_id"] = .string(c.id)
        f["fingerprint"] = .string(c.fingerprint)
        f["reason"] = .string(reason)
        switch result {
        case .outcome(let o):
            f["outcome"] = .string(o.auditName)
            switch o {
            case .notRevocable(let at), .expired(let at): f["expires_at"] = .string(ISO8601.format(at))
            case .partlyRevoked(let revoked, let remains, let at):
                f["revoked_part"] = .string(revoked)
                f["remains"] = .string(remains)
                f["expires_at"] = .string(ISO8601.format(at))
            case .revoked, .alreadyGone, .copiesDeleted: break
            }
        case .failed(let detail):
            f["outcome"] = .string("failed")
            f["detail"] = .string(detail)
            f["expires_at"] = .string(ISO8601.format(c.expiresAt))
        case .providerMissing:
            f["outcome"] = .string("provider_missing")
            f["expires_at"] = .string(ISO8601.format(c.expiresAt))
        }
        return f
    }
}

/// A prepare that failed before the policy decided (the decision, federation and rollback write their own).
public struct PrepareFailedRecord: AuditRecord {
    public var subject: AuditSubject
    public var detail: String
    public init(subject: AuditSubject, detail: String) {
        self.subject = subject
        self.detail = detail
    }
    public var event: String { "prepare_failed" }
    public var fields: [String: JSONValue] { subject.merging(["detail": .string(detail)]) { $1 } }
}

/// The end of a job's cleanup: its state `removed`, `kept_for_sweep` or `already-clean`.
public struct CleanupRecord: AuditRecord {
    public var subject: AuditSubject
    public var state: String
    public init(subject: AuditSubject, state: String) {
        self.subject = subject
        self.state = state
    }
    public var event: String { "cleanup" }
    public var fields: [String: JSONValue] { subject.merging(["state": .string(state)]) { $1 } }
}

/// A job that never got its cleanup, settled by `airlock sweep`: `settled` or `revoke_failed`.
public struct SweptRecord: AuditRecord {
    public var subject: AuditSubject
    public var outcome: String
    public init(subject: AuditSubject, outcome: String) {
        self.subject = subject
        self.outcome = outcome
    }
    public var event: String { "swept" }
    public var fields: [String: JSONValue] { subject.merging(["outcome": .string(outcome)]) { $1 } }
}

/// Requests the credential server refused for one reason within one minute (never a line per request).
public struct EndpointRefusedRecord: AuditRecord {
    public var subject: AuditSubject
    public var reason: String
    public var count: Int
    public var minute: Date
    /// The route or resource asked for, never a secret.
    public var detail: String
    public init(subject: AuditSubject, reason: String, count: Int, minute: Date, detail: String) {
        self.subject = subject
        self.reason = reason
        self.count = count
        self.minute = minute
        self.detail = detail
    }
    public var event: String { "endpoint_refused" }
    public var fields: [String: JSONValue] {
        subject.merging(["reason": .string(reason), "count": .int(count), "minute": .string(ISO8601.format(minute)), "detail": .string(detail)]) { $1 }
    }
}

/// The credential server stopped: what it served and its peak memory.
public struct EndpointStoppedRecord: AuditRecord {
    public var jobID: String
    public var projectID: String
    public var requests: Int
    public var peakRSSKiB: String
    public init(jobID: String, projectID: String, requests: Int, peakRSSKiB: String) {
        self.jobID = jobID
        self.projectID = projectID
        self.requests = requests
        self.peakRSSKiB = peakRSSKiB
    }
    public var event: String { "endpoint_stopped" }
    public var fields: [String: JSONValue] {
        ["job_id": .string(jobID), "project_id": .string(projectID), "requests": .string(String(requests)), "peak_rss_kib": .string(peakRSSKiB)]
    }
}
