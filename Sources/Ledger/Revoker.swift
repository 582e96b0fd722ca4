public import Federation
public import Foundation
import RunnerContract

/// Revocation, shared by rollback, cleanup, sweep and the credential server's refresh: idempotent,
/// every outcome audited, every ledger entry settled.
public enum Revoker {
    /// Revokes one credential, audits the outcome and settles its ledger entry (`revokeFailed` when
    /// the provider could not be reached: cleanup or sweep tries again). Returns whether it worked and
    /// one secret-free line for the runner's log. Shared by cleanup, rollback, sweep and the
    /// credential server's refresh.
    public static func revoke(_ c: IssuedCredential, provider: any CredentialProvider, ledger: JobLedger, audit: AuditLog,
                       identity: AuditSubject, reason: String, now: Date) async -> (ok: Bool, line: String) {
        do {
            let outcome = try await provider.revoke(c, now: now)
            try? audit.append(RevocationRecord(subject: identity, credential: c, reason: reason, result: .outcome(outcome)))
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
            try? audit.append(RevocationRecord(subject: identity, credential: c, reason: reason, result: .failed(detail: "\(error)")))
            try? ledger.settle(c.id, state: .revokeFailed, outcome: "\(error)")
            return (false, "\(c.profile) (\(c.fingerprint)): revocation failed: \(error)")
        }
    }

    /// Revokes every unsettled entry of a ledger. Returns how many could not be revoked, and one
    /// secret-free line per credential for the runner's log.
    @discardableResult
    public static func revokeAll(audit: AuditLog, ledger: JobLedger, providers: [String: any CredentialProvider],
                          identity: AuditSubject, reason: String, now: Date) async -> (failed: Int, lines: [String]) {
        var lines: [String] = []
        guard let entries = try? ledger.entries() else { return (1, ["the ledger is unreadable"]) }
        var failed = 0
        for e in entries where e.state != .settled {
            let c = e.credential
            guard let provider = providers[c.provider] else {
                try? audit.append(RevocationRecord(subject: identity, credential: c, reason: reason, result: .providerMissing))
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
