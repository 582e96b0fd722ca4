package import Foundation
package import JobIsolation
import Ledger
package import RunnerContract

/// What prepare leaves for later stages in the job's state directory.
package struct JobRecord {
    package var job: JobContext
    package var paths: JobPaths
    package var preparedAt: Date

    /// The job a state directory belongs to (for the credential server).
    package static func jobContext(state: String) throws(AirlockFailure) -> JobContext {
        guard let r = load(state: state) else { throw AirlockFailure(.system, "no job record in \(state)") }
        return r.job
    }

    /// The record `save` wrote (or a prepare before issue 19, with JSONEncoder: the same keys, the
    /// date as seconds or, older still, ISO 8601); nil when absent or unreadable.
    package static func load(state: String) -> JobRecord? {
        guard let bytes = FileContents.read("\(state)/\(JobStateStore.File.record)"), let n = try? JSONReader.parse(bytes),
              let job = n["job"].flatMap(JobContext.init(json:)), let paths = n["paths"].flatMap(JobPaths.init(json:)),
              let date = n["preparedAt"] else { return nil }
        let preparedAt: Date
        if let seconds = date.double {
            preparedAt = Date(timeIntervalSince1970: seconds)
        } else if let text = date.string, let d = ISO8601DateFormatter().date(from: text) {
            preparedAt = d
        } else {
            return nil
        }
        return JobRecord(job: job, paths: paths, preparedAt: preparedAt)
    }

    package static func save(_ record: JobRecord, paths: JobPaths) throws(AirlockFailure) {
        // Seconds since 1970, not ISO 8601: reading an ISO date sets up Foundation's calendars, which
        // cost every run stage a fraction of a millisecond. Written and read without JSONEncoder and
        // JSONDecoder, whose generic machinery cost each stage about as much again.
        let seconds = record.preparedAt.timeIntervalSince1970
        guard seconds.isFinite else { throw AirlockFailure(.system, "cannot encode job state: the date is not finite") }
        let text = "{\"job\":\(record.job.json.compactJSON),\"paths\":\(record.paths.json.compactJSON),\"preparedAt\":\(seconds)}"
        try Files.writeAtomically(Data(text.utf8), to: "\(paths.state)/\(JobStateStore.File.record)")
    }
}

/// Audit field helpers.
package enum Audit {
    /// The job identity every record carries.
    /// `job_id` and `project_id` are the runner's payload's; what only the job's variables say is
    /// named `ci_*` (a job can set it to anything), and a verified token adds the real `project_path`.
    package static func identity(_ job: JobContext) -> [String: JSONValue] {
        var f: [String: JSONValue] = ["job_id": .string(job.jobID), "project_id": .string(job.projectID),
                                      "ci_project_path": .string(job.projectPath), "airlock_version": .string(airlockVersion)]
        if let p = job.pipelineID { f["ci_pipeline_id"] = .string(p) }
        return f
    }
}
