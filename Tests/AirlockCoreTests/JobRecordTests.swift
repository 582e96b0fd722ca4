@testable import AirlockCore
import AirlockConfiguration
import Foundation
import JobIsolation
import Ledger
import RunnerContract
import Testing

/// Issue 19: the job record's date is written as seconds since 1970 (reading ISO 8601 set up
/// Foundation's calendars in every run stage); a record written before, by a prepare of the previous
/// version, still reads the same.
struct JobRecordTests {
    @Test func aRecordReadsBackAndAnOlderISORecordStillReads() throws {
        let dir = NSTemporaryDirectory() + "airlock-record-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = try AirlockConfig.parse("""
        [runner]
        builds_root = "\(dir)/builds"
        cache_root = "\(dir)/cache"
        state_dir = "\(dir)/state"
        audit_log = "\(dir)/audit.jsonl"
        isolation = "none"
        """)
        let response = try JobResponse(json: Data(#"{"id": 4711, "job_info": {"project_id": 42}}"#.utf8))
        let job = JobContext(response: response, variables: [:])
        let paths = JobPaths.unsandboxed(runner: config.runner, job: job)
        try FileManager.default.createDirectory(atPath: paths.state, withIntermediateDirectories: true)
        let prepared = Date(timeIntervalSince1970: 1_796_000_000.5)
        try JobRecord.save(JobRecord(job: job, paths: paths, preparedAt: prepared), paths: paths)
        let file = "\(paths.state)/\(JobStateStore.File.record)"
        let text = try String(contentsOfFile: file, encoding: .utf8)
        #expect(text.contains("\"preparedAt\":1796000000.5"), "\(text)")
        let back = try #require(JobRecord.load(state: paths.state))
        #expect(back.preparedAt == prepared && back.job.jobID == "4711" && back.paths.state == paths.state)

        // As the previous version wrote it.
        try text.replacingOccurrences(of: "1796000000.5", with: "\"2026-11-30T00:53:20Z\"").write(toFile: file, atomically: true, encoding: .utf8)
        let older = try #require(JobRecord.load(state: paths.state))
        #expect(older.preparedAt == Date(timeIntervalSince1970: 1_796_000_000))
        #expect(older.job.jobID == "4711")
    }
}
