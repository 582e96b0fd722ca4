import AirlockAdmin
import AirlockConfiguration
import AirlockCore
import ArgumentParser
import Delivery
import Foundation
import HTTPClient
import Identity
import RunnerContract

/// `airlock`: the platform team's admin tool.
@main
struct Airlock: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Airlock: scoped, short-lived cloud credentials for GitLab CI jobs (a custom executor).",
        version: airlockVersion,
        subcommands: [Check.self, Explain.self, Sweep.self, MetricsCommand.self, Mask.self, IssuerCommand.self, PolicyCommand.self])
}

/// Writes to stdout unbuffered, so that it interleaves correctly with the job log the simulator streams.
func say(_ text: String, terminator: String = "\n") {
    FileHandle.standardOutput.write(Data((text + terminator).utf8))
}

struct Check: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Predict what would fail a job: the configuration (file, line and key), its files, directories and executables, the sandbox, GitLab's keys.",
        discussion: "Exit codes: 0 no problem, 1 problems (each printed with what to do), 2 could not check (the configuration cannot be read).")

    @Option(help: "The Airlock configuration.")
    var config: String = AirlockConfig.defaultPath

    @Option(help: "Where the executor's executables are installed (default: beside this one).")
    var binDir: String?

    func run() async throws {
        guard FileManager.default.isReadableFile(atPath: config) else {
            say("cannot check: \(config) cannot be read (missing, or not readable by this user); pass --config FILE or create it from runner-config/airlock.toml.example")
            throw ExitCode(2)
        }
        let (problems, notes) = await AdminTools.check(configPath: config, binDir: binDir, transport: { URLSessionTransport() })
        for n in notes { say(n) }
        for p in problems { say("problem: \(p)") }
        say(problems.isEmpty ? "ok: \(config)" : "\(problems.count) problem(s) in \(config)")
        if !problems.isEmpty { throw ExitCode(1) }
    }
}

struct Explain: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Dry run without federation: verify a token (or take claims), and show each rule's first failing condition or \"matched\", and the granted profiles.")

    @Option(help: "The Airlock configuration.")
    var config: String = AirlockConfig.defaultPath

    @Option(help: "A file holding an ID token to verify against GitLab's keys, or - for stdin (never on the command line, where ps shows it; it is never printed).")
    var tokenFile: String?

    @Option(help: "A JSON file of claims to evaluate without verification.")
    var claims: String?

    @Option(help: "An audit log: apply this configuration's policy to every job it recorded a decision for, and show which would gain or lose profiles (before a policy change goes live).")
    var replay: String?

    @Flag(help: "Print JSON.")
    var json = false

    func run() async throws {
        let cfg = try AirlockConfig.load(path: config)
        if let replay {
            let lines = AdminTools.replay(config: cfg, auditLog: replay)
            let unknown = AdminTools.unreplayableClaims(cfg)
            if json {
                let enc = JSONEncoder()
                enc.outputFormatting = [.prettyPrinted, .sortedKeys]
                say(String(decoding: try enc.encode(lines), as: UTF8.self))
            } else {
                for l in lines {
                    let change = l.gained.isEmpty && l.lost.isEmpty ? "unchanged (\(l.after.isEmpty ? "none" : l.after.joined(separator: ", ")))"
                        : [l.gained.isEmpty ? nil : "gains \(l.gained.joined(separator: ", "))", l.lost.isEmpty ? nil : "loses \(l.lost.joined(separator: ", "))"].compactMap { $0 }.joined(separator: "; ")
                    say("job \(l.jobID) \(l.project) ref \(l.ref): \(change)")
                }
                let gain = lines.filter { !$0.gained.isEmpty }.count, lose = lines.filter { !$0.lost.isEmpty }.count
                say("replayed \(lines.count) job(s): \(gain) would gain, \(lose) would lose, \(lines.count - lines.filter { !$0.gained.isEmpty || !$0.lost.isEmpty }.count) unchanged")
                if !unknown.isEmpty { say("note: rules test \(unknown.joined(separator: ", ")), which decision records do not carry: those conditions fail in the replay") }
            }
            return
        }
        let data = try claims.map { path -> Data in
            guard let d = FileManager.default.contents(atPath: path) else { throw ValidationError("cannot read \(path)") }
            return d
        }
        let token = try tokenFile.map { path -> String in
            let d = path == "-" ? FileHandle.standardInput.readDataToEndOfFile() : FileManager.default.contents(atPath: path)
            guard let d, let t = String(data: d, encoding: .utf8)?.trimmingCharacters(in: .whitespacesAndNewlines), !t.isEmpty else {
                throw ValidationError("cannot read a token from \(path == "-" ? "stdin" : path)")
            }
            return t
        }
        let report = try await AdminTools.explain(config: cfg, token: token, claimsJSON: data, transport: URLSessionTransport())
        if json {
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            say(String(decoding: try enc.encode(report), as: UTF8.self))
        } else {
            say(report.text)
        }
        // 1 for a token that failed verification; claims are evaluated but never verified.
        if !report.evaluated { throw ExitCode(1) }
    }
}

struct Sweep: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Revoke the credentials of jobs that never got their cleanup, once past their timeout plus [runner] sweep_grace.")

    @Option(help: "The Airlock configuration.")
    var config: String = AirlockConfig.defaultPath

    @Flag(help: "Sweep every job now, whatever its age (only when no job is running on this runner).")
    var force = false

    func run() async throws {
        let cfg = try AirlockConfig.load(path: config)
        try Executor.useHostFingerprintKey(cfg)
        let lines = await AdminTools.sweep(config: cfg, transport: URLSessionTransport(), force: force)
        for l in lines { say(l) }
        say("sweep: \(lines.count) job(s) looked at")
    }
}

struct MetricsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "metrics",
        abstract: "Derive counters and histograms from the audit log in the Prometheus text format (node_exporter's textfile collector).")

    @Option(help: "The Airlock configuration (for [runner] audit_log).")
    var config: String = AirlockConfig.defaultPath

    @Option(help: "Write DIR/airlock.prom atomically (node_exporter --collector.textfile.directory); without it, print.")
    var textfile: String?

    func run() throws {
        let cfg = try AirlockConfig.load(path: config)
        if let textfile {
            try Metrics.writeTextfile(auditLog: cfg.runner.auditLog, directory: textfile)
        } else {
            say(Metrics.render(auditLog: cfg.runner.auditLog), terminator: "")
        }
    }
}

struct Mask: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Copy stdin to stdout through the job-log masker (diagnostics and benchmarks).")

    @Option(help: "A file with one secret per line (never pass secrets as arguments: they show in ps).")
    var secretsFile: String

    func run() throws {
        let text = try String(contentsOfFile: secretsFile, encoding: .utf8)
        let masker = StreamMasker(MaskPatterns(secrets: text.split(separator: "\n").map(String.init)))
        // As the run stage's pump reads and writes (ChildProcess.pump), from a pipe as wide.
        ChildProcess.widenPipe(0)
        let buf = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: ChildProcess.pumpBuffer)
        defer { buf.deallocate() }
        while true {
            let n = read(0, buf.baseAddress, buf.count)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            masker.feed(UnsafeBufferPointer(rebasing: buf[..<n])) { ChildProcess.writeAll(1, $0) }
        }
        masker.flush { ChildProcess.writeAll(1, $0) }
    }
}

/// `airlock issuer`: Airlock as its own OIDC issuer (issue 17).
struct IssuerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "issuer",
        abstract: "Airlock's own OIDC issuer: publish its documents, rotate its key.",
        subcommands: [Publish.self, Rotate.self])

    struct Publish: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write DIR/.well-known/openid-configuration and DIR/jwks.json for [issuer], ready for static hosting at its url.",
            discussion: "Serve DIR at [issuer] url (a bucket, a web server); airlock check fetches the documents from there and compares them with the configured keys.")

        @Option(help: "The Airlock configuration.")
        var config: String = AirlockConfig.defaultPath

        @Option(help: "The directory to write the documents into.")
        var out: String

        func run() async throws {
            let c = try AirlockConfig.load(path: config)
            for f in try IssuerTools.publish(config: c, out: out) { say("wrote \(f)") }
            say("serve \(out) at \(c.issuer?.url ?? "?") (jwks_uri \(IssuerDocuments.jwksURI(c.issuer?.url ?? "")))")
        }
    }

    struct Rotate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a new signing key and print the three steps that rotate to it with overlap.",
            discussion: "Providers cache an issuer's keys: a new key is published before it signs, and the old one stays published until every token it signed has expired.")

        @Option(help: "The Airlock configuration.")
        var config: String = AirlockConfig.defaultPath

        @Option(help: "Where to create the new key (0600; an existing file is never replaced).")
        var newKey: String

        @Option(help: "ES256 (a P-256 key) or RS256 (RSA, 3072 bits); default: the current key's. Entra verifies RSA only.")
        var algorithm: String?

        func run() async throws {
            let c = try AirlockConfig.load(path: config)
            guard let s = c.issuer else { throw AirlockFailure(.system, "\(config) has no [issuer] section") }
            let algorithm: IssuerKey.Algorithm
            if let named = self.algorithm {
                guard let a = IssuerKey.Algorithm(rawValue: named.uppercased()) else { throw ValidationError("--algorithm must be ES256 or RS256, got \(named)") }
                algorithm = a
            } else {
                do { algorithm = try IssuerKey.load(path: s.signingKeyFile).algorithm } catch {
                    throw AirlockFailure(.system, "cannot read the current signing key to make the new one of its type (\(error)); run as its owner, or pass --algorithm ES256 or RS256 (Entra verifies RSA only)")
                }
            }
            let key = try IssuerKey.generate(algorithm, path: newKey)
            let lifetime = Int(s.tokenLifetime / 60)
            say("""
            created \(newKey) (\(key.algorithm.rawValue), kid \(key.kid)). Rotate in three steps, publishing after each:
            1. publish the new key beside the current one, still signing with the current one:
                 previous_key_files = [\((s.previousKeyFiles + [newKey]).map { "\"\($0)\"" }.joined(separator: ", "))]
               airlock issuer publish --config \(config) --out DIR, serve DIR, and wait until the providers' key
               caches have it (each provider caches an issuer's keys for its own time).
            2. sign with the new key, keep the old one published:
                 signing_key_file = "\(newKey)"
                 previous_key_files = ["\(s.signingKeyFile)"]
               publish again.
            3. once every job that started before step 2 has ended (a job's credential server keeps signing
               refreshes with the key it started with) and \(lifetime) more minute(s) (token_lifetime) have
               passed, no valid token needs the old key: drop it
                 previous_key_files = []
               publish again, and remove \(s.signingKeyFile).
            airlock check compares the served documents with the configured keys at every step.
            """)
        }
    }
}

/// `airlock policy`: the effective policy for portals and reviewers (issue 18).
struct PolicyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policy",
        abstract: "Export the effective policy (JSON) and show what a policy change grants or takes away.",
        subcommands: [Export.self, Diff.self])

    struct Export: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write the effective policy: rules with their team and file, scopes, profiles and what each reaches.",
            discussion: "Deterministic (sorted keys, rules in policy order): commit it beside the policy and diff it.")

        @Option(help: "The Airlock configuration.")
        var config: String = AirlockConfig.defaultPath

        @Option(help: "json (the default) or backstage (catalog entities, YAML).")
        var format: String = "json"

        @Option(help: "Write to this file instead of standard output.")
        var out: String?

        func run() throws {
            let c = try AirlockConfig.load(path: config)
            let data: Data
            switch format {
            case "json": data = PolicyExport.json(c)
            case "backstage": data = Data(BackstageExport.yaml(c).utf8)
            default: throw ValidationError("--format must be json or backstage, got \(format)")
            }
            if let out {
                try data.write(to: URL(fileURLWithPath: out), options: .atomic)
            } else {
                FileHandle.standardOutput.write(data)
            }
            for p in c.policyProblems { FileHandle.standardError.write(Data("airlock: left out: \(p)\n".utf8)) }
        }
    }

    struct Diff: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show, per project and ref class, which profiles a policy change grants or takes away.",
            discussion: "OLD and NEW are main configuration files (with their team files, through [policy] include; relative includes resolve against each file's directory, so two checkouts of a policy repository compare). Exit 0: no change; 1: changes.")

        @Argument(help: "The configuration before the change.")
        var old: String

        @Argument(help: "The configuration after the change.")
        var new: String

        func run() throws {
            let before = try AirlockConfig.load(path: old), after = try AirlockConfig.load(path: new)
            for p in after.policyProblems { print("left out in NEW: \(p)") }
            let changes = PolicyDiff.changes(old: before.policy, new: after.policy)
            let rules = PolicyDiff.ruleChanges(old: before.policy, new: after.policy)
            if changes.isEmpty && rules.isEmpty {
                print("no grant changes")
                return
            }
            for c in changes { print(c.line) }
            if changes.isEmpty { print("no grant changes for the projects and ref classes the rules name; rules that differ:") }
            for r in rules { print(r) }
            throw ExitCode(1)
        }
    }
}
