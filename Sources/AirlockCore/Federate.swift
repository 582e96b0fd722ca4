import AirlockConfiguration
import Federation
import Delivery
import Foundation
import Identity
import Ledger
import Policy
import RunnerContract

/// Grant → IssuedCredential: all of a job's grants federate concurrently under one deadline. Each
/// credential is in the ledger before anything else happens to it; if any grant fails, the ones
/// already issued are revoked and nothing is injected.
enum Federator {
    /// The providers a config defines, each knowing its profiles.
    static func providers(config: AirlockConfig, transport: any HTTPTransport) -> [String: any CredentialProvider] {
        ProviderKinds.providers(config.providers, profiles: config.profiles.mapValues { ($0.provider, $0.settings) }, transport: transport)
    }

    /// Issues every grant; returns what was issued (already in the ledger).
    /// - Throws: the first `FederationError` (after revoking what was issued), or a ledger/audit failure.
    static func federate(config: AirlockConfig, auth: Authorization, job: JobContext, ledger: JobLedger,
                         transport: any HTTPTransport, now: Date) async throws -> [IssuedCredential] {
        guard let verified = auth.verified, let token = auth.token, !auth.grants.isEmpty else { return [] }
        if let sig = Termination.received {
            throw AirlockFailure(.system, "prepare received signal \(sig) from the runner (job timeout or cancel) before federating: nothing was issued")
        }
        let providers = providers(config: config, transport: transport)
        let audit = AuditLog(path: config.runner.auditLog)
        let identity = Authorizer.identity(verified, job: job)
        let deadline = now.addingTimeInterval(config.runner.federationTimeout)
        var issued: [IssuedCredential] = []
        var durations: [String: Double] = [:]  // credential id → seconds its federation took
        var failure: (any Error)?
        await withTaskGroup(of: Result<(IssuedCredential, Double), any Error>.self) { group in
            for grant in auth.grants {
                guard let profile = config.profiles[grant.profile], let provider = providers[profile.provider] else {
                    failure = failure ?? AirlockFailure(.system, "profile \(grant.profile) has no provider")
                    continue
                }
                // A provider with its own audience gets the job's second ID token (verified at authorization).
                let idToken = auth.providerTokens[profile.provider] ?? token
                let request = IssueRequest(profile: grant.profile, job: verified, idToken: idToken.value,
                                           jobTimeoutSeconds: job.jobTimeoutSeconds, now: now, deadline: deadline)
                group.addTask {
                    do {
                        let started = Date()
                        let c = try await provider.issue(request)
                        let took = Date().timeIntervalSince(started)
                        do {
                            try ledger.record(c, at: Date())
                        } catch {
                            _ = try? await provider.revoke(c, now: Date())
                            return .failure(error)
                        }
                        return .success((c, took))
                    } catch {
                        return .failure(error)
                    }
                }
            }
            for await r in group {
                switch r {
                case .success(let (c, took)):
                    issued.append(c)
                    durations[c.id] = took
                case .failure(let e):
                    // No cancellation of the others: an exchange cancelled in flight may have issued a
                    // credential Airlock would never learn of, so could not revoke. They finish within
                    // the deadline, land in the ledger, and are rolled back below.
                    if failure == nil { failure = e }
                }
            }
        }
        // Cancelled while exchanging: what was issued is in the ledger; roll it all back.
        // The cancel is the cause whatever else failed after it (a provider refused no more retries).
        if let sig = Termination.received {
            failure = AirlockFailure(.system, "prepare received signal \(sig) from the runner (job timeout or cancel) while federating: everything issued is revoked")
        }
        if failure == nil { failure = Self.unmaskable(issued, config: config) }
        for c in issued {
            var f = identity
            f.merge(issuedFields(c)) { $1 }
            if let took = durations[c.id] { f["duration_ms"] = .string(String(Int((took * 1000).rounded()))) }
            try audit.append(event: "issued", f)
        }
        if let failure {
            var f = identity
            f["profiles"] = .array(auth.grants.map { .string($0.profile) })
            if let fe = failure as? FederationError {
                f["profile"] = .string(fe.profile)
                f["provider"] = .string(fe.provider)
                f["code"] = .string(fe.code)
                f["fault"] = .string(fe.fault.rawValue)
            }
            f["detail"] = .string("\(failure)")
            try audit.append(event: "federation_failed", f)
            // Nothing reaches the job: take back what was issued.
            await Revoker.revokeAll(config: config, ledger: ledger, providers: providers, identity: identity,
                                    reason: "rollback", now: Date())
            throw failure
        }
        return issued
    }

    /// Issue 13: a value shorter than the masker's minimum (8 bytes) cannot be masked in the job log.
    /// Airlock hands out none that it issued (the failure rolls everything back); a long-lived value
    /// it does not own (a Vault KV field, a Key Vault secret) goes out only as a file, and the job
    /// log says so. Returns the failure, or nil.
    static func unmaskable(_ issued: [IssuedCredential], config: AirlockConfig) -> AirlockFailure? {
        for c in issued.sorted(by: { $0.profile < $1.profile }) {
            // What reaches the job: the secrets its delivery contract names.
            let delivered = c.delivery.secrets.map { ($0.variables.first ?? $0.key, c.secrets[$0.key] ?? "") }
            let short = Set(delivered.filter { !$0.1.isEmpty && !MaskPatterns.isMaskable($0.1) }.map(\.0)).sorted()
            guard !short.isEmpty else { continue }
            let longLived = c.delivery.copiedValues
            let names = short.joined(separator: ", ")
            if longLived && config.profiles[c.profile]?.deliver == .file {
                print("Airlock: profile \(c.profile): \(names) shorter than \(MaskPatterns.minimumLength) bytes, too short to mask in this log: delivered only as a file; a script that prints it shows it")
                continue
            }
            return AirlockFailure(.system, "profile \(c.profile) (provider \(c.provider)): \(names) shorter than \(MaskPatterns.minimumLength) bytes, too short to mask in the job log, so Airlock does not hand it out; "
                + (longLived ? "deliver the profile with deliver = \"file\" (it then never enters the environment), or make the secret longer" : "the provider issued an unusually short value: check the provider's configuration"))
        }
        return nil
    }

    static func issuedFields(_ c: IssuedCredential) -> [String: JSONValue] {
        var f: [String: JSONValue] = ["profile": .string(c.profile), "provider": .string(c.provider),
                                      "provider_type": .string(c.providerType), "credential_id": .string(c.id),
                                      "expires_at": .string(ISO8601.format(c.expiresAt)), "fingerprint": .string(c.fingerprint)]
        for (k, v) in c.details { f[k] = .string(v) }
        return f
    }
}

/// Revocation, shared by rollback, cleanup and sweep: idempotent, every outcome audited.
enum Revoker {
    /// Revokes a job's ledger and, when nothing is left unrevoked, removes its state, HOME and secrets.
    /// Returns how many credentials could not be revoked (their ledger is kept for sweep).
    static func settleJob(config: AirlockConfig, job: JobContext, paths: JobPaths?, state: String, reason: String,
                          transport: any HTTPTransport, report: (String) -> Void = { _ in }) async -> Int {
        // The job's credential server first, so that it federates nothing more.
        if let info = EndpointServerInfo.load(state: state), let uid = paths?.uid {
            NetworkGuard.removeEndpoint(config.runner, port: info.port, uid: uid)
        }
        EndpointProcess.stop(state: state)
        let ledger = JobLedger(stateDirectory: state)
        let (failed, lines) = await revokeAll(config: config, ledger: ledger,
                                     providers: Federator.providers(config: config, transport: transport),
                                     identity: Audit.identity(job), reason: reason, now: Date())
        lines.forEach(report)
        try? Files.removeTree("\(config.runner.secretsRoot)/\(job.jobID)")
        if let paths {
            try? Files.removeTree(paths.home)
            if let uid = paths.uid {
                // The uid's next job may be another project's: its directories are root's until then.
                Ownership.takeBack(paths.buildsDir)
                Ownership.takeBack(paths.cacheDir)
                JobSlots.release(runner: config.runner, jobID: job.jobID, uid: uid)
            } else {
                try? Files.removeTree(paths.buildsDir)
                try? Files.removeTree(paths.cacheDir)
            }
        }
        if failed == 0 { try? JobStateStore(root: config.runner.stateDir).remove(jobID: job.jobID) }
        return failed
    }

    /// Revokes one credential, audits the outcome and settles its ledger entry (`revokeFailed` when
    /// the provider could not be reached: cleanup or sweep tries again). Returns whether it worked and
    /// one secret-free line for the runner's log. Shared by cleanup, rollback, sweep and the
    /// credential server's refresh.
    static func revoke(_ c: IssuedCredential, provider: any CredentialProvider, ledger: JobLedger, audit: AuditLog,
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
    static func revokeAll(config: AirlockConfig, ledger: JobLedger, providers: [String: any CredentialProvider],
                          identity: [String: JSONValue], reason: String, now: Date) async -> (failed: Int, lines: [String]) {
        var lines: [String] = []
        let audit = AuditLog(path: config.runner.auditLog)
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
