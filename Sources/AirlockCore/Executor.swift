import ConfigSyntax
public import AirlockConfiguration
import Foundation
import Identity
import Ledger
public import RunnerContract
#if canImport(Glibc)
import Glibc
#endif

/// Arguments every executor takes: `[--config FILE] [positional...]`.
public struct ExecutorArguments: Sendable {
    public var configPath: String = AirlockConfig.defaultPath
    public var positional: [String] = []

    /// Parses `--config FILE`, `--config=FILE` and positionals.
    /// - Throws: `AirlockFailure` (system) for an unknown option.
    public init(_ args: [String]) throws(AirlockFailure) {
        var i = 0
        while i < args.count {
            let a = args[i]
            if a == "--config" {
                guard i + 1 < args.count else { throw AirlockFailure(.system, "--config needs a file path") }
                configPath = args[i + 1]
                i += 2
            } else if a.hasPrefix("--config=") {
                configPath = String(a.dropFirst("--config=".count))
                i += 1
            } else if a.hasPrefix("--") {
                throw AirlockFailure(.system, "unknown option \(a); executors take only --config FILE")
            } else {
                positional.append(a)
                i += 1
            }
        }
    }
}

/// The entry point of the four executables: reads the environment (the only place that does, with
/// RunnerContract), runs one stage, and turns its error into the runner's exit code.
public enum Executor {
    /// Which executor is running.
    public enum Kind: String, Sendable { case config, prepare, run, cleanup }

    /// What prepare and cleanup have read before they start their work (`begin`).
    public struct Begun: Sendable {
        let kind: Kind
        let arguments: [String]
        let env: RunnerEnvironment
        let config: AirlockConfig?
        let job: JobContext?
    }

    /// airlock-prepare and airlock-cleanup, synchronously on the main thread before their first
    /// `await` (the main thread takes the runner's signals once it waits in the concurrency runtime):
    /// the runner's signals are held, the stage is set up, and a job that needs the network is handed
    /// over to airlock-federate with any signal still pending. Otherwise the signals are let in (a
    /// flag; see Termination) and the stage is done here, without the concurrency runtime; only a
    /// cleanup that could not hand over goes on in `main`. An error, or the end, ends the process here.
    public static func begin(_ kind: Kind, arguments: [String] = Array(CommandLine.arguments.dropFirst())) -> Begun {
        precondition(kind == .prepare || kind == .cleanup, "config and run run in Executor.mainSync")
        Termination.hold()
        let env = RunnerEnvironment.current()
        do {
            // A job left here has nothing to say to GitLab or a provider (the set-up handed the
            // others over): it is prepared or cleaned up on this thread, with no concurrency runtime
            // to start (1 to 2 ms of thread start-up). A cleanup with credentials in its ledger goes
            // on in `main`, which records each as not revoked, for sweep: its hand-over failed, or
            // they appeared since the set-up looked.
            if kind == .prepare {
                let (_, config, job) = try setUp(kind, arguments: arguments, env: env, networked: false)
                Termination.release()
                guard let config, let job else { finish(0) }
                try Stages.prepareWithoutToken(config: config, env: env, job: job)
                finish(0)
            }
            let (args, view, job) = try setUpAfterPrepare(kind, arguments: arguments, env: env)
            Termination.release()
            guard let view else { finish(0) }
            if try Stages.cleanupWithoutRevoking(runner: view.runner, job: job) {
                finish(0)
            }
            // Rare (see above): `main` revokes nothing without the network, but records each
            // credential by its provider and profile, which takes the whole configuration.
            let config = try AirlockConfig.forJob(path: args.configPath, jobID: job.jobID)
            return Begun(kind: kind, arguments: arguments, env: env, config: config, job: job)
        } catch {
            finish(report(kind, error, env: env, arguments: arguments))
        }
    }

    /// Runs prepare or cleanup after `begin` (airlock-prepare, airlock-cleanup: no network) or with
    /// `transport` (airlock-federate), and exits.
    public static func main(_ begun: Begun, transport: TransportFactory? = nil) async -> Never {
        let code: Int32
        do {
            if let config = begun.config, let job = begun.job {
                let transport = (transport ?? HTTP.none)()
                if begun.kind == .prepare {
                    try await Stages.prepare(config: config, env: begun.env, job: job, transport: transport)
                } else {
                    try await Stages.cleanup(config: config, env: begun.env, job: job, transport: transport)
                }
            }
            code = 0
        } catch {
            code = report(begun.kind, error, env: begun.env, arguments: begun.arguments)
        }
        finish(code)
    }

    /// Runs config or run, which never wait on anything but their own child, synchronously on the
    /// main thread (an async main moves to the concurrency pool first: 1 to 2 ms of thread start-up
    /// per stage), and exits. The run stage forwards signals to the job (StageWatcher).
    public static func mainSync(_ kind: Kind, arguments: [String] = Array(CommandLine.arguments.dropFirst())) -> Never {
        precondition(kind == .config || kind == .run, "prepare and cleanup run in Executor.main")
        let env = RunnerEnvironment.current()
        let code: Int32
        do {
            if kind == .config {
                let (_, config, _) = try setUp(kind, arguments: arguments, env: env, networked: false)
                guard let config else { throw AirlockFailure(.system, "no configuration") }
                // Written as text: Data made from a String's UTF-8 view cost the stage a conformance scan.
                print(try Stages.config(config: config, env: env), terminator: "")
                code = 0
            } else {
                let (args, view, job) = try setUpAfterPrepare(kind, arguments: arguments, env: env)
                guard let view else { throw AirlockFailure(.system, "no configuration") }
                guard args.positional.count == 2 else {
                    throw AirlockFailure(.system, "airlock-run expects <script> <stage>, got \(args.positional.count) argument(s); check run_args in the runner's config.toml")
                }
                code = try Stages.run(view: view, env: env, job: job, script: args.positional[0], stage: args.positional[1])
            }
        } catch {
            code = report(kind, error, env: env, arguments: arguments)
        }
        finish(code)
    }

    /// Flushes what the stage printed and exits without atexit handlers: nothing registers one that
    /// matters, and a large static executable tears down faster without them.
    private static func finish(_ code: Int32) -> Never {
        fflush(nil)
        _exit(code)
    }

    private static func report(_ kind: Kind, _ error: any Error, env: RunnerEnvironment, arguments: [String]) -> Int32 {
        let configPath = (try? ExecutorArguments(arguments))?.configPath ?? AirlockConfig.defaultPath
        let blamed = error as? any BlamedError ?? AirlockFailure(.system, "unexpected error: \(error)")
        return report(kind, blamed, env: env, configPath: configPath)
    }

    /// `airlock-federate prepare|cleanup [--config FILE]`: the stage airlock-prepare or airlock-cleanup
    /// handed over, with the network. Its handlers go in and the mask it inherited from execv is
    /// cleared first, on the main thread: a signal the runner sent since is taken now.
    public static func federateBegin() -> Begun {
        Termination.release()
        let env = RunnerEnvironment.current()
        let args = Array(CommandLine.arguments.dropFirst())
        guard let first = args.first, let kind = Kind(rawValue: first), kind == .prepare || kind == .cleanup else {
            FileHandle.standardError.write(Data("airlock-federate: system error: airlock-prepare and airlock-cleanup start it as `airlock-federate prepare|cleanup [--config FILE]`; the runner's config.toml should name those two, not airlock-federate\n".utf8))
            finish(env.exitCode(for: .system))
        }
        let arguments = Array(args.dropFirst())
        do {
            let (_, config, job) = try setUp(kind, arguments: arguments, env: env, networked: true)
            return Begun(kind: kind, arguments: arguments, env: env, config: config, job: job)
        } catch {
            finish(report(kind, error, env: env, arguments: arguments))
        }
    }

    /// Prints the error and returns the runner's exit code for it. What config, prepare and run print
    /// goes into the job log: there the configuration is named by its file name, not its host path
    /// (cleanup's output goes to the runner's own log, which keeps it).
    static func report(_ kind: Kind, _ e: any BlamedError, env: RunnerEnvironment, configPath: String) -> Int32 {
        let who = e.fault == .job ? "job error" : "system error"
        var message = e.description
        if kind != .cleanup && e is ConfigError {
            message = message.replacingOccurrences(of: configPath, with: (configPath as NSString).lastPathComponent)
        }
        FileHandle.standardError.write(Data("airlock-\(kind.rawValue): \(who): \(message)\n".utf8))
        return env.exitCode(for: e.fault)
    }

    /// Fingerprints in logs and audit records are keyed with the host's key in `state_dir`.
    /// - Throws: `AirlockFailure` (system) when it cannot be read or made.
    public static func useHostFingerprintKey(_ config: AirlockConfig) throws(AirlockFailure) {
        try useHostFingerprintKey(config.runner)
    }

    static func useHostFingerprintKey(_ runner: RunnerSettings) throws(AirlockFailure) {
        do {
            Fingerprint.use(try Fingerprint.hostKey(directory: runner.stateDir))
        } catch {
            throw AirlockFailure(.system, "the fingerprint key: \(error); check [runner] state_dir")
        }
    }

    /// What config, prepare and airlock-federate do first: their arguments, the runner's payload
    /// (read once, here), the configuration (a cleanup's: the job's own copy), prepare's hand-over of
    /// a job that needs the network, and the host's fingerprint key. A nil configuration means the
    /// stage has nothing to do. (airlock-run and airlock-cleanup: `setUpAfterPrepare`.)
    /// - Throws: `BlamedError` for Airlock's own failures.
    static func setUp(_ kind: Kind, arguments: [String], env: RunnerEnvironment,
                      networked: Bool) throws -> (ExecutorArguments, AirlockConfig?, JobContext?) {
        precondition(kind != .run, "airlock-run reads the job's view (setUpAfterPrepare)")
        let args = try ExecutorArguments(arguments)
        let job: JobContext? = kind == .config ? nil : try JobContext(env)
        // A cleanup (here: airlock-federate's) runs with the configuration its job was prepared with.
        let config: AirlockConfig
        if let job, kind == .cleanup {
            guard let c = try forJob(kind, args: args, job: job, { path, id throws(ConfigError) in try AirlockConfig.forJob(path: path, jobID: id) }) else {
                return (args, nil, job)
            }
            config = c
        } else {
            config = try AirlockConfig.load(path: args.configPath)
        }
        // Only a job with something to say to GitLab or a provider needs the executable that links
        // libcurl (and its thirty libraries): the others finish here, before anything is done.
        // (airlock-cleanup hands over in setUpAfterPrepare.)
        if !networked, let job, kind == .prepare, Stages.needsNetwork(kind, config: config, env: env, job: job) {
            do {
                try handOver(kind, arguments: arguments)
            } catch {
                Stages.auditPrepareFailure(job, error, config: config)
                throw error
            }
        }
        if let job {
            do {
                try useHostFingerprintKey(config)
            } catch {
                if kind == .prepare { Stages.auditPrepareFailure(job, error, config: config) }
                throw error
            }
        }
        return (args, config, job)
    }

    /// airlock-run, and airlock-cleanup before any hand-over: their arguments, the runner's payload,
    /// the view of the configuration the job was prepared with (`JobView`: its runner settings and
    /// delivery, without every provider, profile and rule parsed again), the hand-over of a cleanup
    /// that has credentials to revoke, and (cleanup) the host's fingerprint key. A nil view means the
    /// stage has nothing to do.
    /// - Throws: `BlamedError` for Airlock's own failures.
    static func setUpAfterPrepare(_ kind: Kind, arguments: [String], env: RunnerEnvironment) throws -> (ExecutorArguments, JobView?, JobContext) {
        precondition(kind == .run || kind == .cleanup, "config and prepare read the configuration itself")
        let args = try ExecutorArguments(arguments)
        let job = try JobContext(env)
        guard let view = try forJob(kind, args: args, job: job, { path, id throws(ConfigError) in try AirlockConfig.viewForJob(path: path, jobID: id) }) else {
            return (args, nil, job)
        }
        if kind == .cleanup {
            if Stages.hasUnsettled(view.runner, job: job) {
                do {
                    try handOver(kind, arguments: arguments)
                } catch {
                    // Cleanup still does everything it can without the network: stops the job's
                    // server, removes its files, takes its directories back, and records each
                    // credential it could not revoke as revoke_failed for `airlock sweep`; it then
                    // fails as the host's fault.
                    FileHandle.standardError.write(Data("airlock-cleanup: \(error); cleaning up without the network\n".utf8))
                }
            }
            try useHostFingerprintKey(view.runner)
        }
        // The run stage fingerprints nothing (what it masks was fingerprinted when issued), so it
        // does not read the host's key.
        return (args, view, job)
    }

    /// What the job was prepared with, read by `load`. A cleanup with no job state left (a repeated
    /// one, or after a prepare that failed early) has nothing to do, whatever the file says now: nil.
    /// - Throws: `ConfigError` when it does not load.
    private static func forJob<T>(_ kind: Kind, args: ExecutorArguments, job: JobContext,
                                  _ load: (String, String) throws(ConfigError) -> T) throws(ConfigError) -> T? {
        do {
            return try load(args.configPath, job.jobID)
        } catch {
            guard kind == .cleanup, !AirlockConfig.jobStateExists(path: args.configPath, jobID: job.jobID) else { throw error }
            print("airlock-cleanup: job \(job.jobID): nothing left to clean up (the configuration does not load now: \(error))")
            return nil
        }
    }

    /// Replaces this process with `airlock-federate <kind>` from the same directory, with the same
    /// arguments and environment (the pid stays, so the runner's signals still reach the stage). A
    /// signal that arrived before is kept pending for it.
    /// - Throws: `AirlockFailure` (system) when it is not installed or cannot be started.
    static func handOver(_ kind: Kind, arguments: [String]) throws(AirlockFailure) -> Never {
        guard let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") else {
            throw AirlockFailure(.system, "cannot find airlock-\(kind.rawValue)'s own path (/proc/self/exe) to start airlock-federate beside it; is /proc mounted?")
        }
        let federate = (exe as NSString).deletingLastPathComponent + "/airlock-federate"
        let argv = [federate, kind.rawValue] + arguments
        fflush(nil)
        var cargs = argv.map { strdup($0) } + [nil]
        execv(federate, &cargs)
        let reason = String(cString: strerror(errno))
        throw AirlockFailure(.system, "this job has credentials to issue or revoke, which airlock-\(kind.rawValue) hands over to \(federate), and that cannot be started (\(reason)); install airlock-federate beside airlock-\(kind.rawValue) (the package does)")
    }
}
