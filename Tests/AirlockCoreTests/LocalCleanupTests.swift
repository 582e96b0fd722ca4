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
        let config = try AirlockConfig.parse("""
        [runner]
        builds_root = "\(dir)/builds"
        cache_root = "\(dir)/cache"
        state_dir = "\(dir)/state"
        audit_log = "\(dir)/audit.jsonl"
        isolation = "none"
        """)
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
        var lines: [String] = []
        let failed = Revoker.settleJobWithoutRevoking(config: w.config, job: w.job, paths: w.paths, state: w.paths.state) { lines.append($0) }
        let left = [w.paths.state, w.paths.buildsDir, w.paths.cacheDir, w.paths.home].filter { FileManager.default.fileExists(atPath: $0) }.count
        #expect(failed == 0 && lines.isEmpty && left == 0)
    }

    @Test func anUnsettledCredentialKeepsTheStateForSweep() throws {
        let w = try world()
        defer { try? FileManager.default.removeItem(atPath: w.dir) }
        let secret = "issued-secret-value-0123456789"
        let c = IssuedCredential(profile: "deploy", provider: "aws", providerType: "aws", secrets: ["token": secret], details: [:],
                                 expiresAt: Date().addingTimeInterval(600), revocationHandle: "h", delivery: DeliveryContract(), summary: "stub")
        try JobLedger(stateDirectory: w.paths.state).record(c, at: Date())
        var lines: [String] = []
        let failed = Revoker.settleJobWithoutRevoking(config: w.config, job: w.job, paths: w.paths, state: w.paths.state) { lines.append($0) }
        let stateKept = FileManager.default.fileExists(atPath: "\(w.paths.state)/\(JobStateStore.File.ledger)")
        let unsettled = try JobLedger(stateDirectory: w.paths.state).entries().filter { $0.state != .settled }.count
        #expect(failed == 1 && stateKept && unsettled == 1)
        #expect(lines.count == 1 && !lines.joined().contains(secret))
        // cleanup then fails as the host's fault and says the ledger is kept for sweep.
        do {
            try Stages.cleanupWithoutRevoking(config: w.config, job: w.job)
            Issue.record("cleanup succeeded with an unrevoked credential")
        } catch {
            #expect("\(error)".contains("kept for `airlock sweep`"))
        }
        #expect(FileManager.default.fileExists(atPath: "\(w.paths.state)/\(JobStateStore.File.ledger)"))
    }
}
