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
    /// A configuration without isolation whose directories are all under `dir`.
    static func scratchConfig(_ dir: String) throws -> AirlockConfig {
        try AirlockConfig.parse("""
        [runner]
        builds_root = "\(dir)/builds"
        cache_root = "\(dir)/cache"
        state_dir = "\(dir)/state"
        audit_log = "\(dir)/audit.jsonl"
        isolation = "none"
        """)
    }

    @Test func aRecordReadsBackAndAnOlderISORecordStillReads() throws {
        let dir = NSTemporaryDirectory() + "airlock-record-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = try Self.scratchConfig(dir)
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

    /// Issue 19: the record is written and read without JSONEncoder and JSONDecoder. What a prepare
    /// before that wrote (JSONEncoder, the Codable keys) reads the same, and what this one writes
    /// reads back the same, whatever the job's variables put in its informational fields.
    @Test func aRecordWrittenByJSONEncoderReadsTheSameAndEveryFieldRoundTrips() throws {
        struct Older: Encodable { var job: JobContext; var paths: JobPaths; var preparedAt: Date }
        let dir = NSTemporaryDirectory() + "airlock-record-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = try Self.scratchConfig(dir)
        let payloads = [#"{"id": 4711, "job_info": {"project_id": 42, "name": "deploy \"prod\" \\ \n 😀"}, "runner_info": {"timeout": 900}, "git_info": {"protected": true}}"#,
                        #"{"id": "4712", "job_info": {"project_id": "43"}, "git_info": {"protected": false}}"#,
                        #"{"id": 4713, "job_info": {"project_id": 44}}"#]
        for (n, text) in payloads.enumerated() {
            let vars = n == 2 ? [:] : ["CI_PIPELINE_ID": "7001", "CI_PROJECT_PATH": "group/\"x\"\\/\u{2028}\u{0}"]
            let job = JobContext(response: try JobResponse(json: Data(text.utf8)), variables: vars)
            let base = JobPaths.unsandboxed(runner: config.runner, job: job)
            let paths = n == 0 ? JobPaths.sandboxed(runner: config.runner, job: job, uid: 2_000_000_123, refClass: .protected) : base
            try FileManager.default.createDirectory(atPath: paths.state, withIntermediateDirectories: true)
            let prepared = Date(timeIntervalSince1970: 1_796_000_000.123456)
            try JobRecord.save(JobRecord(job: job, paths: paths, preparedAt: prepared), paths: paths)
            let back = try #require(JobRecord.load(state: paths.state))
            #expect(back.job == job && back.paths == paths && back.preparedAt == prepared)

            let enc = JSONEncoder()
            enc.dateEncodingStrategy = .secondsSince1970
            try enc.encode(Older(job: job, paths: paths, preparedAt: prepared)).write(to: URL(fileURLWithPath: "\(paths.state)/\(JobStateStore.File.record)"))
            let older = try #require(JobRecord.load(state: paths.state))
            #expect(older.job == job && older.paths == paths && older.preparedAt == prepared)
        }
        // A record that is not one reads as none (the stage then names the missing state).
        let state = JobPaths.unsandboxed(runner: config.runner, job: JobContext(response: try JobResponse(json: Data(payloads[2].utf8)), variables: [:])).state
        for broken in [#"{"job": {}, "paths": {}, "preparedAt": 1}"#, "not json", #"{"job": 1}"#] {
            try broken.write(toFile: "\(state)/\(JobStateStore.File.record)", atomically: true, encoding: .utf8)
            #expect(JobRecord.load(state: state) == nil)
        }
    }
}
