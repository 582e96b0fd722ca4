public import ConfigSyntax
public import Federation
import Identity
import Ledger
public import RunnerContract

/// What the stages after prepare (run, and a cleanup with nothing to revoke) read of the
/// configuration a job was prepared with, compiled by prepare into the job's state directory
/// (issue 19): the runner's settings, which variables and tokens to keep from the job, how each
/// profile is delivered, and which of Airlock's files to hide. Reading it is one small JSON document
/// instead of the TOML snapshot with every provider, profile and rule checked again (0.6 ms a stage
/// with a five-line configuration, 2.5 ms with the example's).
///
/// It is derived from the snapshot (`AirlockConfig.saveSnapshot` writes both), never edited: a
/// missing or unreadable view falls back to parsing the snapshot, as before it existed.
public struct JobView: Sendable {
    /// The configuration's path (hidden from the job, named in messages).
    public var path: String
    public var runner: RunnerSettings
    /// The variables that carry the ID tokens Airlock consumes (`consumedTokenVariables`).
    public var tokenVariables: [String]
    /// `[gitlab] issuer`, and the audiences Airlock accepts from it: a token with both is scrubbed
    /// from every script wherever it appears. Nil issuer: no `[gitlab]`, nothing to scrub.
    public var tokenIssuer: String?
    public var tokenAudiences: [String]
    /// How each profile reaches a stage: by name.
    public var deliveries: [String: Delivery]
    /// Airlock's own files a job must not read (`referencedFiles`).
    public var hiddenFiles: [String]

    public struct Delivery: Sendable, Equatable {
        public var mode: DeliveryMode
        /// The stages it is delivered to; nil for every stage.
        public var stages: [String]?
        public init(mode: DeliveryMode, stages: [String]?) {
            self.mode = mode
            self.stages = stages
        }
    }

    /// The view of a parsed configuration.
    public init(_ config: AirlockConfig) {
        path = config.path
        runner = config.runner
        tokenVariables = config.consumedTokenVariables
        tokenIssuer = config.gitlab?.issuer
        tokenAudiences = config.gitlab.map { g in
            Array(Set([g.audience] + config.providers.values.compactMap(\.audienceToken?.audience))).sorted()
        } ?? []
        deliveries = config.profiles.mapValues { Delivery(mode: $0.deliver, stages: $0.stages) }
        hiddenFiles = config.referencedFiles.map(\.path)
    }

    /// The view's file in a job's state directory.
    public static let file = JobStateStore.File.configView

    /// The view as JSON (durations as their decimal text, which reads back to the same Double).
    public var json: String {
        let r = runner
        func seconds(_ d: Double) -> JSONValue { .string("\(d)") }
        var runnerObject: [String: JSONValue] = [
            "builds_root": .string(r.buildsRoot), "cache_root": .string(r.cacheRoot), "state_dir": .string(r.stateDir),
            "homes_root": .string(r.homesRoot), "audit_log": .string(r.auditLog), "isolation": .string(r.isolation.rawValue),
            "graceful_kill": seconds(r.gracefulKill), "bwrap": .string(r.bwrap), "federation_timeout": seconds(r.federationTimeout),
            "sweep_grace": seconds(r.sweepGrace), "secrets_root": .string(r.secretsRoot),
            "endpoint_min_validity": seconds(r.endpointMinValidity), "endpoint_requests_per_second": seconds(r.endpointRequestsPerSecond),
            "job_uid_first": .int(Int(r.jobUIDs.lowerBound)), "job_uid_last": .int(Int(r.jobUIDs.upperBound)),
            "block_metadata": .bool(r.blockMetadata), "nft": .string(r.nft), "hidden_paths": .array(r.hiddenPaths.map { .string($0) }),
        ]
        runnerObject["job_path"] = r.jobPath.map { .string($0) } ?? .null
        let profiles = deliveries.mapValues { d -> JSONValue in
            .object(["deliver": .string(d.mode.rawValue), "stages": d.stages.map { .array($0.map { .string($0) }) } ?? .null])
        }
        return JSONValue.compactJSON([
            "path": .string(path), "runner": .object(runnerObject),
            "token_variables": .array(tokenVariables.map { .string($0) }),
            "token_issuer": tokenIssuer.map { .string($0) } ?? .null,
            "token_audiences": .array(tokenAudiences.map { .string($0) }),
            "profiles": .object(profiles), "hidden_files": .array(hiddenFiles.map { .string($0) }),
        ])
    }

    /// Reads a view written by `json`; nil for anything else (a field missing, of the wrong type, or
    /// out of range), so that the caller falls back to the snapshot.
    public init?(json bytes: [UInt8]) {
        guard let root = try? JSONReader.parse(bytes), let r = root["runner"], r.isObject else { return nil }
        func text(_ key: String) -> String? { r[key]?.string }
        func seconds(_ key: String) -> Double? { r[key]?.string.flatMap(Double.init) }
        guard let buildsRoot = text("builds_root"), let cacheRoot = text("cache_root"), let stateDir = text("state_dir"),
              let homesRoot = text("homes_root"), let auditLog = text("audit_log"),
              let isolation = text("isolation").flatMap(Isolation.init(rawValue:)),
              let grace = seconds("graceful_kill"), let bwrap = text("bwrap"), let fedTimeout = seconds("federation_timeout"),
              let sweepGrace = seconds("sweep_grace"), let secretsRoot = text("secrets_root"),
              let minValidity = seconds("endpoint_min_validity"), let rps = seconds("endpoint_requests_per_second"),
              let first = r["job_uid_first"]?.int64.flatMap(UInt32.init(exactly:)),
              let last = r["job_uid_last"]?.int64.flatMap(UInt32.init(exactly:)), first <= last,
              let blockMetadata = r["block_metadata"]?.bool, let nft = text("nft"), let hidden = r["hidden_paths"]?.strings,
              let jobPath = r["job_path"], jobPath.isNull || jobPath.string != nil,
              let path = root["path"]?.string, let tokenVariables = root["token_variables"]?.strings,
              let issuer = root["token_issuer"], issuer.isNull || issuer.string != nil,
              let audiences = root["token_audiences"]?.strings, let hiddenFiles = root["hidden_files"]?.strings,
              case .object(let profileMembers)? = root["profiles"] else { return nil }
        var deliveries: [String: Delivery] = [:]
        for (name, p) in profileMembers {
            guard let mode = p["deliver"]?.string.flatMap(DeliveryMode.init(rawValue:)), let stages = p["stages"],
                  stages.isNull || stages.strings != nil else { return nil }
            deliveries[name] = Delivery(mode: mode, stages: stages.strings)
        }
        self.path = path
        runner = RunnerSettings(
            buildsRoot: buildsRoot, cacheRoot: cacheRoot, stateDir: stateDir, homesRoot: homesRoot,
            auditLog: auditLog, isolation: isolation, gracefulKill: grace, jobPath: jobPath.string, bwrap: bwrap,
            federationTimeout: fedTimeout, sweepGrace: sweepGrace, secretsRoot: secretsRoot,
            endpointMinValidity: minValidity, endpointRequestsPerSecond: rps, jobUIDs: first...last,
            blockMetadata: blockMetadata, nft: nft, hiddenPaths: hidden)
        self.tokenVariables = tokenVariables
        tokenIssuer = issuer.string
        tokenAudiences = audiences
        self.deliveries = deliveries
        self.hiddenFiles = hiddenFiles
    }
}

extension AirlockConfig {
    /// What a stage after prepare runs with: the view prepare compiled into the job's state
    /// directory; without one (a job an earlier Airlock prepared, or a view that does not read), the
    /// view of `forJob`'s configuration.
    /// - Throws: `ConfigError` when there is no view and no configuration loads.
    public static func viewForJob(path: String, jobID: String) throws(ConfigError) -> JobView {
        let state = JobStateStore.directory(stateDir: stateDirectory(path: path), jobID: jobID)
        // The file is named by the path the stage was given, as `forJob` names it.
        var view: JobView
        if let compiled = FileContents.read("\(state)/\(JobView.file)").flatMap({ JobView(json: $0) }) {
            view = compiled
        } else {
            view = JobView(try forJob(path: path, jobID: jobID))
        }
        view.path = path
        return view
    }
}
