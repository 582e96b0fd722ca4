import AirlockConfiguration
import AirlockTesting
import CSupport
import JobIsolation
import Foundation
import Testing

/// Issue 19: airlock-prepare and airlock-cleanup link no libcurl (its thirty shared libraries cost
/// every stage 7 ms to load). A job with an ID token to verify, or credentials to revoke, is handed to
/// airlock-federate (execv: same pid, arguments and environment) before anything is done; every other
/// job is prepared and cleaned up without it. Proven with the stage executables copied to a directory
/// without airlock-federate: what needs it fails there, clearly and before issuing anything, and what
/// does not, succeeds.
@Suite(.serialized)
struct HandOverEndToEndTests {
    /// The four executables the runner names, without airlock-federate.
    static func withoutFederate(_ world: TestWorld) throws -> String {
        let dir = "\(world.root)/bin-without-federate"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for exe in ["airlock-config", "airlock-prepare", "airlock-run", "airlock-cleanup"] {
            try copyExecutable("\(world.binDir)/\(exe)", to: "\(dir)/\(exe)")
        }
        return dir
    }

    /// Through TestFiles.writeExecutable (O_CLOEXEC): FileManager.copyItem's descriptor was inherited
    /// by a server another test started meanwhile, and every start of the copy failed with "Text file
    /// busy" for as long as that server ran.
    static func copyExecutable(_ from: String, to: String) throws {
        try TestFiles.writeExecutable(to, [UInt8](try Data(contentsOf: URL(fileURLWithPath: from))))
    }

    @Test func onlyAJobWithSomethingToSayToAProviderIsHandedToAirlockFederate() throws {
        let moto = try MotoServer()
        let issuer = try TestIssuer()
        let world = try TestWorld(extra: AWSEndToEndTests.config(issuer, sts: moto.url))
        let light = try Self.withoutFederate(world)
        let lightDriver = DriverSpec.airlock(binDir: light, config: world.configPath)

        // No ID token: prepare and cleanup never need airlock-federate.
        let plain = world.simulate(SimulatedJob(script: ["echo plain-job-ran-$((6 * 7))"]), driver: lightDriver)
        #expect(plain.status == "success", "\(TestWorld.redacted(plain.log))")
        #expect(plain.output.contains("plain-job-ran-42\n"), "\(TestWorld.redacted(plain.output))")
        #expect(plain.runnerLog.contains("state removed"), "\(plain.runnerLog)")

        // An ID token: prepare hands over before doing anything, so without airlock-federate it fails
        // as the host's fault, naming what to install, and nothing is issued; the audit says why.
        let tokenJob = AWSEndToEndTests.job(issuer, ["echo never"], moto: moto.url)
        let refused = world.simulate(tokenJob, driver: lightDriver) { $0.retryDelay = 0 }
        #expect(refused.status == "failed" && refused.failureReason == "system_failure", "\(TestWorld.redacted(refused.log))")
        #expect(refused.log.contains("airlock-federate") && refused.log.contains("cannot be started"), "\(TestWorld.redacted(refused.log))")
        #expect(!refused.output.contains("never\n"))
        let records = world.auditRecords().filter { $0["job_id"] as? String == "\(tokenJob.jobID)" }
        #expect(!records.contains { $0["event"] as? String == "issued" })
        // It did not get as far as a decision: the hand-over comes before the token is read.
        #expect(!records.contains { $0["event"] as? String == "decision" })
        let failedRecord = records.first { $0["event"] as? String == "prepare_failed" }
        #expect((failedRecord?["detail"] as? String)?.contains("airlock-federate") == true, "\(records)")
        #expect(!plain.runnerLog.contains("without the network"), "\(plain.runnerLog)")

        // With airlock-federate beside them, prepare issues. A cleanup with credentials in the ledger
        // hands over too; without airlock-federate it says so and does what it can without the
        // network (an STS credential cannot be revoked anyway: it is recorded as expiring).
        let env = try AWSEndToEndTests.prepareEnvironment(world, tokenJob)
        let prep = world.execute("airlock-prepare", environment: env)
        #expect(prep.code == 0, "\(prep.stderr)")
        #expect(world.auditRecords().contains { $0["event"] as? String == "issued" })
        let ledger = "\(world.stateDir)/jobs/\(tokenJob.jobID)/ledger.json"
        #expect(FileManager.default.fileExists(atPath: ledger))
        let lightCleanup = TestWorld.launch("\(light)/airlock-cleanup", ["--config", world.configPath], environment: env)
        #expect(lightCleanup.code == 0, "\(lightCleanup.stdout)\(lightCleanup.stderr)")
        #expect(lightCleanup.stderr.contains("airlock-federate") && lightCleanup.stderr.contains("cleaning up without the network"), "\(lightCleanup.stderr)")
        let revoked = world.auditRecords().first { $0["event"] as? String == "revoked" }
        #expect(revoked?["outcome"] as? String == "expires_at", "\(String(describing: revoked))")
        #expect(!FileManager.default.fileExists(atPath: ledger))
    }
}

extension HandOverEndToEndTests {
    /// A cancel the runner sends while airlock-prepare is still deciding is not lost in the hand-over:
    /// airlock-federate takes it and issues nothing. The signal is made to arrive at the earliest
    /// moment there is: pending (and blocked) when airlock-prepare starts, as one sent a microsecond
    /// after the runner's fork would be.
    @Test func aCancelBeforeTheHandOverReachesAirlockFederate() throws {
        let moto = try MotoServer()
        let issuer = try TestIssuer()
        let world = try TestWorld(extra: AWSEndToEndTests.config(issuer, sts: moto.url))
        let job = AWSEndToEndTests.job(issuer, ["echo never"], moto: moto.url)
        var env = try AWSEndToEndTests.prepareEnvironment(world, job)
        env["SYSTEM_FAILURE_EXIT_CODE"] = "77"
        let launcher = """
        import os, signal, sys
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        os.kill(os.getpid(), signal.SIGTERM)
        os.execv(sys.argv[1], sys.argv[1:])
        """
        let r = TestWorld.launch("/usr/bin/python3", ["-c", launcher, "\(world.binDir)/airlock-prepare", "--config", world.configPath], environment: env)
        #expect(r.code == 77, "\(r.stdout)\(r.stderr)")
        #expect(r.stderr.contains("received signal 15") && r.stderr.contains("nothing was issued"), "\(r.stderr)")
        let issued = world.auditRecords().filter { $0["event"] as? String == "issued" }.count
        #expect(issued == 0)
        _ = world.execute("airlock-cleanup", environment: env)
    }
}

/// Issue 19: prepare checks the nftables guard for its uid range with `nft list set` (4 ms) only when
/// the kernel's ruleset generation has moved since this state_dir last saw the rules in place; any
/// change to any table moves it on, so a removed rule is always noticed and put back.
@Suite(.serialized)
struct NetworkGuardStampEndToEndTests {
    static func generation() -> UInt32? {
        var g: UInt32 = 0, netns: UInt64 = 0
        return airlock_nft_generation(&g, &netns) == 0 ? g : nil
    }

    static func nft(_ args: [String]) -> (code: Int32, stdout: String, stderr: String) {
        TestWorld.launch("/usr/sbin/nft", args, environment: nil)
    }

    @Test func aChangedRulesetIsCheckedAgainAndAnUnchangedOneIsNot() throws {
        let world = try TestWorld()
        let marker = "airlock uids \(world.jobUIDs.lowerBound)-\(world.jobUIDs.upperBound)"
        let element = "\(world.jobUIDs.lowerBound) . \(world.jobUIDs.upperBound)"
        let first = world.simulate(SimulatedJob(script: ["echo first"]))
        #expect(first.status == "success", "\(TestWorld.redacted(first.log))")
        #expect(FileManager.default.fileExists(atPath: "\(world.stateDir)/nft-verified"))
        #expect(Self.nft(["list", "chain", "inet", "airlock", "output"]).stdout.contains(marker))

        // Unchanged ruleset: the guard does not run nft at all (a path that does not exist is never
        // tried). Other test worlds change the ruleset while this runs, so the guard is called here,
        // twice in a row (with nft, which notes the generation; then without), and an attempt counts
        // only if the generation is the same before the first call and after the second.
        let runner = try AirlockConfig.load(path: world.configPath).runner
        var withoutNFT = runner
        withoutNFT.nft = "/nonexistent/nft"
        var unchangedChecked = false
        for _ in 1...20 where !unchangedChecked {
            let before = Self.generation()
            try NetworkGuard.install(runner)
            let skipped = (try? NetworkGuard.install(withoutNFT)) != nil
            if before != nil && before == Self.generation() {
                #expect(skipped, "an unchanged ruleset was asked again")
                unchangedChecked = true
            }
        }
        #expect(unchangedChecked, "the ruleset changed during each of 20 attempts")

        // This range's rules and set element removed (as a firewall reload would): the generation has
        // moved, so the next prepare asks nft, and with nft missing it fails rather than run the job
        // unguarded.
        let listing = Self.nft(["-a", "list", "chain", "inet", "airlock", "output"]).stdout
        let handles = listing.split(separator: "\n").filter { $0.contains(marker) }.compactMap { $0.components(separatedBy: "# handle ").last }
        #expect(handles.count == 3, "\(listing)")
        for h in handles { #expect(Self.nft(["delete", "rule", "inet", "airlock", "output", "handle", h]).code == 0) }
        #expect(Self.nft(["delete", "element", "inet", "airlock", "ranges", "{ \(element) }"]).code == 0)
        try world.writeConfig(runnerExtra: "nft = \"/nonexistent/nft\"")
        let refused = world.simulate(SimulatedJob(script: ["echo unguarded"])) { $0.retryDelay = 0 }
        #expect(refused.status == "failed" && refused.failureReason == "system_failure", "\(TestWorld.redacted(refused.log))")
        #expect(!refused.output.contains("unguarded\n"))

        // With nft back, the next prepare puts the rules back before the job runs.
        try world.writeConfig()
        let restored = world.simulate(SimulatedJob(script: ["echo restored"]))
        #expect(restored.status == "success", "\(TestWorld.redacted(restored.log))")
        let rulesBack = Self.nft(["list", "chain", "inet", "airlock", "output"]).stdout.components(separatedBy: marker).count - 1
        #expect(rulesBack == 3)
        #expect(Self.nft(["list", "set", "inet", "airlock", "ranges"]).stdout.contains(element))
    }
}
