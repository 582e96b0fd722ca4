public import Federation
public import Foundation
public import RunnerContract

/// Revocation, shared by rollback, cleanup, sweep and the credential server's refresh: idempotent,
/// every outcome audited, every ledger entry settled.
public enum Revoker {
    /// Revokes one credential, audits the outcome and settles its ledger entry (`revokeFailed` when
    /// the provider could not be reached: cleanup or sweep tries again). Returns whether it worked and
    /// one secret-free line for the runner's log. Shared by cleanup, rollback, sweep and the
    /// credential server's refresh.
    public static func revoke(_ c: IssuedCredential, provider: any CredentialProvider, ledger: JobLedger, audit: AuditLog,
                       identity: [String: JSONValue], reason: String, now: Date) async -> (ok: Bool, line: String) {
        var f = identity
        f["profile"] = .string(c.profile)
        f["provider"] = .string(c.provider)
        f["credential_id"] = .string(c.id)
        f["fingerprint"] = .string(c.fingerprint)
        f["reason"] = .string(reason)
        do {
            let outcome = try await provider.revoke(c, now: now)
            f["outcome"] = .string(outcome.auditName)
            if case .notRevocable(let at) = outcome { f["expires_at"] = .string(ISO8601.format(at)) }
            if case .expired(let at) = outcome { f["expires_at"] = .string(ISO8601.format(at)) }
            if case .partlyRevoked(let revoked, let remains, let at) = outcome {
                f["revoked_part"] = .string(revoked)
                f["remains"] = .string(remains)
                f["expires_at"] = .string(ISO8601.format(at))
            }
            try? audit.append(event: "revoked", f)
            try? ledger.settle(c.id, state: .settled, outcome: outcome.auditName)
            let what: String
            switch outcome {
            case .revoked: what = "revoked"
            case .alreadyGone: what = "already revoked"
            case .notRevocable(let at): what = "\(c.providerType) cannot revoke it; expires \(ISO8601.format(at))"
            case .expired(let at): what = "expired at \(ISO8601.format(at))"
            case .copiesDeleted: what = "long-lived secret, not Airlock's to revoke; the job's copies are deleted"
            case .partlyRevoked(let revoked, let remains, let at): what = "\(revoked) revoked; \(remains) until it expires \(ISO8601.format(at))"
            }
            return (true, "\(c.profile) (\(c.fingerprint)): \(what)")
        } catch {
            f["outcome"] = .string("failed")
            f["detail"] = .string("\(error)")
            f["expires_at"] = .string(ISO8601.format(c.expiresAt))
            try? audit.append(event: "revoke_failed", f)
            try? ledger.settle(c.id, state: .revokeFailed, outcome: "\(error)")
            return (false, "\(c.profile) (\(c.fingerprint)): revocation failed: \(error)")
        }
    }

    /// Revokes every unsettled entry of a ledger. Returns how many could not be revoked, and one
    /// secret-free line per credential for the runner's log.
    @discardableResult
    public static func revokeAll(audit: AuditLog, ledger: JobLedger, providers: [String: any CredentialProvider],
                          identity: [String: JSONValue], reason: String, now: Date) async -> (failed: Int, lines: [String]) {
        var lines: [String] = []
        guard let entries = try? ledger.entries() else { return (1, ["the ledger is unreadable"]) }
        var failed = 0
        for e in entries where e.state != .settled {
            let c = e.credential
            guard let provider = providers[c.provider] else {
                var f = identity
                f["profile"] = .string(c.profile)
                f["provider"] = .string(c.provider)
                f["credential_id"] = .string(c.id)
                f["fingerprint"] = .string(c.fingerprint)
                f["reason"] = .string(reason)
                f["outcome"] = .string("provider_missing")
                f["expires_at"] = .string(ISO8601.format(c.expiresAt))
                try? audit.append(event: "revoke_failed", f)
                try? ledger.settle(c.id, state: .revokeFailed, outcome: "provider \(c.provider) no longer configured")
                lines.append("\(c.profile) (\(c.fingerprint)): provider \(c.provider) is no longer configured; expires \(ISO8601.format(c.expiresAt))")
                failed += 1
                continue
            }
            let (ok, line) = await revoke(c, provider: provider, ledger: ledger, audit: audit, identity: identity, reason: reason, now: now)
            lines.append(line)
            if !ok { failed += 1 }
        }
        return (failed, lines)
    }
}
