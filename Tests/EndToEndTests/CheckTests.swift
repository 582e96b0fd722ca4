import AirlockTesting
import Foundation
import Testing

/// `airlock check` predicts what would hurt a job or expose Airlock's keys (issue 11): key files
/// missing, unreadable, invalid, readable by others or inside a job-visible path; a uid range that
/// overlaps real users; the nftables rules that block the metadata services.
@Suite(.serialized)
struct CheckTests {
    static func oauth(_ keyFile: String) -> String {
        """
        [providers.auth0]
        type = "oauth2"
        token_endpoint = "http://127.0.0.1:9/oauth/token"
        client_id = "airlock"
        private_key_file = "\(keyFile)"
        """
    }

    static func makeKey(_ path: String, mode: Int) throws {
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        let r = TestWorld.launch("/usr/bin/openssl", ["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", path], environment: nil)
        #expect(r.code == 0, "\(r.stderr)")
        chmod(path, mode_t(mode))
    }

    @Test func aGoodKeyAndTheNetworkRulesPass() throws {
        let world = try TestWorld()
        let key = "\(world.root)/keys/client.pem"
        try Self.makeKey(key, mode: 0o600)
        try world.writeConfig(extra: Self.oauth(key))
        let r = world.run(["check", "--config", world.configPath])
        #expect(r.code == 0, "\(r.stdout)\(r.stderr)")
        #expect(r.stdout.contains("[providers.auth0] private_key_file: RS256 key"), "\(r.stdout)")
        #expect(r.stdout.contains("nftables: table inet airlock blocks the metadata services"), "\(r.stdout)")
        #expect(r.stdout.contains("job uids \(world.jobUIDs.lowerBound)-\(world.jobUIDs.upperBound)"))
    }

    @Test(arguments: ["missing", "world-readable", "not-a-key", "in-builds-root"])
    func aBadKeyFileIsAProblem(_ kind: String) throws {
        let world = try TestWorld()
        var key = "\(world.root)/keys/client.pem"
        var expected = ""
        switch kind {
        case "missing":
            expected = "private_key_file \(key) does not exist"
        case "world-readable":
            try Self.makeKey(key, mode: 0o644)
            expected = "private_key_file \(key) is readable by group or others (mode 644)"
        case "not-a-key":
            try FileManager.default.createDirectory(atPath: "\(world.root)/keys", withIntermediateDirectories: true)
            FileManager.default.createFile(atPath: key, contents: Data("not a key\n".utf8), attributes: [.posixPermissions: 0o600])
            expected = "private_key_file \(key) is not a usable key"
        default:
            key = "\(world.root)/builds/client.pem"
            try Self.makeKey(key, mode: 0o600)
            expected = "private_key_file \(key) is inside \(world.root)/builds, where jobs can see or write"
        }
        try world.writeConfig(extra: Self.oauth(key))
        let r = world.run(["check", "--config", world.configPath])
        #expect(r.code != 0, "\(r.stdout)")
        #expect(r.stdout.contains("problem: [providers.auth0] \(expected)"), "\(r.stdout)")
    }

    @Test func aUIDRangeThatHoldsARealUserIsAProblem() throws {
        // Debian's `nobody` is 65534: a job uid equal to it would share its files and processes.
        let world = try TestWorld(runnerExtra: "job_uids = \"65530-65540\"")
        let r = world.run(["check", "--config", world.configPath])
        #expect(r.code != 0)
        #expect(r.stdout.contains("problem: [runner] job_uids 65530-65540 contains user nobody (65534) from /etc/passwd"), "\(r.stdout)")
        TestWorld.removeNetworkRules(marker: "airlock uids 65530-65540")
    }

    @Test func isolationNoneIsWarnedAbout() throws {
        let world = try TestWorld(isolation: "none")
        let r = world.run(["check", "--config", world.configPath])
        #expect(r.stdout.contains("warning: [runner] isolation = \"none\" is UNSAFE"), "\(r.stdout)")
    }
}
