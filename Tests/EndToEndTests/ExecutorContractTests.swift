import AirlockTesting
import Foundation
import Testing

/// Jobs driven through the four built executables by the runner simulator (issue 2).
@Suite(.serialized)
struct ExecutorContractTests {
    @Test func passingJobRunsEveryStageInTheSandbox() throws {
        let world = try TestWorld()
        var job = SimulatedJob(script: ["echo hello-from-$CI_JOB_ID", "hostname", "test -w \"$CI_PROJECT_DIR\""])
        job.afterScript = ["echo after-ran"]
        let r = world.simulate(job)
        #expect(r.status == "success", "\(r.log)")
        #expect(r.log.contains("hello-from-\(job.jobID)"))
        #expect(r.log.contains("airlock-job"))  // UTS namespace: the sandbox's hostname
        #expect(r.log.contains("after-ran"))
        #expect(r.log.contains("Using Custom executor with driver airlock"))
        #expect(r.stages.map(\.stage) == ["prepare_script", "get_sources", "build_script", "after_script", "cleanup_file_variables"])
        #expect(r.cleanupRuns == 1)
        #expect(!FileManager.default.fileExists(atPath: "\(world.stateDir)/jobs/\(job.jobID)"))
    }

    @Test func scriptExitCodeBecomesTheJobExitCode() throws {
        let world = try TestWorld()
        let r = world.simulate(SimulatedJob(script: ["echo before", "exit 3", "echo never"]))
        #expect(r.status == "failed")
        #expect(r.failureReason == "script_failure")
        #expect(r.jobExitCode == 3)
        #expect(!r.log.contains("\nnever"))
        #expect(r.log.contains("ERROR: Job failed: exit code 3"))
    }

    @Test(arguments: ["bubblewrap", "none"])
    func backgroundProcessesDoNotSurviveTheStage(isolation: String) throws {
        let world = try TestWorld(isolation: isolation)
        let marker = "airlock-survivor-\(UUID().uuidString.prefix(8))"
        let r = world.simulate(SimulatedJob(script: ["(exec -a \(marker) sleep 1000) &", "echo started"]))
        #expect(r.status == "success", "\(r.log)")
        #expect(TestWorld.processes(containing: marker).isEmpty)
    }

    @Test func cancelRunsAfterScriptAndLeavesNoProcess() throws {
        let world = try TestWorld()
        let marker = "airlock-cancel-\(UUID().uuidString.prefix(8))"
        var job = SimulatedJob(script: ["(exec -a \(marker) sleep 1000) &", "echo waiting", "sleep 60", "echo not-reached"])
        job.afterScript = ["echo after-script-after-cancel"]
        let started = Date()
        let r = world.simulate(job) { $0.cancelAfter = 1.5 }
        #expect(r.status == "canceled", "\(r.log)")
        #expect(r.log.contains("after-script-after-cancel"))
        #expect(!r.log.contains("not-reached"))
        #expect(Date().timeIntervalSince(started) < 30)
        #expect(TestWorld.processes(containing: marker).isEmpty)
        #expect(r.cleanupRuns == 1)
    }

    @Test func jobCannotReadConfigStateOrResponseFile() throws {
        let world = try TestWorld()
        var job = SimulatedJob(script: [
            "cat \"$CFG\" && echo \"LE\"\"AK-config\" || true",
            "ls \"$STATE/jobs\" | grep . && echo \"LE\"\"AK-state\" || true",
            "cat \"$RUNNER_TMP\"/custom-executor*/response.json && echo \"LE\"\"AK-response\" || true",
            "ls -A \"$RUNNER_TMP\"/custom-executor*/ | grep . && echo \"LE\"\"AK-runner-tmp\" || true",
            "cat \"$AUDIT\" && echo \"LE\"\"AK-audit\" || true",
            "echo probe-done",
        ])
        job.variables = ["CFG": world.configPath, "STATE": world.stateDir, "RUNNER_TMP": world.runnerTemp, "AUDIT": world.auditLog]
        let r = world.simulate(job)
        #expect(r.status == "success", "\(r.log)")
        #expect(r.log.contains("probe-done"))
        for leak in ["LEAK-config", "LEAK-state", "LEAK-response", "LEAK-runner-tmp", "LEAK-audit", "builds_root"] {
            #expect(!r.log.contains(leak), "\(leak) in \(r.log)")
        }
    }

    @Test func jobEnvironmentIsBuiltFromScratch() throws {
        let world = try TestWorld()
        let r = world.simulate(SimulatedJob(script: ["env > \"$CI_PROJECT_DIR/../env.txt\"", "echo HOME=$HOME"]))
        #expect(r.status == "success", "\(r.log)")
        let builds = "\(world.root)/builds"
        let envFile = FileManager.default.enumerator(atPath: builds)?.compactMap { $0 as? String }.first { $0.hasSuffix("env.txt") }
        let text = try String(contentsOfFile: "\(builds)/\(try #require(envFile))", encoding: .utf8)
        for forbidden in ["CUSTOM_ENV_", "BUILD_FAILURE_EXIT_CODE", "SYSTEM_FAILURE_EXIT_CODE", "JOB_RESPONSE_FILE", "BUILD_EXIT_CODE_FILE", "AIRLOCK_JOB_STATE"] {
            #expect(!text.contains(forbidden), "\(forbidden) reached the job")
        }
        #expect(text.contains("CI_JOB_ID="))  // the stage script's own exports
        #expect(text.contains("HOME=\(world.root)/homes\n"))  // every job sees its own HOME there
    }

    @Test func failedPrepareIsRetriedWithCleanupBetween() throws {
        let world = try TestWorld(runnerExtra: "bwrap = \"/nonexistent/bwrap\"")
        let r = world.simulate(SimulatedJob(script: ["echo never"]))
        #expect(r.status == "failed")
        #expect(r.failureReason == "system_failure")
        #expect(r.prepareAttempts == 3)
        #expect(r.cleanupRuns == 3)
        #expect(r.log.contains("bubblewrap (/nonexistent/bwrap) is not installed"))
        #expect(!r.log.contains("\nnever"))
    }

    /// Issue 11: when the metadata block cannot be enforced, no job runs (system failure, retried),
    /// unless the platform team opts out with `block_metadata = false`.
    @Test func prepareFailsWhenTheMetadataBlockCannotBeEnforced() throws {
        let world = try TestWorld(runnerExtra: "nft = \"/nonexistent/nft\"")
        let r = world.simulate(SimulatedJob(script: ["echo never"]))
        #expect(r.failureReason == "system_failure", "\(r.log)")
        #expect(r.log.contains("cannot block the host's cloud metadata service for jobs"), "\(r.log)")
        #expect(r.log.contains("block_metadata = false"))
        #expect(!r.log.contains("\nnever"))
        let optOut = try TestWorld(runnerExtra: "nft = \"/nonexistent/nft\"\nblock_metadata = false")
        let ok = optOut.simulate(SimulatedJob(script: ["echo ran-$((20+22))"]))
        #expect(ok.status == "success", "\(ok.log)")
        #expect(ok.log.contains("ran-42"))
    }

    @Test func cleanupIsIdempotent() throws {
        let world = try TestWorld()
        let env = try world.runnerEnvironment(jobID: 777)
        let prep = world.execute("airlock-prepare", environment: env)
        #expect(prep.code == 0, "\(prep.stderr)")
        #expect(FileManager.default.fileExists(atPath: "\(world.stateDir)/jobs/777"))
        let first = world.execute("airlock-cleanup", environment: env)
        let second = world.execute("airlock-cleanup", environment: env)
        #expect(first.code == 0 && second.code == 0)
        #expect(second.stdout.contains("nothing left to clean"))
        #expect(!FileManager.default.fileExists(atPath: "\(world.stateDir)/jobs/777"))
    }

    /// With bubblewrap every job sees its own directories at the same paths, whatever its variables
    /// say: config_exec takes nothing from the job (issue 11: `CI_CONCURRENT_*` and
    /// `CI_RUNNER_SHORT_TOKEN` are the job's to set). Separation is by uid and host directory.
    @Test func configPrintsTheSameViewWhateverTheJobSays() throws {
        let world = try TestWorld()
        var env = try world.runnerEnvironment(jobID: 1)
        env["CUSTOM_ENV_CI_RUNNER_SHORT_TOKEN"] = "abcd1234"
        env["CUSTOM_ENV_CI_CONCURRENT_PROJECT_ID"] = "0"
        let a = world.execute("airlock-config", environment: env)
        env["CUSTOM_ENV_CI_CONCURRENT_PROJECT_ID"] = "1"
        env["CUSTOM_ENV_CI_JOB_ID"] = "2"
        let b = world.execute("airlock-config", environment: env)
        let ja = try JSONSerialization.jsonObject(with: Data(a.stdout.utf8)) as? [String: Any]
        let jb = try JSONSerialization.jsonObject(with: Data(b.stdout.utf8)) as? [String: Any]
        #expect(ja?["builds_dir_is_shared"] as? Bool == false)
        #expect(ja?["shell"] as? String == "bash")
        #expect((ja?["driver"] as? [String: Any])?["name"] as? String == "airlock")
        #expect(ja?["builds_dir"] as? String == "\(world.root)/builds")
        #expect(ja?["cache_dir"] as? String == "\(world.root)/cache")
        #expect(ja?["builds_dir"] as? String == jb?["builds_dir"] as? String)
    }

    @Test func brokenConfigIsASystemFailureNamingKeyAndLine() throws {
        let world = try TestWorld(runnerExtra: "isolaton = \"none\"")
        var env = try world.runnerEnvironment(jobID: 1)
        env["SYSTEM_FAILURE_EXIT_CODE"] = "2"
        let r = world.execute("airlock-prepare", environment: env)
        #expect(r.code == 2)
        #expect(r.stderr.contains("airlock.toml:8: [runner] isolaton: unknown key"), "\(r.stderr)")
    }
}
