import AirlockTesting
import Delivery
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
        #expect(r.status == "success", "\(TestWorld.redacted(r.log))")
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
        let present1 = r.output.contains("never\n")
        #expect(!present1)
        #expect(r.log.contains("ERROR: Job failed: exit code 3"))
    }

    /// What a job leaves running when its stage ends is killed: a background process, one that
    /// ignores TERM and HUP, and (in the sandbox, whose PID namespace dies with it) one in a session
    /// of its own and a double-forked one. `running=` shows they were all alive at the stage's end.
    @Test(arguments: ["bubblewrap", "none"])
    func backgroundProcessesDoNotSurviveTheStage(isolation: String) throws {
        let world = try TestWorld(isolation: isolation)
        let marker = "airlock-survivor-\(UUID().uuidString.prefix(8))"
        defer { TestWorld.killAll(containing: marker) }
        var script = [
            "(exec -a \(marker)-plain sleep 1000) &",
            "(trap '' TERM HUP; exec -a \(marker)-noterm sleep 1000) &",
        ]
        var expected = 2
        if isolation == "bubblewrap" {
            script += ["setsid -f bash -c 'exec -a \(marker)-setsid sleep 1000'",
                       "(setsid bash -c '(exec -a \(marker)-double sleep 1000) &' &)"]
            expected = 4
        }
        // Wait (up to 20 s) until every one of them runs, then say how many do.
        script.append("for i in $(seq 1 200); do [ \"$(pgrep -c -f '^\(marker)-')\" -ge \(expected) ] && break; sleep 0.1; done; echo \"running=$(pgrep -c -f '^\(marker)-')\"")
        let r = world.simulate(SimulatedJob(script: script))
        #expect(r.status == "success", "\(TestWorld.redacted(r.log))")
        #expect(r.output.contains("running=\(expected)\n"), "\(TestWorld.redacted(r.output))")
        let sandboxLeftNoSurvivors = TestWorld.processes(containing: marker).isEmpty
        #expect(sandboxLeftNoSurvivors)
    }

    /// A stage whose script ignores the cancel's SIGTERM is SIGKILLed by airlock-run once
    /// `graceful_kill` (3 s here) has passed. (With the runner's bash shape the outer shell exits on
    /// TERM and the PID namespace takes the rest down at once; this script is its own top process,
    /// as another shell's script would be, so only the SIGKILL ends it.)
    @Test func aScriptIgnoringTERMIsKilledAfterTheGracePeriod() throws {
        let world = try TestWorld()
        let env = try world.runnerEnvironment(jobID: 4242)
        let prep = world.execute("airlock-prepare", environment: env)
        #expect(prep.code == 0, "\(prep.stderr)")
        let marker = "airlock-stubborn-\(UUID().uuidString.prefix(8))"
        defer { TestWorld.killAll(containing: marker) }
        let script = "\(world.runnerTemp)/custom-executor-4242/script"
        FileManager.default.createFile(atPath: script, contents: Data("#!/usr/bin/env bash\ntrap '' TERM HUP\nexec -a \(marker) sleep 1000\n".utf8),
                                       attributes: [.posixPermissions: 0o700])
        let run = try ChildProcess(argv: ["\(world.binDir)/airlock-run", "--config", world.configPath, script, "build_script"], environment: env, directory: nil)
        run.startReaper {}
        let done = DispatchSemaphore(value: 0)
        Thread.detachNewThread { _ = ChildProcess.readAll(run.stdoutFD); done.signal() }
        Thread.detachNewThread { _ = ChildProcess.readAll(run.stderrFD) }
        var started = false
        for _ in 0..<1200 where !started {
            Thread.sleep(forTimeInterval: 0.05)
            started = !TestWorld.processes(containing: marker).isEmpty
        }
        #expect(started, "the stage did not start its process within 60 s")
        let cancel = Date()
        kill(run.pid, SIGTERM)
        let ended = done.wait(timeout: .now() + 60) == .success
        let took = Date().timeIntervalSince(cancel)
        if !ended { kill(run.pid, SIGKILL) }
        #expect(ended, "airlock-run did not end its stage within 60 s of the cancel")
        // Not before the grace period, and by Airlock (the process is gone, not left to the runner).
        #expect(took > 2.5 && took < 30, "\(took) s")
        #expect(TestWorld.processes(containing: marker).isEmpty)
        _ = world.execute("airlock-cleanup", environment: env)
    }

    /// The view the sandbox gives (README "Sandbox"): the system read-only, a private /tmp and /run,
    /// a PID namespace of its own, writes only to its builds dir, cache dir and HOME, and nothing of
    /// the directory Airlock's config lives in (named like /etc/airlock, it is hidden whole, with
    /// files the config does not name). After cleanup HOME is gone and the directories are root's.
    @Test func theSandboxShowsAReadOnlySystemAndOnlyTheJobsOwnDirectories() throws {
        let world = try TestWorld()
        let tag = UUID().uuidString.prefix(8)
        let configDir = (world.configPath as NSString).deletingLastPathComponent
        // Searchable and readable by anyone: if the job cannot see the directory's files, it is
        // because the sandbox hides them, not because of the directory's mode.
        chmod(configDir, 0o755)
        chmod((configDir as NSString).deletingLastPathComponent, 0o755)
        let sibling = "\(configDir)/old-airlock.toml.bak"
        FileManager.default.createFile(atPath: sibling, contents: Data("token = \"canary-\(tag)\"\n".utf8), attributes: [.posixPermissions: 0o644])
        let hostTmp = "/tmp/airlock-canary-\(tag)", hostRun = "/run/airlock-canary-\(tag)", hostShm = "/dev/shm/airlock-canary-\(tag)"
        for f in [hostTmp, hostRun, hostShm] { FileManager.default.createFile(atPath: f, contents: Data("x".utf8), attributes: [.posixPermissions: 0o644]) }
        defer { for f in [hostTmp, hostRun, hostShm, "/tmp/job-wrote-\(tag)"] { try? FileManager.default.removeItem(atPath: f) } }
        var job = SimulatedJob(script: [
            #"w() { if ( : > "$1/.airlock-w-$$" ) 2>/dev/null; then rm -f "$1/.airlock-w-$$"; echo rw; else echo ro; fi; }"#,
            #"echo "writes: root=$(w /) usr=$(w /usr) etc=$(w /etc) var-tmp=$(w /var/tmp) world=$(w "$WORLD") builds=$(w "$CI_PROJECT_DIR") cache=$(w "$CACHE") home=$(w "$HOME") tmp=$(w /tmp) run=$(w /run)""#,
            #"echo "host-files: tmp=$(cat "$HOST_TMP" 2>/dev/null | wc -c) run=$(cat "$HOST_RUN" 2>/dev/null | wc -c) shm=$(cat "$HOST_SHM" 2>/dev/null | wc -c)""#,
            #"echo job > "/tmp/job-wrote-$TAG""#,
            #"echo "pid-ns: host-pid=$([ -d "/proc/$HOST_PID" ] && echo visible || echo absent) processes=$(ls /proc | grep -c '^[0-9]')""#,
            #"echo "config-dir: entries=$(ls -A "$CONFIG_DIR" 2>/dev/null | wc -l) sibling=$(cat "$SIBLING" 2>/dev/null | wc -c)""#,
            #"echo canary > "$HOME/home.txt"; echo "home=$HOME""#,
        ])
        job.variables = ["WORLD": world.root, "CACHE": "\(world.root)/cache", "HOST_TMP": hostTmp, "HOST_RUN": hostRun, "HOST_SHM": hostShm, "TAG": String(tag),
                         "HOST_PID": "\(getpid())", "CONFIG_DIR": configDir, "SIBLING": sibling]
        let r = world.simulate(job)
        #expect(r.status == "success", "\(TestWorld.redacted(r.log))")
        let out = r.output
        // Each property in a Bool of its own name, so that a failure (and check-sandbox-detection)
        // names the property.
        let sandboxWritesOnlyOwnDirs = out.contains("writes: root=ro usr=ro etc=ro var-tmp=ro world=ro builds=rw cache=rw home=rw tmp=rw run=rw\n")
        #expect(sandboxWritesOnlyOwnDirs, "\(TestWorld.redacted(out))")
        let sandboxHidesHostTmpRunShm = out.contains("host-files: tmp=0 run=0 shm=0\n")
        #expect(sandboxHidesHostTmpRunShm, "\(TestWorld.redacted(out))")
        let sandboxTmpIsPrivate = !FileManager.default.fileExists(atPath: "/tmp/job-wrote-\(tag)")
        #expect(sandboxTmpIsPrivate)
        let pidLine = try #require(out.firstMatch(of: /pid-ns: host-pid=(\w+) processes=(\d+)\n/), "\(TestWorld.redacted(out))")
        let sandboxHasItsOwnPIDs = pidLine.1 == "absent" && (Int(pidLine.2) ?? 99) < 10
        #expect(sandboxHasItsOwnPIDs, "\(TestWorld.redacted(out))")
        let sandboxHidesConfigDir = out.contains("config-dir: entries=0 sibling=0\n")
        #expect(sandboxHidesConfigDir, "\(TestWorld.redacted(out))")
        #expect(!out.contains("canary-\(tag)"))
        // Cleanup: HOME removed, the builds dir back to root.
        #expect(!FileManager.default.fileExists(atPath: "\(world.root)/homes/job-\(job.jobID)"))
        let builds = try #require(world.hostBuildsDir())
        #expect((try FileManager.default.attributesOfItem(atPath: builds))[.ownerAccountID] as? Int == 0)
    }

    @Test func cancelRunsAfterScriptAndLeavesNoProcess() throws {
        let world = try TestWorld()
        let marker = "airlock-cancel-\(UUID().uuidString.prefix(8))"
        var job = SimulatedJob(script: ["(exec -a \(marker) sleep 1000) &", "echo waiting", "sleep 60", "echo not-reached"])
        job.afterScript = ["echo after-script-after-cancel"]
        let started = Date()
        let r = world.simulate(job) { $0.cancelAfter = 1.5 }
        #expect(r.status == "canceled", "\(TestWorld.redacted(r.log))")
        #expect(r.log.contains("after-script-after-cancel"))
        let present2 = r.log.contains("not-reached")
        #expect(!present2)
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
        #expect(r.status == "success", "\(TestWorld.redacted(r.log))")
        #expect(r.log.contains("probe-done"))
        for leak in ["LEAK-config", "LEAK-state", "LEAK-response", "LEAK-runner-tmp", "LEAK-audit", "builds_root"] {
            let present3 = r.log.contains(leak)
            #expect(!present3, "\(leak) in \(r.log)")
        }
    }

    @Test func jobEnvironmentIsBuiltFromScratch() throws {
        let world = try TestWorld()
        let r = world.simulate(SimulatedJob(script: ["env > \"$CI_PROJECT_DIR/../env.txt\"", "echo HOME=$HOME"]))
        #expect(r.status == "success", "\(TestWorld.redacted(r.log))")
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
        let present4 = r.output.contains("never\n")
        #expect(!present4)
    }

    /// Issue 11: when the metadata block cannot be enforced, no job runs (system failure, retried),
    /// unless the platform team opts out with `block_metadata = false`.
    @Test func prepareFailsWhenTheMetadataBlockCannotBeEnforced() throws {
        let world = try TestWorld(runnerExtra: "nft = \"/nonexistent/nft\"")
        let r = world.simulate(SimulatedJob(script: ["echo never"]))
        #expect(r.failureReason == "system_failure", "\(TestWorld.redacted(r.log))")
        #expect(r.log.contains("cannot block the host's cloud metadata service for jobs"), "\(TestWorld.redacted(r.log))")
        #expect(r.log.contains("block_metadata = false"))
        let present5 = r.output.contains("never\n")
        #expect(!present5)
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
        #expect(r.stderr.contains("airlock.toml:9: [runner] isolaton: unknown key"), "\(r.stderr)")
    }
}
