package import Foundation
package import JobIsolation
import Ledger
package import RunnerContract

/// What prepare leaves for later stages in the job's state directory.
package struct JobRecord: Codable {
    package var job: JobContext
    package var paths: JobPaths
    package var preparedAt: Date

    /// The job a state directory belongs to (for the credential server).
    package static func jobContext(state: String) throws(AirlockFailure) -> JobContext {
        guard let r = load(state: state) else { throw AirlockFailure(.system, "no job record in \(state)") }
        return r.job
    }

    /// The record `save` wrote; nil when absent or unreadable.
    package static func load(state: String) -> JobRecord? {
        let dec = JSONDecoder()
        dec.dateDecodingStrategy = .custom { d in
            let c = try d.singleValueContainer()
            if let seconds = try? c.decode(Double.self) { return Date(timeIntervalSince1970: seconds) }
            // A record an Airlock before issue 19 wrote (ISO 8601), for jobs prepared before an upgrade.
            let text = try c.decode(String.self)
            guard let date = ISO8601DateFormatter().date(from: text) else {
                throw DecodingError.dataCorruptedError(in: c, debugDescription: "not a date: \(text)")
            }
            return date
        }
        return FileManager.default.contents(atPath: "\(state)/\(JobStateStore.File.record)").flatMap { try? dec.decode(JobRecord.self, from: $0) }
    }

    package static func save(_ record: JobRecord, paths: JobPaths) throws(AirlockFailure) {
        // Seconds since 1970, not ISO 8601: reading an ISO date sets up Foundation's calendars, which
        // cost every run stage a fraction of a millisecond.
        let enc = JSONEncoder()
        enc.dateEncodingStrategy = .secondsSince1970
        guard let data = try? enc.encode(record) else { throw AirlockFailure(.system, "cannot encode job state") }
        try Files.writeAtomically(data, to: "\(paths.state)/\(JobStateStore.File.record)")
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
