package import AirlockConfiguration
package import Federation
package import Foundation
package import Identity
import Policy
import RunnerContract

/// Which token each exchange presents (issue 17): GitLab's ID token as the job brought it, or, for
/// a provider with `identity = "airlock"`, a token minted for that exchange alone, signed with the
/// `[issuer]` key. Prepare and the credential server (every refresh) both choose here.
package struct ExchangeIdentity: Sendable {
    let config: AirlockConfig
    /// The minter, or why the signing key cannot be used; nil when no provider presents Airlock's identity.
    let minter: Result<IdentityMinter, IssuerKey.Problem>?

    /// Loads the signing key when a provider presents Airlock's identity. A key that cannot be used
    /// fails only the exchanges that need it (the system's fault, audited), not every job.
    package init(config: AirlockConfig) {
        self.config = config
        guard let issuer = config.issuer, config.providers.values.contains(where: \.identity.isAirlock) else {
            minter = nil
            return
        }
        minter = Result { () throws(IssuerKey.Problem) in
            IdentityMinter(issuer: issuer.url, key: try IssuerKey.load(path: issuer.signingKeyFile), lifetime: issuer.tokenLifetime,
                           runnerHost: ProcessInfo.processInfo.hostName)
        }
    }

    /// The token `profile`'s exchange presents and, when Airlock minted it, what it minted.
    /// `gitlab`: the job's GitLab ID token (nil once dropped); `providerTokens`: second ID tokens by provider.
    /// - Throws: `FederationError` (the job's fault when the `subject` template names a claim the job lacks).
    package func token(profile name: String, job: VerifiedJob, gitlab: String?, providerTokens: [String: String],
                       now: Date) async throws -> (token: String, minted: MintedIdentity?) {
        guard let profile = config.profiles[name], let spec = config.providers[profile.provider] else {
            throw FederationError(fault: .system, profile: name, provider: "?", code: "ProfileMissing", message: "profile \(name) has no provider")
        }
        guard case .airlock(_, let subjectTemplate) = spec.identity, profile.settings.presentsJobIdentity else {
            guard let token = providerTokens[spec.name] ?? gitlab, !token.isEmpty else {
                throw FederationError(fault: .system, profile: name, provider: spec.name, code: "IdentityTokenDropped",
                                      message: "the job's GitLab ID token is no longer kept for this job; its credentials cannot be renewed")
            }
            return (token, nil)
        }
        guard let loaded = minter, let audience = spec.airlockAudience(for: profile.settings) else {
            throw FederationError(fault: .system, profile: name, provider: spec.name, code: "IssuerMissing",
                                  message: "identity = \"airlock\" needs [issuer] and an audience")
        }
        let minter: IdentityMinter
        switch loaded {
        case .success(let m): minter = m
        case .failure(let problem):
            throw FederationError(fault: .system, profile: name, provider: spec.name, code: "IssuerKeyUnusable",
                                  message: "[issuer] signing_key_file: \(problem.description); nothing is issued for providers with identity = \"airlock\"")
        }
        if let why = spec.refusesSignatures(minter.key.algorithm.rawValue) {
            throw FederationError(fault: .system, profile: name, provider: spec.name, code: "IssuerKeyAlgorithm", message: why)
        }
        let subject: String
        do {
            subject = try Template.render(subjectTemplate, claims: job, escaping: .none)
        } catch {
            throw FederationError(fault: .job, profile: name, provider: spec.name, code: "TemplateClaimMissing",
                                  message: "[providers.\(spec.name)] subject: \(error)")
        }
        do {
            let minted = try await minter.mint(job: job, audience: audience, subject: subject, profile: name, now: now)
            return (minted.token, minted)
        } catch {
            throw FederationError(fault: .system, profile: name, provider: spec.name, code: "IssuerSigningFailed",
                                  message: "cannot sign Airlock's token with \(minter.key.path): \(type(of: error))")
        }
    }

    /// Records what was minted in the credential's audit facts (never the token).
    package static func note(_ minted: MintedIdentity?, in c: inout IssuedCredential) {
        for (k, v) in auditFacts(minted) { c.details[k] = v }
    }

    /// What identifies a minted token in the audit log: its jti, kid, audience and subject.
    package static func auditFacts(_ minted: MintedIdentity?) -> [String: String] {
        guard let minted else { return [:] }
        return ["identity": "airlock", "identity_jti": minted.jti, "identity_kid": minted.kid,
                "identity_audience": minted.audience, "identity_subject": minted.subject]
    }
}

/// The tokens minted during one prepare, by profile: a failed exchange's record names the token it presented.
final class PresentedTokens: @unchecked Sendable {
    private let lock = NSLock()
    private var minted: [String: MintedIdentity] = [:]
    func add(_ m: MintedIdentity?, profile: String) { if let m { lock.withLock { minted[profile] = m } } }
    func facts(for failure: any Error) -> [String: String] {
        guard let fe = failure as? FederationError else { return [:] }
        return ExchangeIdentity.auditFacts(lock.withLock { minted[fe.profile] })
    }
}
