import Foundation
@testable import RunnerContract
import Testing

/// Issue 19: `JobResponse` reads the runner's payload with `JSONReader`. What it reads must be what
/// the JSONSerialization reading before it read, field by field, on payloads a hostile job shapes
/// (its variables are the job's to write) and on payloads that are not what the runner writes.
struct JobResponseTests {
    /// The reading before issue 19, kept here as the reference.
    struct Reference: Equatable {
        var jobID: String?, projectID: String?, timeoutSeconds: Int?, jobName: String?, refProtected: Bool?
        var variables: [String]

        init(_ data: Data) {
            variables = []
            guard let obj = try? JSONSerialization.jsonObject(with: data), let top = obj as? [String: Any] else { return }
            // The one deliberate difference: JSONSerialization's `true` bridged to the number 1, so
            // `"id": true` read as job 1 and `"timeout": true` as one second. JobResponse reads only
            // numbers (and digit strings) as numbers.
            func isBool(_ value: Any?) -> Bool { (value as? NSNumber).map { String(cString: $0.objCType) == "c" } ?? false }
            func id(_ value: Any?) -> String? {
                if isBool(value) { return nil }
                if let i = value as? Int64, i > 0 { return String(i) }
                if let s = value as? String, !s.isEmpty, s.count <= 19, s.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) { return s }
                return nil
            }
            let info = top["job_info"] as? [String: Any] ?? [:]
            guard let j = id(top["id"]), let p = id(info["project_id"]) else { return }
            jobID = j
            projectID = p
            jobName = info["name"] as? String
            let runner = top["runner_info"] as? [String: Any] ?? [:]
            if !isBool(runner["timeout"]), let t = (runner["timeout"] as? NSNumber)?.intValue, t > 0 { timeoutSeconds = t }
            refProtected = ((top["git_info"] as? [String: Any])?["protected"] as? NSNumber)?.boolValue
            variables = (top["variables"] as? [[String: Any]] ?? []).compactMap { v in
                guard let k = v["key"] as? String else { return nil }
                return "\(k)=\(v["value"] as? String ?? "")"
            }
        }

        init(_ r: JobResponse?) {
            jobID = r?.jobID
            projectID = r?.projectID
            timeoutSeconds = r?.timeoutSeconds
            jobName = r?.jobName
            refProtected = r?.refProtected
            variables = r?.variables.map { "\($0.key)=\($0.value)" } ?? []
        }
    }

    static let ids = ["4711", "\"4711\"", "0", "-3", "\"\"", "\"12a\"", "\"00012\"", "null", "true", "9223372036854775807",
                      "\"12345678901234567890\"", "[1]", "{}"]
    static let timeouts = ["3600", "0", "-5", "\"3600\"", "null", "true", "7200"]
    static let protections = ["true", "false", "null", "\"true\"", "1", "0"]
    static let strings = ["\"build\"", "\"\"", "\"a=b\\nc\"", "\"\\u0000x\"", "\"😀 \\ud83d\\ude00\"", "1", "null", "[\"x\"]"]

    static func payload(_ r: inout JSONReaderTests.Rng) -> String {
        var top: [String] = []
        if r.int(10) > 0 { top.append("\"id\":\(r.pick(ids))") }
        if r.int(10) > 0 {
            var info: [String] = []
            if r.int(10) > 0 { info.append("\"project_id\":\(r.pick(ids))") }
            if r.int(2) == 0 { info.append("\"name\":\(r.pick(strings))") }
            top.append(r.int(12) == 0 ? "\"job_info\":[]" : "\"job_info\":{\(info.joined(separator: ","))}")
        }
        if r.int(2) == 0 { top.append("\"runner_info\":{\"timeout\":\(r.pick(timeouts))}") }
        if r.int(2) == 0 { top.append(r.int(8) == 0 ? "\"git_info\":true" : "\"git_info\":{\"protected\":\(r.pick(protections))}") }
        if r.int(8) > 0 {
            let vars = (0..<r.int(6)).map { _ -> String in
                if r.int(15) == 0 { return r.pick(strings) }
                var m: [String] = []
                if r.int(10) > 0 { m.append("\"key\":\(r.pick(strings))") }
                if r.int(10) > 0 { m.append("\"value\":\(r.pick(strings))") }
                if r.int(3) == 0 { m.append("\"public\":true,\"masked\":false") }
                if r.int(10) == 0 { m.append("\"key\":\"CI_JOB_ID\"") }
                return "{\(m.joined(separator: ","))}"
            }
            top.append("\"variables\":[\(vars.joined(separator: ","))]")
        }
        if r.int(10) == 0, let first = top.first { top.append(first) }
        return "{\(top.joined(separator: ","))}"
    }

    @Test func payloadsReadAsTheJSONSerializationReadingReadThem() {
        var r = JSONReaderTests.Rng(state: 4711)
        var differing: [String] = [], accepted = 0
        for _ in 0..<5000 {
            let text = Self.payload(&r)
            let data = Data(text.utf8)
            let ours = try? JobResponse(json: data)
            if ours != nil { accepted += 1 }
            if Reference(data) != Reference(ours) && differing.count < 3 { differing.append(text) }
        }
        #expect(accepted > 300 && accepted < 5000, "\(accepted) accepted")
        #expect(differing.isEmpty, "\(differing)")
    }

    @Test func anErrorNamesTheFieldAndTheFileButNoValue() {
        let secret = "glpat-secret-value-1234"
        let cases = [("{\"id\":\"\(secret)\"}", "id is missing"), ("{\"id\":5,\"job_info\":{\"project_id\":\"\(secret)\"}}", "job_info.project_id"),
                     ("[\"\(secret)\"", "not the runner's JSON job payload")]
        for (text, expected) in cases {
            do {
                _ = try JobResponse(json: Data(text.utf8), source: "/tmp/x/response.json")
                Issue.record("accepted \(expected)")
            } catch {
                #expect(error.description.contains(expected) && error.description.contains("/tmp/x/response.json"))
                #expect(!error.description.contains(secret))
            }
        }
    }

    /// Where it reads less than JSONSerialization did, on purpose: an id must be an integer or a
    /// string of digits. Through NSNumber, `true`, `1.0` and `1e3` read as jobs 1, 1 and 1000.
    @Test(arguments: ["true", "1.0", "1e3", "4711.5", "-1", "0"])
    func anIdThatIsNotAPositiveIntegerIsRefused(_ id: String) {
        let asJob = (try? JobResponse(json: Data(#"{"id": \#(id), "job_info": {"project_id": 42}}"#.utf8))) == nil
        let asProject = (try? JobResponse(json: Data(#"{"id": 42, "job_info": {"project_id": \#(id)}}"#.utf8))) == nil
        #expect(asJob && asProject)
    }
}
