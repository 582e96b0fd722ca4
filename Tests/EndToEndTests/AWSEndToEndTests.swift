import AirlockTesting
import Foundation
import Identity
import Testing

/// Issue 4 through the built executables against moto's server (federation.md A1, moto section)
/// and, for rejections, a fake STS that answers with STS's error XML.
@Suite(.serialized)
struct AWSEndToEndTests {
    static let audience = "https://airlock.test"

    static func config(_ issuer: TestIssuer, sts: String, second: String? = nil, deliver: String = "env",
                       stages: String? = #"["build_script", "after_script"]"#) -> String {
        var s = """
        [gitlab]
        issuer = "\(issuer.issuer)"
        audience = "\(audience)"

        \(PeerTables.aws("aws-main", sts: sts, region: "eu-west-1"))
        [profiles.deploy-prod]
        provider = "aws-main"
        role_arn = "arn:aws:iam::123456789012:role/gitlab-{project_id}"
        session_name = "gitlab-{project_id}-{job_id}"
        max_duration = "1h"
        deliver = "\(deliver)"
        \(stages.map { "stages = \($0)" } ?? "")

        """
        var grants = "\"deploy-prod\""
        if let second {
            s += """
            [providers.aws-other]
            type = "aws"
            sts_endpoint = "\(second)"

            [profiles.second]
            provider = "aws-other"
            role_arn = "arn:aws:iam::123456789012:role/second"

            """
            grants += ", \"second\""
        }
        s += """
        [[rules]]
        name = "main of project 42"
        project_id = 42
        ref = "main"
        grant = [\(grants)]
        """
        return s
    }

    static func job(_ issuer: TestIssuer, _ script: [String], moto: String) -> SimulatedJob {
        var j = SimulatedJob(script: script)
        j.idTokens = ["AIRLOCK_ID_TOKEN": issuer.mint(issuer.claims(for: j, audience: audience))]
        j.variables = ["AWS_ENDPOINT_URL_STS": moto, "AWS_ENDPOINT_URL": moto]
        return j
    }

    /// What the runner gives prepare_exec for `job`, for tests that drive prepare directly.
    static func prepareEnvironment(_ world: TestWorld, _ job: SimulatedJob, timeout: Int = 60) throws -> [String: String] {
        try world.runnerEnvironment(jobID: job.jobID, timeout: timeout, variables: [
            "CI_PROJECT_PATH": job.projectPath, "AIRLOCK_ID_TOKEN": job.idTokens["AIRLOCK_ID_TOKEN"] ?? ""])
    }

    static func audit(_ w: TestWorld) -> [[String: Any]] { w.auditRecords() }

    /// Starts prepare_exec for `job` and returns once its ledger holds a credential (stderr piped).
    static func prepareUntilIssued(_ world: TestWorld, _ job: SimulatedJob, timeout: Int = 60,
                                   sourceLocation: SourceLocation = #_sourceLocation) throws -> (Process, Pipe) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "\(world.binDir)/airlock-prepare")
        p.arguments = ["--config", world.configPath]
        p.environment = try prepareEnvironment(world, job, timeout: timeout)
        let err = Pipe()
        p.standardOutput = FileHandle.nullDevice
        p.standardError = err
        try p.run()
        let ledger = "\(world.stateDir)/jobs/\(job.jobID)/ledger.json"
        let until = Date().addingTimeInterval(20)
        while !FileManager.default.fileExists(atPath: ledger) && Date() < until { Thread.sleep(forTimeInterval: 0.02) }
        #expect(FileManager.default.fileExists(atPath: ledger), sourceLocation: sourceLocation)
        return (p, err)
    }

    @Test(arguments: ["env", "file"])
    func jobCallsSTSWithInjectedCredentials(deliver: String) throws {
        let moto = try MotoServer()
        let issuer = try TestIssuer()
        let world = try TestWorld(extra: Self.config(issuer, sts: moto.url, deliver: deliver))
        var job = Self.job(issuer, [
            "aws sts get-caller-identity --output json",
            #"echo "id-token=[$AIRLOCK_ID_TOKEN]""#,
            // The secret as the SDK resolved it (env or shared credentials file), kept for the checks below.
            #"python3 -c 'import sys, botocore.session as s; c = s.get_session().get_credentials().get_frozen_credentials(); open(sys.argv[1], "w").write(c.secret_key + "\n" + c.token)' "$CI_PROJECT_DIR/../resolved.txt""#,
        ], moto: moto.url)
        job.afterScript = ["echo after-has-key=${AWS_ACCESS_KEY_ID:+yes}${AWS_SHARED_CREDENTIALS_FILE:+yes}"]
        let r = world.simulate(job) { $0.runnerMasking = false }
        #expect(r.status == "success", "\(TestWorld.redacted(r.log))")
        #expect(r.log.contains("\"Arn\": \"arn:aws:sts::123456789012:assumed-role/gitlab-42/gitlab-42-\(job.jobID)\""), "\(TestWorld.redacted(r.log))")
        #expect(r.output.contains("id-token=[]\n"), "\(TestWorld.redacted(r.output))")
        #expect(r.output.contains("after-has-key=yes\n"))
        #expect(r.log.contains("Airlock: issued deploy-prod"))
        let records = Self.audit(world)
        let issued = try #require(records.first { $0["event"] as? String == "issued" })
        #expect(issued["role_arn"] as? String == "arn:aws:iam::123456789012:role/gitlab-42")
        #expect(issued["session_name"] as? String == "gitlab-42-\(job.jobID)")
        #expect((issued["access_key_id"] as? String)?.hasPrefix("ASIA") == true)
        let revoked = try #require(records.first { $0["event"] as? String == "revoked" })
        #expect(revoked["outcome"] as? String == "expires_at")
        #expect(revoked["expires_at"] as? String == issued["expires_at"] as? String)
        #expect(!FileManager.default.fileExists(atPath: "\(world.stateDir)/jobs/\(job.jobID)"))
        #expect(!FileManager.default.fileExists(atPath: "\(world.stateDir)/secrets/\(job.jobID)"))
        #expect(!FileManager.default.fileExists(atPath: "\(world.secretsRoot)/\(job.jobID)"))
        // The secret key and session token the job used are in no log and not in the audit.
        let resolved = try String(contentsOfFile: "\(try #require(world.hostBuildsDir()))/platform/resolved.txt", encoding: .utf8)
            .split(separator: "\n").map(String.init)
        #expect(resolved.count == 2 && resolved[0].count == 40 && resolved[1].count > 100, "\(resolved.map(\.count))")
        for secret in resolved {
            let leaked = r.log.contains(secret) || r.runnerLog.contains(secret) || world.auditText.contains(secret)
            #expect(!leaked, "a secret of \(secret.count) characters is in the job log, the runner log or the audit log")
        }
        // Issue 13: the fingerprint is HMAC-SHA256 (128 bits) under the host's key in state_dir,
        // which the audit names; the plain hash a log reader could compute from a guess is nowhere.
        let keyBytes = try #require(FileManager.default.contents(atPath: "\(world.stateDir)/\(Fingerprint.keyFile)"))
        let key = Fingerprint.Key(bytes: Array(keyBytes))
        let accessKey = try #require(issued["access_key_id"] as? String)
        let joined = [accessKey, resolved[0], resolved[1]].joined(separator: "\u{0}")  // AccessKeyId, SecretAccessKey, SessionToken
        #expect(issued["fingerprint"] as? String == Fingerprint.of(joined, key: key))
        #expect(issued["fingerprint_key"] as? String == key.id && revoked["fingerprint_key"] as? String == key.id)
        #expect(revoked["fingerprint"] as? String == issued["fingerprint"] as? String)
        let fp = try #require(issued["fingerprint"] as? String)
        #expect(r.log.contains(fp) && r.runnerLog.contains(fp), "prepare's and cleanup's lines name the fingerprint")
        // What the fingerprint used to be (12 hex of plain SHA-256), which anyone could compute from a guess.
        let plainFile = "\(world.root)/plain.txt"
        FileManager.default.createFile(atPath: plainFile, contents: Data(joined.utf8), attributes: [.posixPermissions: 0o600])
        let plain = String(TestWorld.launch("/usr/bin/sha256sum", [plainFile], environment: nil).stdout.prefix(12))
        #expect(plain.count == 12)
        let plainHashSeen = world.auditText.contains(plain) || r.log.contains(plain) || r.runnerLog.contains(plain)
        #expect(!plainHashSeen)
        #expect(r.stages.contains { $0.stage == "get_sources" })
    }

    @Test func onlyTheNamedStagesReceiveCredentials() throws {
        let moto = try MotoServer()
        let issuer = try TestIssuer()
        let world = try TestWorld(extra: Self.config(issuer, sts: moto.url))
        let probe = #"echo "probe-$STAGE_NAME=$([ -n "$AWS_SECRET_ACCESS_KEY" ] && echo present || echo absent)""#
        var job = Self.job(issuer, ["STAGE_NAME=build_script; \(probe)"], moto: moto.url)
        job.afterScript = ["STAGE_NAME=after_script; \(probe)"]
        job.stageProbes = ["prepare_script": ["STAGE_NAME=prepare_script; \(probe)"], "get_sources": ["STAGE_NAME=get_sources; \(probe)"]]
        let r = world.simulate(job) { $0.runnerMasking = false }
        #expect(r.status == "success", "\(TestWorld.redacted(r.log))")
        #expect(r.output.contains("probe-prepare_script=absent\n"), "\(TestWorld.redacted(r.output))")
        #expect(r.output.contains("probe-get_sources=absent\n"))
        #expect(r.output.contains("probe-build_script=present\n"))
        #expect(r.output.contains("probe-after_script=present\n"))
    }

    /// A profile without `stages` goes to build_script, every `step_*` and after_script, and never to
    /// the runner's own stages (sources, cache, artifacts: they run the runner's helper commands with
    /// the job's variables, and need no cloud credentials).
    @Test func defaultStagesAreTheScriptStepsOnly() throws {
        let moto = try MotoServer()
        let issuer = try TestIssuer()
        let world = try TestWorld(extra: Self.config(issuer, sts: moto.url, stages: nil))
        let probe = #"echo "probe-$STAGE_NAME=$([ -n "$AWS_SECRET_ACCESS_KEY$AWS_SHARED_CREDENTIALS_FILE" ] && echo present || echo absent)""#
        var job = Self.job(issuer, ["STAGE_NAME=build_script; \(probe)"], moto: moto.url)
        job.afterScript = ["STAGE_NAME=after_script; \(probe)"]
        let runnerStages = ["prepare_script", "get_sources", "restore_cache", "download_artifacts", "archive_cache", "upload_artifacts_on_success", "cleanup_file_variables"]
        for stage in runnerStages + ["step_release"] { job.stageProbes[stage] = ["STAGE_NAME=\(stage); \(probe)"] }
        let r = world.simulate(job) { $0.runnerMasking = false }
        #expect(r.status == "success", "\(TestWorld.redacted(r.log))")
        for stage in runnerStages {
            #expect(r.output.contains("probe-\(stage)=absent\n"), "\(stage): \(r.output)")
        }
        for stage in ["build_script", "step_release", "after_script"] {
            #expect(r.output.contains("probe-\(stage)=present\n"), "\(stage): \(r.output)")
        }
        #expect(r.stages.map(\.stage) == ["prepare_script", "get_sources", "restore_cache", "download_artifacts", "build_script", "step_release",
                                          "after_script", "archive_cache", "upload_artifacts_on_success", "cleanup_file_variables"])
        // A failing job runs the _on_failure stages instead: nothing there either.
        var failing = Self.job(issuer, ["STAGE_NAME=build_script; \(probe)", "exit 1"], moto: moto.url)
        for stage in ["archive_cache", "upload_artifacts_on_failure"] { failing.stageProbes[stage] = ["STAGE_NAME=\(stage == "archive_cache" ? "archive_cache_on_failure" : stage); \(probe)"] }
        let f = world.simulate(failing) { $0.runnerMasking = false }
        #expect(f.status == "failed" && f.stages.map(\.stage).contains("archive_cache_on_failure"), "\(f.log)")
        for stage in ["archive_cache_on_failure", "upload_artifacts_on_failure"] {
            #expect(f.output.contains("probe-\(stage)=absent\n"), "\(stage): \(f.output)")
        }
        #expect(f.output.contains("probe-build_script=present\n"))
    }

    @Test func everyEncodingOfTheSecretIsMasked() throws {
        let moto = try MotoServer()
        let issuer = try TestIssuer()
        let world = try TestWorld(extra: Self.config(issuer, sts: moto.url))
        let dump = "$AWS_ACCESS_KEY_ID $AWS_SECRET_ACCESS_KEY $AWS_SESSION_TOKEN"
        let job = Self.job(issuer, [
            "echo \"plain: \(dump)\"",
            "printf '%s' \"$AWS_SECRET_ACCESS_KEY\" | base64 -w0; echo",
            "printf 'x%s' \"$AWS_SECRET_ACCESS_KEY\" | base64 -w0; echo",
            "printf '%s' \"$AWS_SESSION_TOKEN\" | base64 -w0; echo",
            "python3 -c 'import os,urllib.parse; print(urllib.parse.quote(os.environ[\"AWS_SECRET_ACCESS_KEY\"], safe=\"\"))'",
            "python3 -c 'import os,urllib.parse; print(urllib.parse.quote(os.environ[\"AWS_SESSION_TOKEN\"]))'",
            "python3 -c 'import os,json; print(json.dumps({\"k\": os.environ[\"AWS_SECRET_ACCESS_KEY\"]}))'",
            "python3 -c 'import os,sys,time\nfor ch in os.environ[\"AWS_SECRET_ACCESS_KEY\"]:\n  sys.stdout.write(ch); sys.stdout.flush(); time.sleep(0.002)\nprint()'",
            "echo \"$AWS_SECRET_ACCESS_KEY\" >&2",
            // Issue 13: the first half on stdout, the rest on stderr.
            #"printf 'split=%s' "${AWS_SECRET_ACCESS_KEY:0:20}"; printf '%s\n' "${AWS_SECRET_ACCESS_KEY:20}" >&2"#,
            "env > \"$CI_PROJECT_DIR/../job-env.txt\"",
        ], moto: moto.url)
        let r = world.simulate(job) { $0.runnerMasking = false }
        #expect(r.status == "success", "\(TestWorld.redacted(r.log))")
        let envFile = try String(contentsOfFile: "\(try #require(world.hostBuildsDir()))/platform/job-env.txt", encoding: .utf8)
        let secrets = Self.values(envFile, ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"], separator: "=")
        #expect(secrets.count == 2)
        for (name, value) in secrets {
            let b64 = Data(value.utf8).base64EncodedString()
            let url = value.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? value
            for (form, text) in [("plain", value), ("base64", String(b64.dropLast(4))), ("url", url), ("prefix", String(value.prefix(24))), ("suffix", String(value.suffix(24)))] {
                let inLog = r.log.contains(text), inRunnerLog = r.runnerLog.contains(text)
                #expect(!inLog, "\(name) leaked as \(form)")
                #expect(!inRunnerLog, "\(name) in the runner log as \(form)")
            }
            let audit = try String(contentsOfFile: world.auditLog, encoding: .utf8)
            #expect(!audit.contains(value))
            if name == "AWS_SECRET_ACCESS_KEY" {
                let halves = [String(value.prefix(20)), String(value.dropFirst(20))]
                let splitLeaked = halves.contains { r.log.contains($0) }
                #expect(!splitLeaked, "a half of the secret split across stdout and stderr is in the log")
                let split = r.output.contains("split=[MASKED]\n")
                #expect(split, "\(TestWorld.redacted(r.output))")
            }
        }
        // Computed first: a failing expectation would print the log, and with it the secret.
        let masked1 = r.log.components(separatedBy: "[MASKED]").count >= 9
        #expect(masked1, "\(TestWorld.redacted(r.log))")
    }

    /// Issue 13 as its reporter tried it, through the executor with moto's credentials delivered as
    /// a file: the file and the key printed with base64 (76 columns), xxd -p, od, upper-case hex,
    /// JSON with \u escapes, the session token wrapped at 50 columns, 30 characters then 1.2 s of
    /// silence then the rest, and the same split across stdout and stderr. Neither the job log nor
    /// the runner log gives back an 8-byte piece of either secret in any decoding.
    @Test func theLeakHuntFindsNothingInTheJobLog() throws {
        let moto = try MotoServer()
        let issuer = try TestIssuer()
        let world = try TestWorld(extra: Self.config(issuer, sts: moto.url, deliver: "file"))
        let job = Self.job(issuer, [
            #"F="$AWS_SHARED_CREDENTIALS_FILE"; S=$(sed -n 's/^aws_secret_access_key = //p' "$F"); T=$(sed -n 's/^aws_session_token = //p' "$F")"#,
            #"cp "$F" "$CI_PROJECT_DIR/../creds.txt"; echo "lengths=${#S}/${#T}""#,
            #"base64 "$F""#,
            #"printf %s "$S" | base64"#,
            #"printf %s "$S" | xxd -p"#,
            #"printf %s "$S" | od -An -tx1"#,
            #"printf %s "$S" | xxd -p -u -c 64"#,
            #"python3 -c 'import sys; print("".join(c if c.isalnum() else "\\u%04x" % ord(c) for c in sys.argv[1]))' "$S""#,
            #"printf %s "$T" | base64 -w 50"#,
            #"printf 'paused=%s' "${S:0:30}"; sleep 1.2; printf '%s\n' "${S:30}""#,
            #"printf 'split=%s' "${T:0:30}"; sleep 1.2; printf '%s\n' "${T:30}" >&2"#,
        ], moto: moto.url)
        let r = world.simulate(job) { $0.runnerMasking = false }
        #expect(r.status == "success", "\(TestWorld.redacted(r.log))")
        let creds = try String(contentsOfFile: "\(try #require(world.hostBuildsDir()))/platform/creds.txt", encoding: .utf8)
        let secrets = Self.values(creds, ["aws_secret_access_key", "aws_session_token"], separator: " = ")
        #expect(secrets.count == 2)
        #expect(r.output.contains("lengths=\(secrets["aws_secret_access_key"]?.count ?? -1)/\(secrets["aws_session_token"]?.count ?? -1)\n"))
        for (name, value) in secrets {
            // The hunter finds it when it is there: in the file the job copied.
            #expect(!LeakHunter.recoverable(value, in: creds).isEmpty)
            let inLog = LeakHunter.recoverable(value, in: r.log), inRunnerLog = LeakHunter.recoverable(value, in: r.runnerLog)
            #expect(inLog.isEmpty, "\(name) recoverable from the job log by: \(inLog.joined(separator: ", "))")
            #expect(inRunnerLog.isEmpty, "\(name) recoverable from the runner log by: \(inRunnerLog.joined(separator: ", "))")
        }
        let paused = r.output.contains("paused=[MASKED][MASKED]\n"), split = r.output.contains("split=[MASKED][MASKED]\n")
        #expect(paused && split, "\(TestWorld.redacted(r.output))")
    }

    /// The values of `keys` in `text`'s "key<separator>value" lines (an env dump, a credentials file).
    static func values(_ text: String, _ keys: [String], separator: String) -> [String: String] {
        var out: [String: String] = [:]
        for line in text.split(separator: "\n") {
            for k in keys where line.hasPrefix(k + separator) { out[k] = String(line.dropFirst(k.count + separator.count)) }
        }
        return out
    }

    @Test func secondProviderDownRevokesTheFirstAndIsASystemFailure() throws {
        let moto = try MotoServer()
        let issuer = try TestIssuer()
        let world = try TestWorld(runnerExtra: "federation_timeout = \"3s\"", extra: Self.config(issuer, sts: moto.url, second: "http://127.0.0.1:9"))
        let job = Self.job(issuer, [#"echo "ran-$((6*7))""#], moto: moto.url)
        let r = world.simulate(job)
        #expect(r.failureReason == "system_failure", "\(TestWorld.redacted(r.log))")
        #expect(r.log.contains("profile \"second\" (provider \"aws-other\"): ConnectionFailed"))
        let present1 = r.output.contains("ran-42")
        #expect(!present1, "the job ran")
        let records = Self.audit(world)
        let issued = records.filter { $0["event"] as? String == "issued" }
        let revoked = records.filter { $0["event"] as? String == "revoked" }
        #expect(!issued.isEmpty)
        // Every credential issued in any attempt is accounted for by a revocation record.
        #expect(Set(issued.compactMap { $0["credential_id"] as? String }) == Set(revoked.compactMap { $0["credential_id"] as? String }))
        #expect(records.contains { $0["event"] as? String == "federation_failed" && $0["code"] as? String == "ConnectionFailed" })
        #expect(!FileManager.default.fileExists(atPath: "\(world.stateDir)/jobs/\(job.jobID)/ledger.json"))
    }

    @Test func rejectedIdentityIsABuildFailure() throws {
        let moto = try MotoServer()
        // The refusal comes after moto has issued the first profile, so that there is one to roll back.
        let sts = try FakeSTS.rejecting(code: "InvalidIdentityToken", delay: 1)
        let issuer = try TestIssuer()
        let world = try TestWorld(extra: Self.config(issuer, sts: moto.url, second: sts.baseURL))
        let job = Self.job(issuer, [#"echo "ran-$((6*7))""#], moto: moto.url)
        let r = world.simulate(job)
        #expect(r.failureReason == "script_failure", "\(TestWorld.redacted(r.log))")
        #expect(r.prepareAttempts == 1, "\(TestWorld.redacted(r.log))")
        #expect(r.log.contains("InvalidIdentityToken"))
        let records = Self.audit(world)
        let issued = records.filter { $0["event"] as? String == "issued" }.compactMap { $0["credential_id"] as? String }
        let revoked = records.filter { $0["event"] as? String == "revoked" }.compactMap { $0["credential_id"] as? String }
        #expect(issued.count == 1 && Set(issued) == Set(revoked), "\(records)")
        let present2 = r.output.contains("ran-42")
        #expect(!present2, "the job ran")
    }

    @Test func cancelAndDoubleCleanupLeaveTheLedgerEmpty() throws {
        let moto = try MotoServer()
        let issuer = try TestIssuer()
        let world = try TestWorld(extra: Self.config(issuer, sts: moto.url))
        let job = Self.job(issuer, ["sleep 60"], moto: moto.url)
        let r = world.simulate(job) { $0.cancelAfter = 1 }
        #expect(r.status == "canceled")
        let env = try world.runnerEnvironment(jobID: job.jobID)
        let again = world.execute("airlock-cleanup", environment: env)
        #expect(again.code == 0)
        let records = Self.audit(world)
        let issued = records.filter { $0["event"] as? String == "issued" }.compactMap { $0["credential_id"] as? String }
        let revoked = records.filter { $0["event"] as? String == "revoked" }.compactMap { $0["credential_id"] as? String }
        #expect(issued.count == 1)
        #expect(revoked == issued)  // revoked once, not twice
        #expect(again.stdout.contains("nothing left to clean"), "\(again.stdout)")
        #expect(!FileManager.default.fileExists(atPath: "\(world.stateDir)/jobs/\(job.jobID)"))
    }

    /// Two prepares SIGKILLed after issuing (the runner host crashed): `airlock sweep` without
    /// `--force` settles the one whose job timeout + sweep_grace is over and leaves the other alone.
    @Test func prepareSIGKILLedAfterIssuingIsSettledBySweepOnceItsTimeIsOver() throws {
        let moto = try MotoServer()
        let hang = try FakeSTS.hanging(30)
        defer { hang.stop() }
        let issuer = try TestIssuer()
        let world = try TestWorld(runnerExtra: "federation_timeout = \"60s\"\nsweep_grace = \"1s\"",
                                  extra: Self.config(issuer, sts: moto.url, second: hang.baseURL))
        // The first profile is issued (moto) while the second hangs: kill prepare then.
        let short = Self.job(issuer, [], moto: moto.url), long = Self.job(issuer, [], moto: moto.url)
        for (job, timeout) in [(short, 2), (long, 3600)] {
            let (p, _) = try Self.prepareUntilIssued(world, job, timeout: timeout)
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
        }
        // The short job's timeout (2 s) + grace (1 s) runs out; until then sweep leaves it alone too.
        var lines = ""
        let until = Date().addingTimeInterval(60)
        while Date() < until {
            let swept = world.run(["sweep", "--config", world.configPath])
            lines = swept.stdout + swept.stderr
            if lines.contains("job \(short.jobID): ledger settled, state removed") { break }
            #expect(lines.contains("job \(short.jobID): still within its timeout + grace"), "\(lines)")
            Thread.sleep(forTimeInterval: 0.5)
        }
        #expect(lines.contains("job \(short.jobID): ledger settled, state removed"), "\(lines)")
        #expect(lines.contains("job \(long.jobID): still within its timeout + grace"), "\(lines)")
        let records = Self.audit(world)
        let revoked = records.filter { $0["event"] as? String == "revoked" && $0["reason"] as? String == "sweep" }
        #expect(revoked.count == 1 && revoked.first?["job_id"] as? String == "\(short.jobID)", "\(revoked)")
        #expect(revoked.first?["profile"] as? String == "deploy-prod")
        #expect(records.contains { $0["event"] as? String == "swept" && $0["job_id"] as? String == "\(short.jobID)" && $0["outcome"] as? String == "settled" })
        #expect(!FileManager.default.fileExists(atPath: "\(world.stateDir)/jobs/\(short.jobID)"))
        #expect(FileManager.default.fileExists(atPath: "\(world.stateDir)/jobs/\(long.jobID)/ledger.json"))
        // The operator's way out for the other one.
        let forced = world.run(["sweep", "--config", world.configPath, "--force"])
        #expect(forced.stdout.contains("job \(long.jobID): ledger settled, state removed"), "\(forced.stdout)")
    }

    /// The runner's SIGTERM (job timeout, cancel) during prepare (issue 11): the exchange in flight
    /// finishes, and everything issued is revoked before prepare exits; nothing is left for sweep.
    @Test func prepareSIGTERMedRollsBackWhatWasIssued() throws {
        let moto = try MotoServer()
        let slow = try FakeSTS.hanging(3)
        let issuer = try TestIssuer()
        let world = try TestWorld(runnerExtra: "federation_timeout = \"20s\"", extra: Self.config(issuer, sts: moto.url, second: slow.baseURL))
        let job = Self.job(issuer, [], moto: moto.url)
        // The first profile is issued (moto) while the second is still in flight: the runner cancels.
        let (p, err) = try Self.prepareUntilIssued(world, job)
        kill(p.processIdentifier, SIGTERM)
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationReason == .exit && p.terminationStatus == 2, "\(p.terminationReason) \(p.terminationStatus) \(stderr)")
        #expect(stderr.contains("received signal 15"), "\(stderr)")
        let records = Self.audit(world)
        let issued = records.filter { $0["event"] as? String == "issued" }.compactMap { $0["credential_id"] as? String }
        let rolledBack = records.filter { $0["event"] as? String == "revoked" && $0["reason"] as? String == "rollback" }
            .compactMap { $0["credential_id"] as? String }
        #expect(issued.count == 1 && Set(issued) == Set(rolledBack), "\(records)")
        // Nothing left for sweep to revoke (the runner's cleanup would only remove the state).
        _ = world.run(["sweep", "--config", world.configPath, "--force"])
        #expect(!Self.audit(world).contains { $0["event"] as? String == "revoked" && $0["reason"] as? String == "sweep" })
        slow.stop()
    }

    /// A job whose runner died after prepare (no run, no cleanup): sweep, once its time is over,
    /// stops its credential server, settles its ledger, removes its state and HOME, frees its uid.
    @Test func sweepStopsTheCredentialServerOfAJobNeverCleanedUp() throws {
        let moto = try MotoServer()
        let issuer = try TestIssuer()
        let world = try TestWorld(runnerExtra: "sweep_grace = \"1s\"", extra: Self.config(issuer, sts: moto.url, deliver: "endpoint"))
        let job = Self.job(issuer, [], moto: moto.url)
        let p = world.execute("airlock-prepare", environment: try Self.prepareEnvironment(world, job, timeout: 1))
        #expect(p.code == 0, "\(p.stderr)")
        let state = "\(world.stateDir)/jobs/\(job.jobID)"
        #expect(!TestWorld.processes(containing: state).isEmpty, "no credential server after prepare")
        let home = "\(world.root)/homes/job-\(job.jobID)"
        #expect(FileManager.default.fileExists(atPath: home), "no HOME after prepare")
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: "\(world.stateDir)/uids")) ?? []).filter { !$0.hasPrefix(".") }.count == 1, "no uid slot held after prepare")
        var lines = ""
        let until = Date().addingTimeInterval(60)
        while Date() < until && !lines.contains("ledger settled") {
            Thread.sleep(forTimeInterval: 0.5)
            let swept = world.run(["sweep", "--config", world.configPath])
            lines = swept.stdout + swept.stderr
        }
        #expect(lines.contains("job \(job.jobID): ledger settled, state removed"), "\(lines)")
        #expect(TestWorld.processes(containing: state).isEmpty, "the credential server outlived the sweep")
        let records = Self.audit(world)
        // Sweep stopped the server before it revoked (the server would also stop by itself once the
        // state is gone, but only after the sweep's revocation).
        let stoppedAt = records.firstIndex { $0["event"] as? String == "endpoint_stopped" && $0["job_id"] as? String == "\(job.jobID)" }
        let revokedAt = records.firstIndex { $0["event"] as? String == "revoked" && $0["reason"] as? String == "sweep" }
        #expect(stoppedAt != nil && revokedAt != nil && stoppedAt! < revokedAt!, "\(records)")
        #expect(records.contains { $0["event"] as? String == "revoked" && $0["reason"] as? String == "sweep" })
        #expect(records.contains { $0["event"] as? String == "swept" && $0["outcome"] as? String == "settled" })
        #expect(!FileManager.default.fileExists(atPath: state))
        #expect(!FileManager.default.fileExists(atPath: home))
        let slots = (try? FileManager.default.contentsOfDirectory(atPath: "\(world.stateDir)/uids"))?.filter { !$0.hasPrefix(".") } ?? []
        #expect(slots.isEmpty, "uid still held: \(slots)")
    }

    /// The runner's job timeout (SIGTERM to the stage, then after_script and cleanup): the script is
    /// stopped, nothing of it is left, and its credential is settled at cleanup.
    @Test func aJobThatTimesOutIsStoppedAndItsCredentialSettled() throws {
        let moto = try MotoServer()
        let issuer = try TestIssuer()
        let world = try TestWorld(extra: Self.config(issuer, sts: moto.url))
        let marker = "airlock-timeout-\(UUID().uuidString.prefix(8))"
        var job = Self.job(issuer, ["echo \"started=$((6*7))\"", "exec -a \(marker) sleep 600", "echo not-reached"], moto: moto.url)
        job.timeout = 20  // covers prepare_script and get_sources on a loaded machine; the script sleeps 600 s
        let r = world.simulate(job) { $0.runnerMasking = false }
        #expect(r.failureReason == "job_execution_timeout", "\(TestWorld.redacted(r.log))")
        #expect(r.output.contains("started=42\n") && !r.output.contains("not-reached"), "\(TestWorld.redacted(r.output))")
        #expect(TestWorld.processes(containing: marker).isEmpty)
        let records = Self.audit(world)
        let issued = Set(records.filter { $0["event"] as? String == "issued" }.compactMap { $0["credential_id"] as? String })
        let settled = Set(records.filter { $0["event"] as? String == "revoked" }.compactMap { $0["credential_id"] as? String })
        #expect(issued.count == 1 && issued == settled, "\(records)")
        #expect(!FileManager.default.fileExists(atPath: "\(world.stateDir)/jobs/\(job.jobID)"))
    }
}
