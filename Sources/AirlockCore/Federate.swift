package import JobIsolation
package import AirlockConfiguration
import Federation
import Delivery
import Foundation
package import Identity
import Ledger
import Policy
package import RunnerContract

/// Grant → IssuedCredential: all of a job's grants federate concurrently under one deadline. Each
/// credential is in the ledger before anything else happens to it; if any grant fails, the ones
/// already issued are revoked and nothing is injected.
package enum Federator {
    /// Issues every grant; returns what was issued (already in the ledger).
    /// - Throws: the first `FederationError` (after revoking what was issued), or a ledger/audit failure.
    static func federate(config: AirlockConfig, auth: Authorization, job: JobContext, ledger: JobLedger,
                         transport: any HTTPTransport, now: Date) async throws -> [IssuedCredential] {
        guard let verified = auth.verified, let token = auth.token, !auth.grants.isEmpty else { return [] }
        if let sig = Termination.received {
            throw AirlockFailure(.system, "prepare received signal \(sig) from the runner (job timeout or cancel) before federating: nothing was issued")
        }
        let providers = config.credentialProviders(transport: transport)
        let identities = ExchangeIdentity(config: config)
        let presented = PresentedTokens()
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
                let providerTokens = auth.providerTokens.mapValues(\.value)
                group.addTask {
                    do {
                        let started = Date()
                        // GitLab's token (a provider with its own audience gets the job's second ID token,
                        // verified at authorization), or one Airlock mints for this exchange.
                        let (idToken, minted) = try await identities.token(profile: grant.profile, job: verified, gitlab: token.value,
                                                                           providerTokens: providerTokens, now: Date())
                        presented.add(minted, profile: grant.profile)
                        let request = IssueRequest(profile: grant.profile, job: verified, idToken: idToken,
                                                   jobTimeoutSeconds: job.jobTimeoutSeconds, now: now, deadline: deadline)
                        var c = try await provider.issue(request)
                        ExchangeIdentity.note(minted, in: &c)
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
            try audit.append(IssuedRecord(subject: identity, credential: c, duration: durations[c.id]))
        }
        if let failure {
            try audit.append(FederationFailedRecord(subject: identity, failure: failure, profiles: auth.grants.map(\.profile),
                                                    presented: presented.facts(for: failure)))
            // Nothing reaches the job: take back what was issued.
            await Revoker.revokeAll(audit: audit, ledger: ledger, providers: providers, identity: identity,
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

}

/// A job's end, shared by cleanup and sweep: its server stopped, its ledger revoked, its files removed.
extension Revoker {
    /// Revokes a job's ledger and, when nothing is left unrevoked, removes its state, HOME and secrets.
    /// Returns how many credentials could not be revoked (their ledger is kept for sweep).
    package static func settleJob(config: AirlockConfig, job: JobContext, paths: JobPaths?, state: String, reason: String,
                          transport: any HTTPTransport, report: (String) -> Void = { _ in }) async -> Int {
        stopServer(runner: config.runner, paths: paths, state: state)
        let ledger = JobLedger(stateDirectory: state)
        let (failed, lines) = await revokeAll(audit: AuditLog(path: config.runner.auditLog), ledger: ledger,
                                     providers: config.credentialProviders(transport: transport),
                                     identity: Audit.identity(job), reason: reason, now: Date())
        lines.forEach(report)
        return release(runner: config.runner, job: job, paths: paths, failed: failed)
    }

    /// `settleJob` for a job whose ledger holds nothing to revoke (cleanup without the network, on the
    /// main thread: no concurrency runtime to start). Returns nil, having removed nothing, when the
    /// ledger holds something unsettled after all (its credential server issued it since the stage
    /// looked): `settleJob` then settles and audits it.
    package static func settleJobWithoutRevoking(runner: RunnerSettings, job: JobContext, paths: JobPaths?, state: String) -> Int? {
        stopServer(runner: runner, paths: paths, state: state)
        if JobLedger(stateDirectory: state).needsSettling { return nil }
        return release(runner: runner, job: job, paths: paths, failed: 0)
    }

    /// The job's credential server first, so that it federates nothing more.
    private static func stopServer(runner: RunnerSettings, paths: JobPaths?, state: String) {
        if let info = EndpointServerInfo.load(state: state), let uid = paths?.uid {
            NetworkGuard.removeEndpoint(runner, port: info.port, uid: uid)
        }
        EndpointProcess.stop(state: state)
    }

    /// The job's files, directories and uid back; its state too when every credential was revoked.
    private static func release(runner: RunnerSettings, job: JobContext, paths: JobPaths?, failed: Int) -> Int {
        try? Files.removeTree("\(runner.secretsRoot)/\(job.jobID)")
        if let paths {
            try? Files.removeTree(paths.home)
            if let uid = paths.uid {
                // The uid's next job may be another project's: its directories are root's until then.
                Ownership.takeBack(paths.buildsDir)
                Ownership.takeBack(paths.cacheDir)
                JobSlots.release(runner: runner, jobID: job.jobID, uid: uid)
            } else {
                try? Files.removeTree(paths.buildsDir)
                try? Files.removeTree(paths.cacheDir)
            }
        }
        if failed == 0 { try? JobStateStore(root: runner.stateDir).remove(jobID: job.jobID) }
        return failed
    }
}
