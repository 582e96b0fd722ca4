import AirlockTesting
import Foundation
import Testing

/// Issue 15, part 5: the simulator does what GitLab Runner 19.x does on each point
/// (custom-executor.md §1, checked against executors/custom/custom.go and common/build.go), and
/// Airlock copes with each. Some tests drive small shell drivers to show the simulator's own
/// behaviour; the others drive Airlock's executables through the path that behaviour opens.
@Suite(.serialized)
struct RunnerFidelityTests {
    /// A driver of shell one-liners that count their calls in `dir`.
    static func countingDriver(_ dir: String, config: String, run: String = "exit 0") -> DriverSpec {
        DriverSpec(configExec: ["/bin/sh", "-c", "echo c >> \(dir)/config; \(config)"],
                   prepareExec: ["/bin/sh", "-c", "echo p >> \(dir)/prepare"],
                   runExec: ["/bin/sh", "-c", "echo \"$2\" >> \(dir)/run; \(run)", "run"],
                   cleanupExec: ["/bin/sh", "-c", "echo x >> \(dir)/cleanup"])
    }

    static func lines(_ path: String) -> Int {
        ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").count
    }

    /// config_exec exiting with the build failure code (1) is a BuildError: the job fails without a
    /// retry. Any other failure is retried, three attempts in all; cleanup_exec runs after each.
    @Test(arguments: [(1, 1, "script_failure"), (2, 3, "system_failure")])
    func aFailedConfigExecIsFollowedByCleanupAndRetriedOnlyForASystemFailure(_ c: (Int, Int, String)) throws {
        let world = try TestWorld()
        let dir = "\(world.root)/counts"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let r = world.simulate(SimulatedJob(script: ["true"]), driver: Self.countingDriver(dir, config: "exit \(c.0)"))
        #expect(r.status == "failed" && r.failureReason == c.2, "\(r.log)")
        #expect(Self.lines("\(dir)/config") == c.1 && r.prepareAttempts == c.1)
        #expect(Self.lines("\(dir)/cleanup") == c.1 && r.cleanupRuns == c.1)
        #expect(Self.lines("\(dir)/prepare") == 0 && Self.lines("\(dir)/run") == 0)
    }

    /// Airlock's own config_exec on a broken file exits with the system failure code: the runner
    /// retries it and runs airlock-cleanup after each attempt, which must cope with a job it never
    /// prepared and a configuration it cannot read (it has nothing to settle, and says so).
    @Test func airlocksCleanupCopesAfterABrokenConfigExec() throws {
        let world = try TestWorld()
        try "[runner\nbroken = ".write(toFile: world.configPath, atomically: true, encoding: .utf8)
        let r = world.simulate(SimulatedJob(script: ["echo not-reached"]))
        #expect(r.status == "failed" && r.failureReason == "system_failure", "\(r.log)")
        #expect(r.prepareAttempts == 3 && r.cleanupRuns == 3)
        #expect(r.log.contains("airlock.toml"), "\(r.log)")
        #expect(!r.output.contains("not-reached"))
        #expect(!r.runnerLog.contains(world.root + "/state/jobs"), "\(r.runnerLog)")
    }

    /// Stages with nothing to do are not sent; the cache and artifact stages are sent when the job
    /// has a cache, artifacts or dependencies, and Airlock runs each.
    @Test func stagesWithoutWorkAreSkippedAndTheOthersRun() throws {
        let world = try TestWorld()
        let plain = world.simulate(SimulatedJob(script: ["echo plain"]))
        #expect(plain.status == "success", "\(TestWorld.redacted(plain.log))")
        #expect(plain.stages.map(\.stage) == ["prepare_script", "get_sources", "build_script", "cleanup_file_variables"])
        var full = SimulatedJob(script: ["echo full"])
        full.cache = true
        full.dependencies = true
        full.artifactsWhen = "always"
        let f = world.simulate(full)
        #expect(f.status == "success", "\(TestWorld.redacted(f.log))")
        #expect(f.stages.map(\.stage) == ["prepare_script", "get_sources", "restore_cache", "download_artifacts", "build_script",
                                          "archive_cache", "upload_artifacts_on_success", "cleanup_file_variables"])
        var failing = full
        failing.script = ["exit 3"]
        failing.artifactsWhen = "on_success"
        let x = world.simulate(failing)
        #expect(x.status == "failed" && x.jobExitCode == 3, "\(TestWorld.redacted(x.log))")
        #expect(x.stages.map(\.stage) == ["prepare_script", "get_sources", "restore_cache", "download_artifacts", "build_script",
                                          "archive_cache_on_failure", "cleanup_file_variables"])
        #expect(f.stages.allSatisfy { $0.exitCode == 0 })
    }

    /// The job timeout covers prepare and, once hit, skips every later stage (no after_script, no
    /// uploads, no cleanup_file_variables): only cleanup runs, and it settles what was issued.
    @Test func theJobTimeoutSkipsEveryLaterStageButCleanup() throws {
        let world = try TestWorld()
        var job = SimulatedJob(script: ["echo started", "sleep 60", "echo not-reached"])
        job.timeout = 3
        job.afterScript = ["echo after-script-ran"]
        job.artifactsWhen = "always"
        let r = world.simulate(job)
        #expect(r.status == "failed" && r.failureReason == "job_execution_timeout", "\(TestWorld.redacted(r.log))")
        #expect(r.stages.map(\.stage) == ["prepare_script", "get_sources", "build_script"], "\(r.stages.map(\.stage))")
        #expect(!r.output.contains("after-script-ran") && !r.output.contains("not-reached"))
        #expect(r.cleanupRuns == 1)
        #expect(!FileManager.default.fileExists(atPath: "\(world.stateDir)/jobs/\(job.jobID)"), "cleanup left the job's state")
    }

    /// The job timeout hit in after_script (the script itself was quick): the job fails with the
    /// timeout, and neither the upload nor cleanup_file_variables is sent.
    @Test func theJobTimeoutHitInAfterScriptFailsTheJobAndSkipsTheRest() throws {
        let world = try TestWorld()
        var job = SimulatedJob(script: ["echo quick"])
        job.timeout = 4
        job.afterScript = ["sleep 30"]
        job.artifactsWhen = "always"
        let r = world.simulate(job)
        #expect(r.status == "failed" && r.failureReason == "job_execution_timeout", "\(TestWorld.redacted(r.log))")
        #expect(r.stages.map(\.stage) == ["prepare_script", "get_sources", "build_script", "after_script"], "\(r.stages.map(\.stage))")
        #expect(r.cleanupRuns == 1)
    }

    /// A slow provider (a Vault login that takes 4 s) holds prepare: a cancel, or the job timeout,
    /// lands in prepare. Prepare finishes the login in flight, revokes it, and exits; cleanup runs;
    /// no stage runs; no Vault token outlives the job.
    @Test(arguments: ["cancel", "timeout"])
    func aCancelOrTimeoutDuringPrepareLeavesNothingIssued(_ kind: String) throws {
        let issuer = try TestIssuer()
        let vault = try FakeVault(issuer: issuer)
        vault.addRole("ci-42", .init(boundAudience: "https://airlock.test", mayCreateTokens: true))
        vault.loginDelay = 4
        let world = try VaultEndToEndTests.tokenWorld(issuer, address: vault.address)
        var job = SimulatedJob(script: ["echo not-reached"])
        job.timeout = kind == "timeout" ? 2 : 3600
        job.idTokens = ["AIRLOCK_ID_TOKEN": issuer.mint(issuer.claims(for: job, audience: "https://airlock.test"))]
        let r = world.simulate(job) { o in
            if kind == "cancel" { o.cancelStage = "prepare"; o.cancelAfter = 1 }
        }
        if kind == "cancel" {
            #expect(r.status == "canceled", "\(TestWorld.redacted(r.log))")
        } else {
            #expect(r.status == "failed" && r.failureReason == "job_execution_timeout", "\(TestWorld.redacted(r.log))")
        }
        #expect(r.stages.isEmpty, "\(r.stages.map(\.stage))")
        #expect(!r.output.contains("not-reached"))
        #expect(r.cleanupRuns == 1)
        // The login was in flight when the signal came (not a vacuous pass), and nothing outlived it.
        #expect(vault.server.requestSpans.contains { $0.path.hasSuffix("/login") })
        #expect(vault.liveAccessors.isEmpty, "a Vault token outlived the job")
        let records = world.auditRecords()
        let issued = Set(records.filter { $0["event"] as? String == "issued" }.compactMap { $0["credential_id"] as? String })
        let settled = Set(records.filter { $0["event"] as? String == "revoked" }.compactMap { $0["credential_id"] as? String })
        #expect(issued == settled, "\(records)")
        #expect(!FileManager.default.fileExists(atPath: "\(world.stateDir)/jobs/\(job.jobID)"))
    }

    /// A cancel can land in a later stage too: in after_script's place the failure stages and
    /// cleanup_file_variables still run; here it lands in get_sources.
    @Test func aCancelInGetSourcesStillRunsTheFailureStagesAndCleanup() throws {
        let world = try TestWorld()
        var job = SimulatedJob(script: ["echo not-reached"])
        job.stageProbes["get_sources"] = ["sleep 30"]
        job.afterScript = ["echo after-script-ran"]
        job.artifactsWhen = "on_failure"
        let r = world.simulate(job) { $0.cancelStage = "get_sources"; $0.cancelAfter = 1.5 }
        #expect(r.status == "canceled", "\(TestWorld.redacted(r.log))")
        #expect(r.stages.map(\.stage) == ["prepare_script", "get_sources", "after_script", "upload_artifacts_on_failure", "cleanup_file_variables"],
                "\(r.stages.map(\.stage))")
        #expect(r.output.contains("after-script-ran\n") && !r.output.contains("not-reached"))
        #expect(r.cleanupRuns == 1)
    }

    /// `*_exec_timeout` (default 3600 s): a prepare that outlives it is stopped like a failed prepare,
    /// cleaned up and retried.
    @Test func aPrepareThatOutlivesItsTimeoutIsStoppedCleanedUpAndRetried() throws {
        let world = try TestWorld()
        let dir = "\(world.root)/counts"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var d = Self.countingDriver(dir, config: "exit 0")
        d.prepareExec = ["/bin/sh", "-c", "echo p >> \(dir)/prepare; sleep 30"]
        let started = Date()
        let r = world.simulate(SimulatedJob(script: ["true"]), driver: d) { $0.prepareExecTimeout = 1; $0.gracefulKillTimeout = 2 }
        #expect(r.status == "failed" && r.failureReason == "system_failure", "\(r.log)")
        #expect(Self.lines("\(dir)/prepare") == 3 && Self.lines("\(dir)/cleanup") == 3)
        #expect(Date().timeIntervalSince(started) < 25)
        #expect(SimulatorOptions().prepareExecTimeout == 3600 && SimulatorOptions().configExecTimeout == 3600 && SimulatorOptions().cleanupExecTimeout == 3600)
    }

    /// The runner never deletes BUILD_EXIT_CODE_FILE between stages: a failing stage that writes no
    /// code of its own is read with the code an earlier stage wrote.
    @Test func theBuildExitCodeFileIsKeptBetweenStages() throws {
        let world = try TestWorld()
        let dir = "\(world.root)/counts"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let run = #"if [ "$2" = get_sources ]; then echo 7 > "$BUILD_EXIT_CODE_FILE"; exit 0; fi; if [ "$2" = build_script ]; then exit 1; fi; exit 0"#
        let r = world.simulate(SimulatedJob(script: ["true"]), driver: Self.countingDriver(dir, config: "exit 0", run: run))
        #expect(r.status == "failed" && r.jobExitCode == 7, "\(r.log)")
    }

    /// config_exec's `hostname`, `shell` and `builds_dir_is_shared` are applied: a shared builds dir
    /// puts the project under `<runner token>/<concurrent id>/`, and a shell other than bash is refused.
    @Test func configExecsHostnameShellAndSharedBuildsDirAreApplied() throws {
        let world = try TestWorld()
        let dir = "\(world.root)/counts"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let json = #"{"builds_dir":"/b","builds_dir_is_shared":true,"hostname":"airlock-h1","shell":"bash"}"#
        let cat = #"cat "$1" >> "# + dir + "/scripts; exit 0"
        let job = SimulatedJob(script: ["true"])
        let r = world.simulate(job, driver: Self.countingDriver(dir, config: "echo '\(json)'", run: cat))
        #expect(r.status == "success", "\(r.log)")
        let scripts = (try? String(contentsOfFile: "\(dir)/scripts", encoding: .utf8)) ?? ""
        #expect(scripts.contains("/b/\(job.runnerShortToken)/\(job.concurrentProjectID)/\(job.projectPath)"), "\(scripts.prefix(2000))")
        #expect(scripts.contains("via airlock-h1"))
        let sh = world.simulate(job, driver: Self.countingDriver(dir, config: #"echo '{"shell":"sh"}'"#))
        #expect(sh.status == "failed" && sh.log.contains("config_exec asked for shell sh"), "\(sh.log)")
        // Airlock's own answer: its builds dir is per job (not shared), and the job finds itself there.
        let own = world.simulate(SimulatedJob(script: [#"echo "dir=$CI_PROJECT_DIR pwd=$(pwd)""#]))
        let m = try #require(own.output.firstMatch(of: /dir=(\S+) pwd=(\S+)\n/), "\(TestWorld.redacted(own.output))")
        #expect(m.1 == m.2 && m.1.hasSuffix("/platform/api"))
    }

    /// prepare_script exports no variable; cleanup_file_variables exports every one, the ID token
    /// included, and Airlock scrubs the token there as in every stage.
    @Test func variablesReachTheStagesTheRunnerPutsThemIn() throws {
        let issuer = try TestIssuer()
        let world = try TestWorld(extra: """
        [gitlab]
        issuer = "\(issuer.issuer)"
        audience = "https://airlock.test"
        """)
        var job = SimulatedJob(script: ["true"])
        job.idTokens = ["AIRLOCK_ID_TOKEN": issuer.mint(issuer.claims(for: job, audience: "https://airlock.test"))]
        job.stageProbes["prepare_script"] = [#"echo "prepare-script job=${CI_JOB_ID:-unset}""#]
        job.stageProbes["cleanup_file_variables"] = [#"echo "cleanup-file-variables job=${CI_JOB_ID:-unset} token-length=${#AIRLOCK_ID_TOKEN}""#]
        let r = world.simulate(job) { $0.runnerMasking = false }
        #expect(r.status == "success", "\(TestWorld.redacted(r.log))")
        #expect(r.output.contains("prepare-script job=unset\n"), "\(TestWorld.redacted(r.output))")
        #expect(r.output.contains("cleanup-file-variables job=\(job.jobID) token-length=0\n"), "\(TestWorld.redacted(r.output))")
    }

    /// The runner sets CUSTOM_ENV_ for every variable in order, the job's own after the predefined
    /// ones, and the last wins: a job that names its variables CI_JOB_ID, CI_PROJECT_ID and
    /// CI_PROJECT_PATH overrides them. Airlock takes the job's identity from the runner's payload
    /// and the verified token, so the job keeps its own state, grant and audit identity.
    @Test func aJobThatOverridesPredefinedVariablesKeepsItsOwnIdentity() throws {
        let moto = try MotoServer()
        let issuer = try TestIssuer()
        let world = try TestWorld(extra: """
        [gitlab]
        issuer = "\(issuer.issuer)"
        audience = "https://airlock.test"

        \(PeerTables.aws(moto: moto))
        [profiles.deploy]
        provider = "aws"
        role_arn = "arn:aws:iam::123456789012:role/gitlab-{project_id}"

        [[rules]]
        name = "project 42"
        project_id = 42
        grant = ["deploy"]
        """)
        var job = SimulatedJob(script: [#"echo "vars job=$CI_JOB_ID project=$CI_PROJECT_ID key-length=${#AWS_ACCESS_KEY_ID}""#])
        job.variables = ["CI_JOB_ID": "1", "CI_PROJECT_ID": "7", "CI_PROJECT_PATH": "other/project", "AWS_ENDPOINT_URL_STS": moto.url]
        job.idTokens = ["AIRLOCK_ID_TOKEN": issuer.mint(issuer.claims(for: job, audience: "https://airlock.test"))]
        let r = world.simulate(job)
        #expect(r.status == "success", "\(TestWorld.redacted(r.log))")
        // The job's own variables win in its script, as on a real runner...
        #expect(r.output.contains("vars job=1 project=7 key-length=20\n"), "\(TestWorld.redacted(r.output))")
        // ...but Airlock kept the job's real identity throughout.
        let issued = world.auditRecords().filter { $0["event"] as? String == "issued" }
        #expect(issued.count == 1 && issued.first?["job_id"] as? String == "\(job.jobID)" && issued.first?["project_id"] as? String == "42", "\(issued)")
        #expect(!FileManager.default.fileExists(atPath: "\(world.stateDir)/jobs/1"))
    }

    /// A job with `image:` or `services:` is told that this runner ignores them (a custom executor
    /// gets them only as CUSTOM_ENV_CI_JOB_IMAGE and CUSTOM_ENV_CI_JOB_SERVICES); a job without them
    /// is told nothing.
    @Test func imageAndServicesAreNamedAsIgnored() throws {
        let world = try TestWorld()
        var job = SimulatedJob(script: ["echo ran"])
        job.image = "python:3.12"
        job.services = ["postgres:16"]
        let r = world.simulate(job)
        #expect(r.status == "success", "\(TestWorld.redacted(r.log))")
        #expect(r.output.contains("Airlock: this job's image: and services: are ignored: this runner runs no containers"), "\(TestWorld.redacted(r.output))")
        var imageOnly = SimulatedJob(script: ["echo ran"])
        imageOnly.image = "alpine"
        #expect(world.simulate(imageOnly).output.contains("Airlock: this job's image: is ignored"))
        let plain = world.simulate(SimulatedJob(script: ["echo ran"]))
        #expect(!plain.output.contains("ignored: this runner runs no containers"), "\(TestWorld.redacted(plain.output))")
    }
}
