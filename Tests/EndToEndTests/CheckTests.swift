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

    /// Issue 15: a P-256 key is a problem for an oauth2 provider unless it says the server takes
    /// ES256 (Auth0 does not); with `assertion_algorithm = "ES256"` it is a note.
    @Test(arguments: [false, true])
    func aP256KeyNeedsTheOperatorsWord(_ optIn: Bool) throws {
        let world = try TestWorld()
        let key = "\(world.root)/keys/client.pem"
        try FileManager.default.createDirectory(atPath: "\(world.root)/keys", withIntermediateDirectories: true)
        let gen = TestWorld.launch("/usr/bin/openssl", ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key], environment: nil)
        #expect(gen.code == 0, "\(gen.stderr)")
        chmod(key, 0o600)
        try world.writeConfig(extra: Self.oauth(key) + (optIn ? "\nassertion_algorithm = \"ES256\"\n" : "\n"))
        let r = world.run(["check", "--config", world.configPath])
        if optIn {
            #expect(r.code == 0, "\(r.stdout)\(r.stderr)")
            #expect(r.stdout.contains("[providers.auth0] private_key_file: ES256 key"), "\(r.stdout)")
        } else {
            #expect(r.code == 1, "\(r.stdout)\(r.stderr)")
            #expect(r.stdout.contains("problem: [providers.auth0] private_key_file \(key) is not a usable key") && r.stdout.contains("RS256, RS384 or PS256 only"), "\(r.stdout)")
        }
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

    /// Issue 14: directories that exist with the wrong mode or owner, a path that is a file.
    @Test(arguments: ["state_dir open to others", "builds_root writable by others", "cache_root not root's", "homes_root a file", "audit log writable by others"])
    func aDirectoryWithTheWrongModeOrOwnerIsAProblem(_ kind: String) throws {
        let world = try TestWorld()
        let fm = FileManager.default
        var expected = ""
        switch kind {
        case "state_dir open to others":
            try fm.createDirectory(atPath: world.stateDir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
            expected = "[runner] state_dir \(world.stateDir) is open to group or others (mode 755): jobs' ledgers and credentials are there; chmod 700 \(world.stateDir)"
        case "builds_root writable by others":
            try fm.createDirectory(atPath: "\(world.root)/builds", withIntermediateDirectories: true, attributes: [.posixPermissions: 0o777])
            chmod("\(world.root)/builds", 0o777)
            expected = "[runner] builds_root \(world.root)/builds is writable by group or others (mode 777): chmod go-w \(world.root)/builds"
        case "cache_root not root's":
            try fm.createDirectory(atPath: "\(world.root)/cache", withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
            chown("\(world.root)/cache", 65534, 65534)
            expected = "[runner] cache_root \(world.root)/cache belongs to uid 65534, not to Airlock's user (0): chown 0:0 \(world.root)/cache"
        case "homes_root a file":
            fm.createFile(atPath: "\(world.root)/homes", contents: Data())
            expected = "[runner] homes_root \(world.root)/homes is not a directory"
        default:
            fm.createFile(atPath: world.auditLog, contents: Data(), attributes: [.posixPermissions: 0o666])
            chmod(world.auditLog, 0o666)
            expected = "[runner] audit_log \(world.auditLog) is writable by group or others (mode 666): chmod 600 \(world.auditLog)"
        }
        let r = world.run(["check", "--config", world.configPath])
        #expect(r.code == 1, "\(r.stdout)")
        #expect(r.stdout.contains("problem: \(expected)"), "\(r.stdout)")
    }

    /// A fresh host: the directories are not there yet, which is no problem (the first job makes
    /// them), and check says so.
    @Test func directoriesNotYetMadeAreANote() throws {
        let world = try TestWorld()
        let r = world.run(["check", "--config", world.configPath])
        #expect(r.code == 0, "\(r.stdout)")
        #expect(r.stdout.contains("not there yet, made by the first job: state_dir"), "\(r.stdout)")
    }

    /// An endpoint profile needs airlock-endpoint beside the others; each executor is needed anyway.
    @Test func aMissingExecutableIsAProblem() throws {
        let world = try TestWorld(extra: """
        [providers.aws-main]
        type = "aws"
        sts_endpoint = "http://127.0.0.1:9"
        [profiles.deploy]
        provider = "aws-main"
        role_arn = "arn:aws:iam::123456789012:role/x"
        deliver = "endpoint"
        """)
        let bin = "\(world.root)/bin"
        try FileManager.default.createDirectory(atPath: bin, withIntermediateDirectories: true)
        for exe in ["airlock-config", "airlock-prepare", "airlock-cleanup"] {
            try FileManager.default.createSymbolicLink(atPath: "\(bin)/\(exe)", withDestinationPath: "\(world.binDir)/\(exe)")
        }
        let r = world.run(["check", "--config", world.configPath, "--bin-dir", bin])
        #expect(r.code == 1, "\(r.stdout)")
        #expect(r.stdout.contains("problem: airlock-run is not installed in \(bin) (the runner's config.toml runs it)"), "\(r.stdout)")
        #expect(r.stdout.contains("problem: airlock-endpoint is not installed in \(bin) (profiles deploy deliver through it)"), "\(r.stdout)")
        // Beside the real build, nothing is missing.
        let ok = world.run(["check", "--config", world.configPath])
        #expect(!ok.stdout.contains("is not installed"), "\(ok.stdout)")
    }

    /// Exit code 2 when there is nothing to check: the configuration cannot be read.
    @Test func anUnreadableConfigurationCannotBeChecked() throws {
        let world = try TestWorld()
        let r = world.run(["check", "--config", "\(world.root)/nowhere.toml"])
        #expect(r.code == 2, "\(r.stdout)\(r.stderr)")
        #expect(r.stdout.contains("cannot check: \(world.root)/nowhere.toml cannot be read"), "\(r.stdout)")
    }

    /// Every problem of the file at once, each with file, line and key (issue 14: only the first was).
    @Test func everyConfigProblemIsReportedAtOnce() throws {
        let world = try TestWorld(extra: """
        [providers.aws-main]
        type = "aws"
        [profiles.one]
        provider = "aws-main"
        role_arn = "arn:aws:iam::12345:rol/x"
        [profiles.two]
        provider = "aws-main"
        role_arn = "arn:aws:iam::123456789012:role/x"
        max_duration = "20h"
        """)
        let r = world.run(["check", "--config", world.configPath])
        #expect(r.code == 1, "\(r.stdout)")
        let problems = r.stdout.split(separator: "\n").filter { $0.hasPrefix("problem: \(world.configPath):") }
        #expect(problems.count == 2, "\(r.stdout)")
        #expect(r.stdout.contains("[profiles.one] role_arn: must be an IAM role ARN") && r.stdout.contains("[profiles.two] max_duration: must be between 15m and 12h"), "\(r.stdout)")
        #expect(r.stdout.contains("2 problem(s) in \(world.configPath)"), "\(r.stdout)")
    }
}
