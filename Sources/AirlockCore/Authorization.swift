import Federation
public import AirlockConfiguration
public import Foundation
public import Identity
import Ledger
public import Policy
public import RunnerContract

/// What prepare decided about a job: who it is (if it proved it) and what it is granted.
public struct Authorization: Sendable {
    public var verified: VerifiedJob?
    public var decision: Decision?
    public var grants: [Grant]
    /// The raw ID token, kept only in memory (and later the 0600 state) for federation.
    public var token: Secret?
    /// Provider name → the job's ID token with that provider's audience (`token_variable`), verified.
    public var providerTokens: [String: Secret] = [:]
}

/// A secret string whose description is redacted; unwrap it only where it is sent or injected.
public struct Secret: Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    public let value: String
    public init(_ value: String) { self.value = value }
    public var description: String { "[secret \(Fingerprint.of(value))]" }
    public var debugDescription: String { description }
}

/// Identity → Policy: verifies the job's ID token and decides its grants, writing one audit record
/// for the decision whatever it is.
public enum Authorizer {
    /// The job's ID token, when the configuration reads one and the job declares it: the only way a
    /// prepare comes to verify anything (and so to use the network).
    static func presentedToken(config: AirlockConfig, env: RunnerEnvironment) -> String? {
        guard let gitlab = config.gitlab, let token = env.jobVariables[gitlab.tokenVariable], !token.isEmpty else { return nil }
        return token
    }

    /// The decision for a job that presents no ID token (or a configuration without `[gitlab]`),
    /// audited; nil when the job presents one, which only `authorize` verifies. Synchronous: the
    /// stage that prepares such a job starts no concurrency runtime.
    /// - Throws: `AirlockFailure` (the job's) when `require_token` is set; (system) when the audit log
    ///   cannot be written.
    static func authorizeWithoutToken(config: AirlockConfig, env: RunnerEnvironment, job: JobContext, now: Date) throws(AirlockFailure) -> Authorization? {
        let audit = AuditLog(path: config.runner.auditLog)
        let base = Audit.identity(job)
        guard let gitlab = config.gitlab else {
            try audit.append(DecisionRecord(subject: base, decision: .noPolicy, profiles: []), now: now)
            return Authorization(verified: nil, decision: nil, grants: [], token: nil)
        }
        guard presentedToken(config: config, env: env) == nil else { return nil }
        if gitlab.requireToken {
            try audit.append(DecisionRecord(subject: base, decision: .denied, reason: "no_token"), now: now)
            throw AirlockFailure(.job, """
            this runner requires a GitLab ID token and the job declares none. Add to the job:
              id_tokens:
                \(gitlab.tokenVariable):
                  aud: \(gitlab.audience)
            """)
        }
        try audit.append(DecisionRecord(subject: base, decision: .noToken, profiles: []), now: now)
        return Authorization(verified: nil, decision: nil, grants: [], token: nil)
    }

    /// - Throws: `TokenRejection` and policy refusals (job's fault) or `KeySetUnavailable` (system).
    public static func authorize(config: AirlockConfig, env: RunnerEnvironment, job: JobContext, now: Date,
                                 transport: any HTTPTransport, warn: @escaping @Sendable (String) -> Void) async throws -> Authorization {
        if let without = try authorizeWithoutToken(config: config, env: env, job: job, now: now) { return without }
        let audit = AuditLog(path: config.runner.auditLog)
        let base = Audit.identity(job)
        guard let gitlab = config.gitlab, let token = presentedToken(config: config, env: env) else {
            throw AirlockFailure(.system, "internal: no ID token to verify")
        }
        let store = config.jwksStore(gitlab, transport: transport, warn: warn)
        let verified: VerifiedJob
        do {
            verified = try await TokenVerifier(settings: gitlab, keys: store).verify(token, now: now)
            // The token must be this job's own: another job's token (leaked, replayed) proves nothing here.
            // Job and project come from the runner's payload, which the job cannot set. For a fork's
            // merge request `project_id` is the source project; `job_project_id` (GitLab 18.4) is the
            // project that runs the job.
            if verified["job_id"] != job.jobID || tokenProject(verified) != job.projectID {
                throw TokenRejection(.wrongJob, "the token belongs to job \(verified["job_id"] ?? "?") of project \(tokenProject(verified) ?? "?"), not to this job \(job.jobID) of project \(job.projectID) (as the runner's payload says)")
            }
        } catch let r as TokenRejection {
            try audit.append(DecisionRecord(subject: base, decision: .denied, reason: "token_\(r.check.rawValue)", detail: r.detail,
                                            tokenFingerprint: Fingerprint.of(token)), now: now)
            throw r
        } catch let e as KeySetUnavailable {
            try audit.append(DecisionRecord(subject: base, decision: .error, reason: "jwks_unavailable", detail: e.message), now: now)
            throw e
        }
        let decision = config.policy.evaluate(verified)
        let requested = (env.jobVariables["AIRLOCK_PROFILES"] ?? "").split(separator: ",")
            .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        var record = DecisionRecord(subject: identity(verified, job: job), decision: .granted, rules: decision.matchedRules,
                                    requestedProfiles: requested.isEmpty ? nil : requested)
        record.policyProblems = config.policyProblems.map(\.description)
        var grants = decision.grants
        if !requested.isEmpty {
            do {
                grants = try config.policy.narrow(decision, to: requested)
            } catch {
                record.decision = .denied
                record.reason = "profile_not_granted"
                record.detail = error.message
                try audit.append(record, now: now)
                throw error
            }
        }
        var providerTokens: [String: Secret] = [:]
        do {
            providerTokens = try await audienceTokens(config: config, gitlab: gitlab, env: env, job: job, primary: verified,
                                                      grants: grants, store: store, now: now)
        } catch let e as any BlamedError {
            record.decision = e.fault == .job ? .denied : .error
            record.reason = "provider_token"
            record.detail = "\(e)"
            try audit.append(record, now: now)
            throw e
        }
        record.decision = grants.isEmpty ? .noGrant : .granted
        record.profiles = grants.map(\.profile)
        try audit.append(record, now: now)
        return Authorization(verified: verified, decision: decision, grants: grants, token: Secret(token), providerTokens: providerTokens)
    }

    /// The second ID tokens the granted profiles' providers need (Entra wants its own audience):
    /// each verified as strictly as the first, and it must be the same job's with the same subject.
    static func audienceTokens(config: AirlockConfig, gitlab: IssuerSettings, env: RunnerEnvironment, job: JobContext, primary: VerifiedJob,
                               grants: [Grant], store: JWKSStore, now: Date) async throws -> [String: Secret] {
        var out: [String: Secret] = [:]
        let providers = Set(grants.compactMap { config.profiles[$0.profile]?.provider })
        for name in providers.sorted() {
            guard let wanted = config.providers[name]?.audienceToken else { continue }
            let profiles = grants.map(\.profile).filter { config.profiles[$0]?.provider == name }
            guard let token = env.jobVariables[wanted.variable], !token.isEmpty else {
                throw AirlockFailure(.job, """
                profile \(profiles.joined(separator: ", ")) (provider \(name)) needs a second ID token with the provider's audience, and the job declares none. Add to the job:
                  id_tokens:
                    \(gitlab.tokenVariable):
                      aud: \(gitlab.audience)
                    \(wanted.variable):
                      aud: \(wanted.audience)
                """)
            }
            var settings = gitlab
            settings.audience = wanted.audience
            let v: VerifiedJob
            do {
                v = try await TokenVerifier(settings: settings, keys: store).verify(token, now: now)
            } catch let r as TokenRejection {
                throw TokenRejection(r.check, "\(wanted.variable) (the ID token for provider \(name)): \(r.detail)")
            }
            guard v["job_id"] == job.jobID, tokenProject(v) == job.projectID, v["sub"] == primary["sub"] else {
                throw TokenRejection(.wrongJob, "\(wanted.variable) belongs to job \(v["job_id"] ?? "?") (sub \(v["sub"] ?? "?")), not to this job \(job.jobID) (sub \(primary["sub"] ?? "?"))")
            }
            out[name] = Secret(token)
        }
        return out
    }

    /// The project that runs the job, as the token says.
    static func tokenProject(_ v: VerifiedJob) -> String? { v["job_project_id"] ?? v["project_id"] }

    /// The job identity an audit record carries, from verified claims; never the token.
    package static func identity(_ v: VerifiedJob, job: JobContext) -> [String: JSONValue] {
        var f = Audit.identity(job)
        for claim in ["job_id", "pipeline_id", "project_id", "project_path", "namespace_id", "ref", "ref_type", "ref_protected",
                      "environment", "environment_protected", "pipeline_source", "user_login", "sha", "runner_id", "jti", "sub"] {
            if let value = v[claim] { f[claim == "jti" ? "token_jti" : claim] = .string(value) }
        }
        return f
    }
}
