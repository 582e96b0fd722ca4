@testable import AirlockConfiguration
import Federation
import Foundation
import Ledger
import RunnerContract
import Testing

/// Issue 19: run and cleanup read the job's compiled view (`JobView`) instead of parsing its
/// configuration snapshot again. The view must say what the snapshot says, field for field, and a
/// view that is missing or does not read must fall back to the snapshot.
struct JobViewTests {
    /// The shipped example's providers, profiles and rules, under a `[runner]` that sets every key
    /// to something other than its default.
    static func exampleWithEveryRunnerKey() throws -> AirlockConfig {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let example = try String(contentsOf: root.appendingPathComponent("runner-config/airlock.toml.example"), encoding: .utf8)
        let rest = example[example.range(of: "\n[gitlab]")!.lowerBound...]
        return try AirlockConfig.parse("""
        [runner]
        builds_root = "/srv/ci/builds"
        cache_root = "/srv/ci/cache"
        state_dir = "/srv/ci/state"
        homes_root = "/srv/ci/homes \\"quoted\\" ü"
        audit_log = "/srv/log/audit.jsonl"
        isolation = "none"
        graceful_kill = "2.5s"
        job_path = "/opt/tools/bin:/usr/bin"
        bwrap = "/opt/bwrap"
        federation_timeout = "45s"
        sweep_grace = "2h"
        secrets_root = "/dev/shm/ci-secrets"
        endpoint_min_validity = "20m"
        endpoint_requests_per_second = 7
        job_uids = "2100000000-2100000010"
        block_metadata = false
        nft = "/usr/sbin/nft"
        hide = ["/srv/secrets", "/opt/keys"]
        \(rest)
        """, path: "/etc/airlock/airlock.toml")
    }

    @Test func theViewSaysWhatTheConfigurationSaysAndReadsBackTheSame() throws {
        let config = try Self.exampleWithEveryRunnerKey()
        let view = JobView(config)
        // Every stored property of RunnerSettings is in the view's JSON (job_uids as its two ends):
        // a setting added later fails here until the view carries it.
        let runnerKeys = try #require(try JSONReader.parse(Array(view.json.utf8))["runner"]).objectKeys
        #expect(runnerKeys.count == Mirror(reflecting: config.runner).children.count + 1, "\(runnerKeys)")
        let back = try #require(JobView(json: Array(view.json.utf8)))
        #expect("\(back.runner)" == "\(config.runner)")
        #expect(back.path == config.path && back.tokenVariables == config.consumedTokenVariables)
        #expect(back.tokenIssuer == "https://gitlab.example.com")
        #expect(back.tokenAudiences.contains("https://airlock.example.com") && back.tokenAudiences.count >= 2)
        #expect(back.hiddenFiles == config.referencedFiles.map(\.path) && back.hiddenFiles.contains("/etc/airlock/auth0-client.pem"))
        let profiles = config.profiles.mapValues { JobView.Delivery(mode: $0.deliver, stages: $0.stages) }
        #expect(back.deliveries == profiles && profiles.count == 11)
        #expect(back.deliveries["deploy-prod"]?.stages == ["build_script", "after_script"] && back.deliveries["deploy-long"]?.mode == .endpoint)

        // Without [gitlab]: no issuer, nothing to scrub by claims.
        let bare = JobView(try AirlockConfig.parse("[runner]\nstate_dir = \"/srv/s\"\n"))
        let bareBack = try #require(JobView(json: Array(bare.json.utf8)))
        #expect(bareBack.tokenIssuer == nil && bareBack.tokenAudiences.isEmpty && bareBack.deliveries.isEmpty && bareBack.runner.jobPath == nil)
    }

    /// A view with anything missing or of the wrong type is not read (the stage falls back to the
    /// snapshot), rather than read with a default in its place.
    @Test func aBrokenViewIsNotRead() throws {
        let json = JobView(try Self.exampleWithEveryRunnerKey()).json
        #expect(JobView(json: Array(json.utf8)) != nil)
        let broken = [
            json.replacingOccurrences(of: #""isolation":"none""#, with: #""isolation":"chroot""#),
            json.replacingOccurrences(of: #""block_metadata":false"#, with: #""block_metadata":"false""#),
            json.replacingOccurrences(of: #""job_uid_first":2100000000"#, with: #""job_uid_first":2100000011"#),
            json.replacingOccurrences(of: #""job_uid_last":2100000010"#, with: #""job_uid_last":-1"#),
            json.replacingOccurrences(of: #""graceful_kill":"2.5""#, with: #""graceful_kill":"soon""#),
            json.replacingOccurrences(of: #""deliver":"endpoint""#, with: #""deliver":"pigeon""#),
            json.replacingOccurrences(of: #""nft":"/usr/sbin/nft","#, with: ""),
            json.replacingOccurrences(of: #""token_issuer":"https://gitlab.example.com""#, with: #""token_issuer":7"#),
            String(json.dropLast()), "", "[]",
        ]
        for (n, text) in broken.enumerated() {
            #expect(text != json, "case \(n) changed nothing")
            #expect(JobView(json: Array(text.utf8)) == nil, "case \(n) was read")
        }
    }

    /// A stage reads the job's view when there is one, and the snapshot when the view is missing or
    /// does not read; the view is named by the path the stage was given, as the snapshot is.
    @Test func aStageReadsTheViewAndFallsBackToTheSnapshot() throws {
        let dir = NSTemporaryDirectory() + "airlock-view-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = "\(dir)/airlock.toml"
        let text = "[runner]\nbuilds_root = \"\(dir)/b\"\ncache_root = \"\(dir)/c\"\nstate_dir = \"\(dir)/s\"\naudit_log = \"\(dir)/a.jsonl\"\nisolation = \"none\"\ngraceful_kill = \"3s\"\n"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        let config = try AirlockConfig.load(path: path)
        let state = JobStateStore.directory(stateDir: "\(dir)/s", jobID: "77")
        try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true)
        try config.saveSnapshot(state: state)
        let viewFile = "\(state)/\(JobView.file)"
        #expect(FileManager.default.fileExists(atPath: viewFile))
        #expect(try AirlockConfig.viewForJob(path: path, jobID: "77").runner.gracefulKill == 3)

        // The view is what is read: one that says otherwise wins over the snapshot...
        let edited = try String(contentsOfFile: viewFile, encoding: .utf8).replacingOccurrences(of: #""graceful_kill":"3.0""#, with: #""graceful_kill":"4.0""#)
        try edited.write(toFile: viewFile, atomically: true, encoding: .utf8)
        #expect(try AirlockConfig.viewForJob(path: path, jobID: "77").runner.gracefulKill == 4)
        // ...one that does not read, or none, and the snapshot is parsed.
        try "{".write(toFile: viewFile, atomically: true, encoding: .utf8)
        #expect(try AirlockConfig.viewForJob(path: path, jobID: "77").runner.gracefulKill == 3)
        try FileManager.default.removeItem(atPath: viewFile)
        let fromSnapshot = try AirlockConfig.viewForJob(path: path, jobID: "77")
        #expect(fromSnapshot.runner.gracefulKill == 3 && fromSnapshot.path == path)
    }
}

private extension JSONNode {
    var objectKeys: [String] { if case .object(let m) = self { m.map(\.key) } else { [] } }
}
