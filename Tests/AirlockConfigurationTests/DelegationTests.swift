import AirlockConfiguration
import ConfigSyntax
import Foundation
import Identity
import Policy
import Testing

/// Issue 18, part 1: teams write their part of the policy in their own files, inside the scope and
/// with the profiles the platform team's main file delegates to them; a team's broken file leaves
/// out that team's rules only.
struct DelegationTests {
    /// A scratch policy directory with a main file and team files.
    final class World {
        let dir = NSTemporaryDirectory() + "airlock-delegation-\(UUID().uuidString)"
        var policyDir: String { dir + "/policy.d" }

        init() throws {
            try FileManager.default.createDirectory(atPath: dir + "/policy.d", withIntermediateDirectories: true)
        }
        deinit { try? FileManager.default.removeItem(atPath: dir) }

        @discardableResult
        func team(_ name: String, _ text: String, mode: Int = 0o644) -> String {
            let path = policyDir + "/" + name
            try? FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            FileManager.default.createFile(atPath: path, contents: Data(text.utf8), attributes: [.posixPermissions: mode])
            return path
        }

        static let main = """
        [runner]
        builds_root = "/srv/b"
        cache_root = "/srv/c"
        state_dir = "/srv/s"
        audit_log = "/srv/a.jsonl"

        [gitlab]
        issuer = "https://gitlab.example.com"
        audience = "https://airlock.example.com"

        [policy]
        include = ["POLICY/*.toml", "POLICY/*/*.toml"]

        [[delegations]]
        team = "payments"
        namespace_id = 42
        profiles = ["payments-deploy"]

        [[delegations]]
        team = "search"
        namespace_path = ["search", "search/**"]
        profiles = ["search-read"]

        [providers.aws]
        type = "aws"

        [profiles.payments-deploy]
        provider = "aws"
        role_arn = "arn:aws:iam::123456789012:role/payments-deploy"

        [profiles.search-read]
        provider = "aws"
        role_arn = "arn:aws:iam::123456789012:role/search-read"

        [profiles.prod-admin]
        provider = "aws"
        role_arn = "arn:aws:iam::123456789012:role/admin"

        [[rules]]
        name = "platform admins"
        project_id = 1
        ref_protected = true
        grant = ["prod-admin"]
        """

        func load(main: String = World.main) throws -> AirlockConfig {
            try AirlockConfig.parse(main.replacingOccurrences(of: "POLICY", with: policyDir), path: dir + "/airlock.toml")
        }
    }

    static let payments = """
    team = "payments"

    [[rules]]
    name = "payments api main"
    project_id = 1001
    ref = "main"
    ref_protected = true
    grant = ["payments-deploy"]
    """

    static let search = """
    team = "search"
    description = "search's rules"

    [[rules]]
    name = "search infra"
    project_path = "search/infra/*"
    grant = ["search-read"]
    """

    static func job(_ claims: [String: String]) -> VerifiedJob {
        VerifiedJob(claims: ["ref": "main", "ref_protected": "true", "namespace_id": "42", "namespace_path": "payments", "project_path": "payments/api",
                             "project_id": "1001"].merging(claims) { _, new in new })
    }

    @Test func twoTeamsFilesTogetherEachBoundToItsScope() throws {
        let w = try World()
        let paymentsFile = w.team("payments.toml", Self.payments)
        w.team("search/search.toml", Self.search)
        let c = try w.load()
        #expect(c.policyProblems.isEmpty, "\(c.policyProblems)")
        #expect(c.policy.rules.map(\.name) == ["platform admins", "payments/payments api main", "search/search infra"])
        let rule = try #require(c.policy.rules.first { $0.name == "payments/payments api main" })
        #expect(rule.origin == RuleOrigin(team: "payments", file: paymentsFile, line: 3))
        #expect(c.policy.rules[0].origin?.team == nil)
        // A payments job gets its profile; the same project id in another namespace does not: the
        // team's rules hold only inside its scope, whatever else they say.
        #expect(c.policy.evaluate(Self.job([:])).grants.map(\.profile) == ["payments-deploy"])
        let outside = c.policy.evaluate(Self.job(["namespace_id": "7", "namespace_path": "other"]))
        #expect(outside.grants.isEmpty)
        #expect(outside.evaluations.first { $0.rule == "payments/payments api main" }?.failure == #"namespace_id is "7", rule wants "42""#)
        // Search's scope is by path: its own group and those under it.
        let search = c.policy.evaluate(Self.job(["namespace_id": "9", "namespace_path": "search/infra", "project_path": "search/infra/indexer"]))
        #expect(search.grants.map(\.profile) == ["search-read"])
        // The team files are hidden from jobs like the rest of the configuration.
        #expect(c.referencedFiles.contains { $0.path == paymentsFile })
    }

    struct BadFile: Sendable, CustomTestStringConvertible {
        let name: String
        /// Where it is written, under the policy directory; its team by that place (nil: none).
        let path: String
        let team: String?
        let text: String
        let message: String
        var testDescription: String { name }
    }

    static let badFiles: [BadFile] = [
        .init(name: "another namespace id", path: "payments/extra.toml", team: "payments",
              text: "team = \"payments\"\n[[rules]]\nname = \"x\"\nnamespace_id = [42, 99]\ngrant = [\"payments-deploy\"]\n",
              message: "payments/extra.toml:4: [rules #1] namespace_id: rule \"payments/x\" would match outside team \"payments\"'s scope (namespace_id 42): \"99\" is not inside it"),
        .init(name: "a foreign profile", path: "payments/extra.toml", team: "payments",
              text: "team = \"payments\"\n[[rules]]\nname = \"x\"\nproject_id = 1001\ngrant = [\"prod-admin\"]\n",
              message: "payments/extra.toml:5: [rules #1] grant: rule \"payments/x\" grants \"prod-admin\", which is not delegated to team \"payments\""),
        .init(name: "a path outside the search scope", path: "search/extra.toml", team: "search",
              text: "team = \"search\"\n[[rules]]\nname = \"x\"\nproject_path = \"payments/api\"\ngrant = [\"search-read\"]\n",
              message: "search/extra.toml:4: [rules #1] project_path: rule \"search/x\" would match outside team \"search\"'s scope (namespace_path \"search\", \"search/**\"): \"payments/api\" is not inside it"),
        .init(name: "a glob wider than the scope", path: "search/extra.toml", team: "search",
              text: "team = \"search\"\n[[rules]]\nname = \"x\"\nnamespace_path = \"search*\"\ngrant = [\"search-read\"]\n",
              message: "search/extra.toml:4: [rules #1] namespace_path: rule \"search/x\" would match outside team \"search\"'s scope"),
        .init(name: "providers in a team file", path: "payments/extra.toml", team: "payments",
              text: "team = \"payments\"\n[providers.mine]\ntype = \"aws\"\n",
              message: "payments/extra.toml: providers: unknown key; allowed here: description, rules, team"),
        .init(name: "a file of no delegated team", path: "billing.toml", team: nil, text: "team = \"billing\"\n",
              message: "billing.toml: belongs to no delegated team"),
        .init(name: "a file that speaks for another team", path: "payments/takeover.toml", team: "payments",
              text: "team = \"search\"\n[[rules]]\nname = \"x\"\nproject_path = \"search/indexer\"\ngrant = [\"search-read\"]\n",
              message: "payments/takeover.toml:1: team: says \"search\", but this file is team \"payments\"'s (by its name or directory)"),
        .init(name: "a TOML syntax error", path: "search/extra.toml", team: "search", text: "team = \"search\"\n[[rules]\n",
              message: "search/extra.toml:2: TOML syntax error"),
        .init(name: "a rule name used twice by the team", path: "payments/extra.toml", team: "payments",
              text: "team = \"payments\"\n[[rules]]\nname = \"payments api main\"\nproject_id = 1001\ngrant = [\"payments-deploy\"]\n",
              message: "payments/extra.toml:3: [rules #1] name: duplicate rule name \"payments/payments api main\""),
    ]

    /// Each broken team file is a problem naming its file, line and rule; the team its place names
    /// loses its rules (from all its files); the other team's rules and the main file's stay. A file
    /// can only hurt its own team: one that claims to be another team's takes only its own out.
    @Test(arguments: badFiles)
    func aBrokenTeamFileLeavesOutThatTeamsRulesOnly(_ bad: BadFile) throws {
        let w = try World()
        w.team("payments.toml", Self.payments)
        w.team("search/search.toml", Self.search)
        let path = w.team(bad.path, bad.text)
        let c = try w.load()
        let problem = try #require(c.policyProblems.first, "no problem for \(bad.name)")
        #expect(c.policyProblems.count == 1 && problem.file == path)
        #expect(problem.message.hasPrefix(w.policyDir + "/" + bad.message), "\(problem.message)")
        #expect(problem.team == bad.team)
        let teamsInEffect = Set(c.policy.rules.compactMap(\.origin?.team))
        if let failed = bad.team {
            #expect(problem.message.contains("rules are left out"))
            #expect(!teamsInEffect.contains(failed))
        }
        #expect(c.policy.rules.contains { $0.name == "platform admins" })
        for team in ["payments", "search"] where team != bad.team { #expect(teamsInEffect.contains(team), "\(team)") }
    }

    /// A symlink (here to the other team's file) or a device is not a team's policy.
    @Test func aTeamFileMustBeAPlainFile() throws {
        let w = try World()
        let search = w.team("search.toml", Self.search)
        try FileManager.default.createDirectory(atPath: w.policyDir + "/payments", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: w.policyDir + "/payments/linked.toml", withDestinationPath: search)
        try FileManager.default.createSymbolicLink(atPath: w.policyDir + "/payments/device.toml", withDestinationPath: "/dev/zero")
        let c = try w.load()
        #expect(c.policyProblems.count == 2 && c.policyProblems.allSatisfy { $0.team == "payments" && $0.message.contains("a team's policy is a plain file") }, "\(c.policyProblems)")
        #expect(c.policy.rules.contains { $0.origin?.team == "search" } && !c.policy.rules.contains { $0.origin?.team == "payments" })
    }

    @Test func anIncludeThatMatchesNothingIsReported() throws {
        let w = try World()
        let c = try w.load()
        #expect(c.policyProblems.map(\.message) == ["[policy] include \"\(w.policyDir)/*.toml\" matches no file: no team's rules are read from it",
                                                     "[policy] include \"\(w.policyDir)/*/*.toml\" matches no file: no team's rules are read from it"])
    }

    @Test func aTeamFileOthersCanWriteIsLeftOut() throws {
        let w = try World()
        let path = w.team("payments.toml", Self.payments, mode: 0o666)
        chmod(path, 0o666)  // past the umask
        let c = try w.load()
        #expect(c.policyProblems.contains { $0.team == "payments" && $0.message.contains("writable by group or others") }, "\(c.policyProblems)")
        #expect(!c.policy.rules.contains { $0.origin?.team == "payments" })
    }

    /// The main file is the platform team's: a broken delegation is the whole configuration's error.
    @Test(arguments: [
        ("both scopes", "namespace_id = 42\nprofiles", "namespace_id = 42\nnamespace_path = \"payments\"\nprofiles", "delegation \"payments\" needs exactly one scope"),
        ("no scope", "namespace_id = 42\nprofiles", "profiles", "delegation \"payments\" needs exactly one scope"),
        ("undefined profile", "profiles = [\"payments-deploy\"]", "profiles = [\"payments-prod\"]", "profile \"payments-prod\" is not defined"),
        ("scope glob from the root", "namespace_path = [\"search\", \"search/**\"]", "namespace_path = \"**\"", "a glob may not start with '*' or '?'"),
        ("scope glob of any first letter", "namespace_path = [\"search\", \"search/**\"]", "namespace_path = \"?**\"", "a glob may not start with '*' or '?'"),
    ])
    func aBrokenDelegationIsAConfigError(_ name: String, _ from: String, _ to: String, _ message: String) throws {
        let w = try World()
        let main = World.main.replacingOccurrences(of: from, with: to)
        #expect(main != World.main, "\(name): the replacement did not apply")
        do {
            _ = try w.load(main: main)
            Issue.record("\(name) was accepted")
        } catch {
            #expect("\(error)".contains(message), "\(name): \(error)")
        }
    }
}
