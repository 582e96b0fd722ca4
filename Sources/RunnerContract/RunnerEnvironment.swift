#if canImport(Glibc)
import Glibc
#endif
/// What the runner puts in the environment of every executor call (custom-executor.md §1).
public struct RunnerEnvironment: Sendable {
    /// Exit code for "the job failed"; 1 today, read from the environment.
    public let buildFailureExitCode: Int32
    /// Exit code for "the system failed"; 2 today, read from the environment.
    public let systemFailureExitCode: Int32
    /// Where run_exec writes the script's own exit code after a build failure.
    public let buildExitCodeFile: String?
    /// The runner's per-job temp dir (holds response.json with every secret).
    public let runnerTempDir: String?
    /// The runner's job payload file.
    public let jobResponseFile: String?
    /// Every job variable, from `CUSTOM_ENV_<KEY>`, with the prefix removed.
    public let jobVariables: [String: String]
    /// The whole environment as the runner gave it, for values such as PATH and LANG.
    public let raw: [String: String]

    /// The prefix the runner puts before every job variable.
    public static let jobVariablePrefix = "CUSTOM_ENV_"

    /// The process's own environment, read from `environ` (ProcessInfo's first use cost each stage
    /// half a millisecond). Of duplicate names the first wins, as with getenv(3).
    public static func current() -> RunnerEnvironment {
        var env: [String: String] = [:]
        var p = environ
        while let entry = p.pointee {
            let text = String(cString: entry)
            if let eq = text.firstIndex(of: "=") {
                let key = String(text[..<eq])
                if env[key] == nil { env[key] = String(text[text.index(after: eq)...]) }
            }
            p += 1
        }
        return RunnerEnvironment(env)
    }

    /// Reads the runner's environment; missing exit codes fall back to today's 1 and 2.
    public init(_ environment: [String: String]) {
        raw = environment
        buildFailureExitCode = environment["BUILD_FAILURE_EXIT_CODE"].flatMap { Int32($0) } ?? 1
        systemFailureExitCode = environment["SYSTEM_FAILURE_EXIT_CODE"].flatMap { Int32($0) } ?? 2
        buildExitCodeFile = environment["BUILD_EXIT_CODE_FILE"].flatMap { $0.isEmpty ? nil : $0 }
        runnerTempDir = environment["TMPDIR"].flatMap { $0.isEmpty ? nil : $0 }
        jobResponseFile = environment["JOB_RESPONSE_FILE"].flatMap { $0.isEmpty ? nil : $0 }
        var vars: [String: String] = [:]
        for (k, v) in environment where k.hasPrefix(Self.jobVariablePrefix) {
            vars[String(k.dropFirst(Self.jobVariablePrefix.count))] = v
        }
        jobVariables = vars
    }

    /// The exit code for a fault.
    public func exitCode(for fault: Fault) -> Int32 {
        fault == .job ? buildFailureExitCode : systemFailureExitCode
    }
}
