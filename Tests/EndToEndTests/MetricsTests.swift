import AirlockAdmin
import AirlockCore
import AirlockTesting
import Foundation
import Testing

/// Issue 14: `airlock metrics` derives counters and histograms from the audit log for node_exporter's
/// textfile collector. What it writes is read back by prometheus_client's own text-format parser.
struct MetricsTests {
    /// The samples of a text exposition as prometheus_client parses them: "name{k=v,...}" → value.
    static func parse(_ text: String) throws -> [String: Double] {
        let py = #"""
        import sys, json
        from prometheus_client.parser import text_string_to_metric_families
        out = {}
        for fam in text_string_to_metric_families(sys.stdin.read()):
            for s in fam.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}"] = s.value
        print(json.dumps(out))
        """#
        let file = NSTemporaryDirectory() + "metrics-\(UUID().uuidString).prom"
        try text.write(toFile: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let r = TestWorld.launch("/bin/sh", ["-c", "exec python3 -c \"$0\" < \"$1\"", py, file], environment: nil)
        #expect(r.code == 0, "\(r.stderr)")
        return try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Double], "\(r.stdout)\(r.stderr)")
    }

    @Test func aJobThroughAirlockShowsInTheMetrics() throws {
        let moto = try MotoServer()
        let issuer = try TestIssuer()
        let world = try TestWorld(extra: AWSEndToEndTests.config(issuer, sts: moto.url))
        let job = AWSEndToEndTests.job(issuer, [#"echo "ran-$((6*7))""#], moto: moto.url)
        let r = world.simulate(job)
        #expect(r.status == "success", "\(TestWorld.redacted(r.log))")
        let dir = "\(world.root)/textfile"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let m = world.run(["metrics", "--config", world.configPath, "--textfile", dir])
        #expect(m.code == 0, "\(m.stdout)\(m.stderr)")
        let text = try String(contentsOfFile: "\(dir)/airlock.prom", encoding: .utf8)
        let mode = try #require(FileManager.default.attributesOfItem(atPath: "\(dir)/airlock.prom")[.posixPermissions] as? Int)
        #expect(mode == 0o644)
        let s = try Self.parse(text)
        #expect(s["airlock_jobs_total{decision=granted}"] == 1, "\(s)")
        #expect(s["airlock_credentials_total{event=issued,profile=deploy-prod,provider=aws-main}"] == 1, "\(s)")
        // moto's credentials cannot be revoked: left to expire, which the audit calls expires_at.
        #expect(s["airlock_credentials_total{event=revoked,outcome=expires_at,profile=deploy-prod,provider=aws-main}"] == 1, "\(s)")
        #expect(s["airlock_federation_duration_seconds_count{provider=aws-main}"] == 1, "\(s)")
        #expect(s["airlock_federation_duration_seconds_bucket{le=+Inf,provider=aws-main}"] == 1, "\(s)")
        #expect(s["airlock_audit_unparsable_lines_total{}"] == 0, "\(s)")
        #expect((s["airlock_audit_last_record_timestamp_seconds{}"] ?? 0) > Date().timeIntervalSince1970 - 600)
        // No value of a credential, nor the token, in the metrics: only names and counts.
        #expect(!text.contains("ASIA") && !text.contains("eyJ"))
    }

    /// A job retried by the runner logs its decision on each prepare attempt: it counts once. Labels
    /// are escaped; a line that is not a record is counted, not fatal; failures and refusals count.
    @Test func derivedCountsFromASyntheticAuditLog() throws {
        let log = NSTemporaryDirectory() + "audit-\(UUID().uuidString).jsonl"
        defer { try? FileManager.default.removeItem(atPath: log) }
        let lines = [
            #"{"event":"decision","job_id":"1","decision":"denied","time":"2026-11-30T08:00:00.000Z"}"#,
            #"{"event":"decision","job_id":"1","decision":"granted","time":"2026-11-30T08:00:01.000Z"}"#,
            #"{"event":"decision","job_id":"2","decision":"no_token","time":"2026-11-30T08:00:02.000Z"}"#,
            #"{"event":"issued","job_id":"1","provider":"vault","profile":"odd \"name\\x","duration_ms":"300","time":"2026-11-30T08:00:03.000Z"}"#,
            #"{"event":"issued","job_id":"1","provider":"vault","profile":"odd \"name\\x","duration_ms":"7000","time":"2026-11-30T08:00:03.500Z"}"#,
            #"{"event":"revoke_failed","job_id":"1","provider":"vault","profile":"odd \"name\\x","outcome":"failed","time":"2026-11-30T08:00:04.000Z"}"#,
            #"{"event":"federation_failed","job_id":"3","provider":"entra","code":"AADSTS700211","time":"2026-11-30T08:00:05.000Z"}"#,
            #"{"event":"endpoint_refused","job_id":"4","reason":"rate_limited","count":17,"time":"2026-11-30T08:00:06.000Z"}"#,
            #"{"event":"swept","job_id":"5","outcome":"settled","time":"2026-11-30T08:00:07.000Z"}"#,
            #"{"event":"decis"#,
        ]
        try (lines.joined(separator: "\n") + "\n").write(toFile: log, atomically: true, encoding: .utf8)
        let s = try Self.parse(Metrics.render(auditLog: log))
        #expect(s["airlock_jobs_total{decision=granted}"] == 1 && s["airlock_jobs_total{decision=no_token}"] == 1 && s["airlock_jobs_total{decision=denied}"] == nil, "\(s)")
        #expect(s[#"airlock_credentials_total{event=issued,profile=odd "name\x,provider=vault}"#] == 2, "\(s)")
        #expect(s[#"airlock_credentials_total{event=revoke_failed,outcome=failed,profile=odd "name\x,provider=vault}"#] == 1, "\(s)")
        #expect(s["airlock_federation_duration_seconds_bucket{le=0.5,provider=vault}"] == 1, "\(s)")
        #expect(s["airlock_federation_duration_seconds_bucket{le=10,provider=vault}"] == 2, "\(s)")
        #expect(s["airlock_federation_duration_seconds_sum{provider=vault}"] == 7.3, "\(s)")
        #expect(s["airlock_federation_failures_total{code=AADSTS700211,provider=entra}"] == 1, "\(s)")
        #expect(s["airlock_endpoint_refusals_total{reason=rate_limited}"] == 17, "\(s)")
        #expect(s["airlock_swept_jobs_total{outcome=settled}"] == 1, "\(s)")
        #expect(s["airlock_audit_unparsable_lines_total{}"] == 1, "\(s)")
        #expect(s["airlock_audit_last_record_timestamp_seconds{}"] == 1_796_025_607, "\(s)")
    }

    /// A prepare that fails before the policy decides (here: state_dir is a file) leaves an audit
    /// line naming the job and why; before, the audit did not show the job at all.
    @Test func aPrepareThatFailsBeforeTheDecisionIsAudited() throws {
        let world = try TestWorld()
        FileManager.default.createFile(atPath: world.stateDir, contents: Data("not a directory".utf8))
        let job = SimulatedJob(script: [#"echo "ran-$((6*7))""#])
        let r = world.simulate(job)
        #expect(r.failureReason == "system_failure", "\(r.log)")
        let failed = world.auditRecords().filter { $0["event"] as? String == "prepare_failed" && $0["job_id"] as? String == String(job.jobID) }
        #expect(!failed.isEmpty, "\(world.auditText)")
        #expect((failed.first?["detail"] as? String)?.contains(world.stateDir) == true, "\(failed)")
        let s = try Self.parse(Metrics.render(auditLog: world.auditLog))
        #expect(s["airlock_audit_records_total{event=prepare_failed}"] == Double(failed.count), "\(s)")
    }
}
