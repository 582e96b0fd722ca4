import AirlockTesting
import Foundation
import Testing

/// Issue 14: a job keeps the configuration it was prepared with (`state/jobs/<id>/config.toml`). An
/// edit with a typo while it runs made its next stage and its cleanup fail, left its ledger until
/// `airlock sweep --force`, and printed the config error with host paths into the job log.
struct ConfigSnapshotTests {
    final class Box: @unchecked Sendable {
        var result: SimulationResult?
        let done = DispatchSemaphore(value: 0)
    }

    @Test func aTypoWhileAJobRunsAffectsOnlyJobsPreparedAfterIt() async throws {
        let moto = try MotoServer()
        let issuer = try TestIssuer()
        let world = try TestWorld(extra: AWSEndToEndTests.config(issuer, sts: moto.url))
        let release = world.signalPath("release")
        var job = AWSEndToEndTests.job(issuer, [TestWorld.waitFor(release), #"echo "script-key=${#AWS_SECRET_ACCESS_KEY}""#], moto: moto.url)
        job.afterScript = [#"echo "after-key=${#AWS_SECRET_ACCESS_KEY}""#]
        let box = Box(), prepared = job
        Thread.detachNewThread { box.result = world.simulate(prepared); box.done.signal() }
        defer { world.signal(release) }
        let state = "\(world.stateDir)/jobs/\(job.jobID)"
        for _ in 0..<1200 where !FileManager.default.fileExists(atPath: "\(state)/ledger.json") {
            try await Task.sleep(nanoseconds: 50_000_000)
        }
        #expect(FileManager.default.fileExists(atPath: "\(state)/ledger.json"))
        // Prepare kept the file it ran with, readable by root only.
        let snapshot = try #require(FileManager.default.attributesOfItem(atPath: "\(state)/config.toml")[.posixPermissions] as? Int)
        #expect(snapshot == 0o600)
        // An editor saves half a change: the file no longer parses.
        let original = try String(contentsOfFile: world.configPath, encoding: .utf8)
        try (original + "\n[profiles.half-written\nprovider = \n").write(toFile: world.configPath, atomically: true, encoding: .utf8)
        world.signal(release)
        box.done.wait()
        let r = try #require(box.result)
        #expect(r.status == "success", "\(TestWorld.redacted(r.log))")
        // Both stages after the edit still had the job's credentials.
        #expect(r.output.contains("script-key=40\n") && r.output.contains("after-key=40\n"), "\(TestWorld.redacted(r.output))")
        // Cleanup completed: the state is gone and every credential issued was revoked.
        #expect(!FileManager.default.fileExists(atPath: state))
        let records = world.auditRecords().filter { $0["job_id"] as? String == String(job.jobID) }
        let issued = Set(records.filter { $0["event"] as? String == "issued" }.compactMap { $0["credential_id"] as? String })
        let revoked = Set(records.filter { $0["event"] as? String == "revoked" }.compactMap { $0["credential_id"] as? String })
        #expect(!issued.isEmpty && issued == revoked)

        // A job prepared after the edit fails as a system failure, and its log names the problem by
        // the file's name and line, not by its host path.
        let next = AWSEndToEndTests.job(issuer, [#"echo "ran-$((6*7))""#], moto: moto.url)
        let r2 = world.simulate(next)
        #expect(r2.failureReason == "system_failure", "\(r2.log)")
        #expect(r2.log.contains("airlock.toml:") && !r2.log.contains(world.configPath) && !r2.log.contains(world.root), "\(r2.log)")
        #expect(!r2.output.contains("ran-42"))
        // Its cleanup (the runner calls it after a failed prepare) has nothing to clean and says so.
        #expect(!r2.runnerLog.contains("system error"), "\(r2.runnerLog)")
    }

    /// A job prepared by an Airlock without the copy (its state has no config.toml) runs and is
    /// cleaned up with the file as it is: state from the version before stays readable.
    @Test func aJobWithoutACopyUsesTheFileAsItIs() async throws {
        let moto = try MotoServer()
        let issuer = try TestIssuer()
        let world = try TestWorld(extra: AWSEndToEndTests.config(issuer, sts: moto.url))
        let release = world.signalPath("release")
        let job = AWSEndToEndTests.job(issuer, [TestWorld.waitFor(release), #"echo "script-key=${#AWS_SECRET_ACCESS_KEY}""#], moto: moto.url)
        let box = Box()
        Thread.detachNewThread { box.result = world.simulate(job); box.done.signal() }
        defer { world.signal(release) }
        let state = "\(world.stateDir)/jobs/\(job.jobID)"
        for _ in 0..<1200 where !FileManager.default.fileExists(atPath: "\(state)/ledger.json") {
            try await Task.sleep(nanoseconds: 50_000_000)
        }
        try FileManager.default.removeItem(atPath: "\(state)/config.toml")
        world.signal(release)
        box.done.wait()
        let r = try #require(box.result)
        #expect(r.status == "success" && r.output.contains("script-key=40\n"), "\(TestWorld.redacted(r.log))")
        #expect(!FileManager.default.fileExists(atPath: state))
    }
}
