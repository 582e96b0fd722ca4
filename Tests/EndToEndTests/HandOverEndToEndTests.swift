import AirlockTesting
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
            try FileManager.default.copyItem(atPath: "\(world.binDir)/\(exe)", toPath: "\(dir)/\(exe)")
        }
        return dir
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
        // as the host's fault, naming what to install, and nothing is issued.
        let tokenJob = AWSEndToEndTests.job(issuer, ["echo never"], moto: moto.url)
        let refused = world.simulate(tokenJob, driver: lightDriver) { $0.retryDelay = 0 }
        #expect(refused.status == "failed" && refused.failureReason == "system_failure", "\(TestWorld.redacted(refused.log))")
        #expect(refused.log.contains("airlock-federate") && refused.log.contains("cannot be started"), "\(TestWorld.redacted(refused.log))")
        #expect(!refused.output.contains("never\n"))
        let issuedWithoutFederate = world.auditRecords().filter { $0["event"] as? String == "issued" }.count
        #expect(issuedWithoutFederate == 0)
        // And it did not get as far as a decision: the hand-over comes before the token is read.
        let decided = world.auditRecords().contains { $0["event"] as? String == "decision" && $0["job_id"] as? String == "\(tokenJob.jobID)" }
        #expect(!decided)

        // With airlock-federate beside them, prepare issues; a cleanup that has credentials to revoke
        // hands over too: without airlock-federate it fails and keeps the ledger, with it it revokes.
        let env = try AWSEndToEndTests.prepareEnvironment(world, tokenJob)
        let prep = world.execute("airlock-prepare", environment: env)
        #expect(prep.code == 0, "\(prep.stderr)")
        #expect(world.auditRecords().contains { $0["event"] as? String == "issued" })
        let ledger = "\(world.stateDir)/jobs/\(tokenJob.jobID)/ledger.json"
        let lightCleanup = TestWorld.launch("\(light)/airlock-cleanup", ["--config", world.configPath], environment: env)
        #expect(lightCleanup.code != 0, "\(lightCleanup.stdout)\(lightCleanup.stderr)")
        #expect(lightCleanup.stderr.contains("airlock-federate"), "\(lightCleanup.stderr)")
        #expect(FileManager.default.fileExists(atPath: ledger), "the ledger must outlive a cleanup that could not revoke")
        let cleanup = world.execute("airlock-cleanup", environment: env)
        #expect(cleanup.code == 0, "\(cleanup.stdout)\(cleanup.stderr)")
        #expect(world.auditRecords().contains { $0["event"] as? String == "revoked" })
        #expect(!FileManager.default.fileExists(atPath: ledger))
    }
}

/// Issue 19: prepare checks the nftables guard for its uid range with `nft list set` (4 ms) only when
/// the kernel's ruleset generation has moved since this state_dir last saw the rules in place; any
/// change to any table moves it on, so a removed rule is always noticed and put back.
@Suite(.serialized)
struct NetworkGuardStampEndToEndTests {
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

        // Unchanged ruleset: the next prepare does not run nft at all (a path that does not exist is
        // never tried), and the rules are still there.
        try world.writeConfig(runnerExtra: "nft = \"/nonexistent/nft\"")
        let unchanged = world.simulate(SimulatedJob(script: ["echo unchanged"]))
        #expect(unchanged.status == "success", "\(TestWorld.redacted(unchanged.log))")

        // This range's rules and set element removed (as a firewall reload would): the generation has
        // moved, so the next prepare asks nft, and with nft missing it fails rather than run the job
        // unguarded.
        let listing = Self.nft(["-a", "list", "chain", "inet", "airlock", "output"]).stdout
        let handles = listing.split(separator: "\n").filter { $0.contains(marker) }.compactMap { $0.components(separatedBy: "# handle ").last }
        #expect(handles.count == 3, "\(listing)")
        for h in handles { #expect(Self.nft(["delete", "rule", "inet", "airlock", "output", "handle", h]).code == 0) }
        #expect(Self.nft(["delete", "element", "inet", "airlock", "ranges", "{ \(element) }"]).code == 0)
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
