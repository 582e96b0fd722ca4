import ConfigSyntax
public import AirlockConfiguration
import Foundation
public import Identity
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

    /// Runs `kind` with the process's arguments and environment, and exits.
    /// `transport` is given by the executables that talk to the network (prepare, cleanup).
    public static func main(_ kind: Kind, transport: TransportFactory? = nil) async -> Never {
        let env = RunnerEnvironment(ProcessInfo.processInfo.environment)
        // prepare and cleanup finish what they started when the runner signals them (see Termination);
        // the run stage forwards signals to the job instead (StageWatcher).
        if kind == .prepare || kind == .cleanup { Termination.install() }
        let code: Int32
        let configPath = (try? ExecutorArguments(Array(CommandLine.arguments.dropFirst())))?.configPath ?? AirlockConfig.defaultPath
        do {
            let args = try ExecutorArguments(Array(CommandLine.arguments.dropFirst()))
            code = try await run(kind, args: args, env: env, transport: transport ?? HTTP.none)
        } catch let e as any BlamedError {
            code = report(kind, e, env: env, configPath: configPath)
        } catch {
            code = report(kind, AirlockFailure(.system, "unexpected error: \(error)"), env: env, configPath: configPath)
        }
        exit(code)
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
        do {
            Fingerprint.use(try Fingerprint.hostKey(directory: config.runner.stateDir))
        } catch {
            throw AirlockFailure(.system, "the fingerprint key: \(error); check [runner] state_dir")
        }
    }

    /// Runs one stage; returns the exit code for success or a script failure.
    /// - Throws: `BlamedError` for Airlock's own failures.
    public static func run(_ kind: Kind, args: ExecutorArguments, env: RunnerEnvironment, transport makeTransport: TransportFactory) async throws -> Int32 {
        // The stages after prepare run with the configuration their job was prepared with.
        let config: AirlockConfig
        if kind == .run || kind == .cleanup {
            let jobID = try JobContext(env).jobID
            let loaded: Result<AirlockConfig, ConfigError>
            do { loaded = .success(try AirlockConfig.forJob(path: args.configPath, jobID: jobID)) } catch { loaded = .failure(error) }
            switch loaded {
            case .success(let c): config = c
            case .failure(let error):
                // A cleanup with no job state left (a repeated one, or after a prepare that failed
                // early) has nothing to do, whatever the file says now.
                guard kind == .cleanup, !AirlockConfig.jobStateExists(path: args.configPath, jobID: jobID) else { throw error }
                print("airlock-cleanup: job \(jobID): nothing left to clean up (the configuration does not load now: \(error))")
                return 0
            }
        } else {
            config = try AirlockConfig.load(path: args.configPath)
        }
        if kind != .config {
            do {
                try useHostFingerprintKey(config)
            } catch {
                if kind == .prepare, let job = try? JobContext(env) { Stages.auditPrepareFailure(job, error, config: config) }
                throw error
            }
        }
        let transport = makeTransport()
        switch kind {
        case .config:
            let out = try Stages.config(config: config, env: env)
            FileHandle.standardOutput.write(out)
            return 0
        case .prepare:
            try await Stages.prepare(config: config, env: env, transport: transport)
            return 0
        case .run:
            guard args.positional.count == 2 else {
                throw AirlockFailure(.system, "airlock-run expects <script> <stage>, got \(args.positional.count) argument(s); check run_args in the runner's config.toml")
            }
            return try Stages.run(config: config, env: env, script: args.positional[0], stage: args.positional[1])
        case .cleanup:
            try await Stages.cleanup(config: config, env: env, transport: transport)
            return 0
        }
    }
}
