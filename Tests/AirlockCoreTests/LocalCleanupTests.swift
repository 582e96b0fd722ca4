@testable import AirlockCore
import AirlockConfiguration
import Federation
import Foundation
import JobIsolation
import Ledger
import RunnerContract
import Testing

/// Issue 19: airlock-cleanup settles a job with nothing to revoke on its main thread, without the
/// concurrency runtime (`settleJobWithoutRevoking`). It must never remove what still has to be
/// revoked: a ledger entry left unsettled keeps the job's state for `airlock sweep`.
struct LocalCleanupTests {
    func world() throws -> (dir: String, config: AirlockConfig, job: JobContext, paths: JobPaths) {
        let dir = NSTemporaryDirectory() + "airlock-local-cleanup-\(UUID().uuidString.prefix(8))"
        let config = try JobRecordTests.scratchConfig(dir)
        let job = JobContext(response: try JobResponse(json: Data(#"{"id": 4711, "job_info": {"project_id": 42}}"#.utf8)), variables: [:])
        let paths = JobPaths.unsandboxed(runner: config.runner, job: job)
        for d in [paths.state, paths.buildsDir, paths.cacheDir, paths.home] {
            try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        }
        try JobRecord.save(JobRecord(job: job, paths: paths, preparedAt: Date()), paths: paths)
        return (dir, config, job, paths)
    }

    @Test func aJobWithNothingToRevokeIsRemovedWhole() throws {
        let w = try world()
        defer { try? FileManager.default.removeItem(atPath: w.dir) }
        let failed = Revoker.settleJobWithoutRevoking(runner: w.config.runner, job: w.job, paths: w.paths, state: w.paths.state)
        let left = [w.paths.state, w.paths.buildsDir, w.paths.cacheDir, w.paths.home].filter { FileManager.default.fileExists(atPath: $0) }.count
        #expect(failed == 0 && left == 0)
    }

    /// A credential in the ledger (its server issued it after the stage looked): the local path
    /// removes nothing and leaves it to `Stages.cleanup`, which audits it as not revoked, marks it
    /// `revoke_failed` and keeps the job's state for sweep.
    @Test func anUnsettledCredentialIsLeftToTheCleanupThatAuditsIt() async throws {
        let w = try world()
        defer { try? FileManager.default.removeItem(atPath: w.dir) }
        let secret = "issued-secret-value-0123456789"
        let c = IssuedCredential(profile: "deploy", provider: "aws", providerType: "aws", secrets: ["token": secret], details: [:],
                                 expiresAt: Date().addingTimeInterval(600), revocationHandle: "h", delivery: DeliveryContract(), summary: "stub")
        let ledger = JobLedger(stateDirectory: w.paths.state)
        try ledger.record(c, at: Date())
        let settled = Revoker.settleJobWithoutRevoking(runner: w.config.runner, job: w.job, paths: w.paths, state: w.paths.state)
        let kept = [w.paths.state, w.paths.buildsDir, w.paths.cacheDir, w.paths.home].filter { FileManager.default.fileExists(atPath: $0) }.count
        #expect(settled == nil && kept == 4)
        let done = try Stages.cleanupWithoutRevoking(runner: w.config.runner, job: w.job)
        let audit = AuditLog(path: w.config.runner.auditLog)
        let before = try ledger.entries().map(\.state)
        #expect(!done && audit.records().isEmpty && before == [.issued])

        do {
            try await Stages.cleanup(config: w.config, env: RunnerEnvironment([:]), job: w.job, transport: HTTP.none())
            Issue.record("cleanup succeeded with an unrevoked credential")
        } catch {
            #expect("\(error)".contains("kept for `airlock sweep`") && !"\(error)".contains(secret))
        }
        let events = audit.records().compactMap { $0["event"]?.stringValue }
        let after = try ledger.entries().map(\.state)
        #expect(events == ["revoke_failed", "cleanup"] && after == [.revokeFailed])
        #expect(audit.records().last?["state"] == .string("kept_for_sweep"))
    }
}
