import ConfigSyntax
import Foundation
import Identity
import Ledger
public import Policy

/// `[[delegations]]` (issue 18): the platform team hands part of the policy to a team. The team
/// writes its rules in its own file (`[policy] include`), inside `scope`, granting only `profiles`.
/// Scope and profiles live in the main file, which the platform team owns: a team cannot widen its
/// own reach by editing its file.
public struct Delegation: Sendable, Equatable {
    public let team: String
    public let scope: DelegationScope
    public let profiles: [String]
    /// Where it is written, for messages.
    public let origin: RuleOrigin
}

/// The namespaces a team's rules may match: GitLab namespace ids, or namespace path globs.
public enum DelegationScope: Sendable, Equatable, CustomStringConvertible {
    case namespaceIDs([String])
    case namespacePaths([String])

    /// The condition every one of the team's rules gets, whatever else it says.
    public var condition: Condition {
        switch self {
        case .namespaceIDs(let ids): Condition(claim: "namespace_id", matcher: ids.count == 1 ? .exact(ids[0]) : .anyOf(ids.map(Matcher.exact)))
        case .namespacePaths(let globs): Condition(claim: "namespace_path", matcher: globs.count == 1 ? Matcher.pattern(globs[0]) : .anyOf(globs.map(Matcher.pattern)))
        }
    }

    public var description: String {
        switch self {
        case .namespaceIDs(let ids): "namespace_id " + ids.joined(separator: ", ")
        case .namespacePaths(let globs): "namespace_path " + globs.map(\.quoted).joined(separator: ", ")
        }
    }

    /// The alternatives of `condition` that reach outside this scope, described; empty when it
    /// stays inside (or says nothing about where the job is: the scope condition bounds it anyway).
    func escapes(_ condition: Condition) -> [String] {
        let alternatives: [Matcher]
        if case .anyOf(let ms) = condition.matcher { alternatives = ms } else { alternatives = [condition.matcher] }
        switch (self, condition.claim) {
        case (.namespaceIDs(let ids), "namespace_id"):
            return alternatives.compactMap { m in
                if case .exact(let v) = m, ids.contains(v) { return nil }
                return m.description
            }
        case (.namespacePaths(let globs), "namespace_path"):
            return alternatives.compactMap { m in Self.pathInside(m, globs, project: false) ? nil : m.description }
        case (.namespacePaths(let globs), "project_path"):
            return alternatives.compactMap { m in Self.pathInside(m, globs, project: true) ? nil : m.description }
        default:
            return []
        }
    }

    /// Whether every namespace (or every project's namespace, for `project`) `m` accepts is one a
    /// scope glob matches. Conservative: what cannot be shown inside is outside.
    static func pathInside(_ m: Matcher, _ globs: [String], project: Bool) -> Bool {
        func namespaceOf(_ path: String) -> String? {
            guard let slash = path.lastIndex(of: "/") else { return nil }
            return String(path[..<slash])
        }
        switch m {
        case .exact(let v):
            guard let ns = project ? namespaceOf(v) : v else { return false }
            return globs.contains { Matcher.pattern($0).matches(ns) }
        case .glob(let p):
            if !project && globs.contains(p) { return true }
            // Everything `p` matches starts with its text before the first wildcard.
            let fixed = String(p.prefix { $0 != "*" && $0 != "?" })
            let rest = p.dropFirst(fixed.count)
            for g in globs {
                if g.hasSuffix("/**") {
                    let base = String(g.dropLast(2))  // "X/"
                    // A namespace under X/: for a project, its namespace must also start with X/
                    // (one more "/" after X/ in the fixed part).
                    if fixed.hasPrefix(base) && (!project || fixed.dropFirst(base.count).contains("/")) { return true }
                } else if project && !g.contains("*") && !g.contains("?") {
                    // Projects directly in namespace g: "g/<one segment>".
                    if fixed.hasPrefix(g + "/") && !fixed.dropFirst(g.count + 1).contains("/") && !rest.contains("/") && !rest.contains("**") { return true }
                }
            }
            return false
        case .bool, .anyOf:
            return false
        }
    }
}

/// A team's file that could not be used: its rules (all of that team's) are left out, and this
/// says why, in `airlock check` and in each decision's audit record.
public struct PolicyProblem: Sendable, Equatable, CustomStringConvertible {
    public let team: String?
    public let file: String
    public let message: String
    public var description: String { (team.map { "team \($0): " } ?? "") + message }
}

extension AirlockConfig {
    /// `[policy]`: `include`, globs of team files: absolute, or relative to the main file's directory
    /// (so that two checkouts of a policy repository can be compared with `airlock policy diff`).
    static func parsePolicy(_ c: inout TOMLCursor, mainFile: String) throws(ConfigError) -> [String] {
        let include = try c.stringArray("include") ?? []
        for g in include where g.isEmpty || g.split(separator: "/").contains("..") {
            throw c.error("include", "must list paths or globs without '..', e.g. \"/etc/airlock/policy.d/*.toml\" or \"teams/*.toml\" (relative to this file), got \(g.quoted)")
        }
        try c.finish()
        let base = (mainFile as NSString).deletingLastPathComponent
        return include.map { $0.hasPrefix("/") ? $0 : (base.isEmpty ? "." : base) + "/" + $0 }
    }

    /// `[[delegations]]`.
    static func parseDelegations(_ cursors: [TOMLCursor], profiles: [String: ProfileSpec]) throws(ConfigError) -> [Delegation] {
        var out: [Delegation] = []
        for var c in cursors {
            let team = try c.requiredString("team", hint: "the team's name, as its files say team = \"...\"")
            guard TOMLCursor.matches(team, "^[a-z0-9][a-z0-9_.-]{0,62}$") else {
                throw c.error("team", "must be lower-case letters, digits, '-', '_' or '.', got \(team.quoted)")
            }
            guard !out.contains(where: { $0.team == team }) else { throw c.error("team", "team \(team.quoted) is delegated twice") }
            let ids = c.raw("namespace_id")
            let paths = c.raw("namespace_path")
            let scope: DelegationScope
            switch (ids, paths) {
            case (.some, .some), (nil, nil):
                throw c.error(nil, "delegation \(team.quoted) needs exactly one scope: namespace_id (a GitLab group id or a list of them) or namespace_path (a path or glob, or a list)")
            case (.some(let node), nil):
                guard let list = Self.scopeValues(node, ints: true), !list.isEmpty else {
                    throw c.error("namespace_id", "must be a group id or a non-empty list of ids, e.g. 42 or [42, 43]")
                }
                scope = .namespaceIDs(list)
            case (nil, .some(let node)):
                guard let list = Self.scopeValues(node, ints: false), !list.isEmpty,
                      list.allSatisfy({ !$0.isEmpty && !$0.hasPrefix("*") && !$0.hasPrefix("?") && !$0.hasPrefix("/") }) else {
                    throw c.error("namespace_path", "must be a group path or glob under one, or a non-empty list, e.g. \"payments\" or [\"payments\", \"payments/**\"] (a glob may not start with '*' or '?')")
                }
                scope = .namespacePaths(list)
            }
            guard let granted = try c.stringArray("profiles"), !granted.isEmpty else {
                throw c.error("profiles", "is required: the profiles the team's rules may grant, e.g. [\"payments-deploy\"]")
            }
            for p in granted where profiles[p] == nil {
                throw c.error("profiles", "profile \(p.quoted) is not defined (defined: \(profiles.keys.sorted().joined(separator: ", ")))")
            }
            _ = try c.string("description")
            try c.finish()
            out.append(Delegation(team: team, scope: scope, profiles: granted, origin: RuleOrigin(team: nil, file: c.file, findLine: { [index = c.index, path = c.path] in index.line(of: path) })))
        }
        return out
    }

    static func scopeValues(_ node: TOMLNode, ints: Bool) -> [String]? {
        func one(_ n: TOMLNode) -> String? {
            switch n {
            case .int(let i) where ints && i > 0: String(i)
            case .string(let s) where !ints: s
            default: nil
            }
        }
        if case .array(let items) = node {
            let values = items.compactMap(one)
            return values.count == items.count ? values : nil
        }
        return one(node).map { [$0] }
    }

    /// The team files `include` names, sorted (a glob's matches in name order).
    static func includedFiles(_ include: [String]) -> [String] {
        var out: [String] = []
        for pattern in include {
            var g = glob_t()
            defer { globfree(&g) }
            guard glob(pattern, 0, nil, &g) == 0 else { continue }
            for i in 0..<Int(g.gl_pathc) {
                if let p = g.gl_pathv[i].map({ String(cString: $0) }), !out.contains(p) { out.append(p) }
            }
        }
        return out.sorted()
    }

    /// A team file is at most this long.
    static let maximumTeamFileBytes = 1 << 20

    /// The delegation a file belongs to by where it is: any file in a directory named after the team
    /// (`teams/payments/*.toml`), or `<team>.toml`. A file's own `team =` line must agree: what it
    /// says never decides (a team writes its files; CODEOWNERS protects where they are).
    static func owner(of file: String, _ delegations: [Delegation]) -> Delegation? {
        let parent = ((file as NSString).deletingLastPathComponent as NSString).lastPathComponent
        let base = ((file as NSString).lastPathComponent as NSString).deletingPathExtension
        return delegations.first { $0.team == parent } ?? delegations.first { $0.team == base }
    }

    /// A team file's text: a regular file (not a symlink, device or directory), not writable by group
    /// or others, at most `maximumTeamFileBytes`, UTF-8.
    static func readTeamFile(_ file: String) throws(ConfigError) -> String {
        let fd = open(file, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else {
            throw ConfigError(message: "\(file): cannot be opened (\(String(cString: strerror(errno)))): a team's policy is a plain file, not a symlink")
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else {
            throw ConfigError(message: "\(file): is not a regular file: a team's policy is a plain file")
        }
        guard st.st_mode & 0o022 == 0 else {
            throw ConfigError(message: "\(file): is writable by group or others (mode \(String(st.st_mode & 0o777, radix: 8))): a policy file grants credentials; chmod go-w \(file)")
        }
        var data = Data()
        var buf = [UInt8](repeating: 0, count: 65536)
        while data.count <= maximumTeamFileBytes {
            let n = read(fd, &buf, buf.count)
            if n <= 0 { break }
            data.append(contentsOf: buf[0..<n])
        }
        guard data.count <= maximumTeamFileBytes else { throw ConfigError(message: "\(file): is larger than \(maximumTeamFileBytes / 1024) KiB") }
        guard let text = String(data: data, encoding: .utf8) else { throw ConfigError(message: "\(file): is not UTF-8 text") }
        return text
    }

    /// Reads every team file: the rules of each team whose files all pass, each bound to its scope;
    /// a problem for each file that does not, and none of that team's rules. A file belongs to the
    /// team its place names (`owner(of:)`), so a broken or hostile file can only take its own team's
    /// rules out. Rule names are the team's own (`payments/<name>`): one team's names cannot clash
    /// with another's.
    static func loadTeamRules(_ files: [String], delegations: [Delegation], profiles: [String: ProfileSpec],
                              mainRules: [Rule], warnings: inout [String]) -> (rules: [Rule], problems: [PolicyProblem]) {
        var byTeam: [String: [Rule]] = [:]
        var failedTeams = Set<String>()
        var problems: [PolicyProblem] = []
        let delegated = delegations.map(\.team).sorted().joined(separator: ", ")
        for file in files {
            guard let d = owner(of: file, delegations) else {
                problems.append(PolicyProblem(team: nil, file: file, message: "\(file): belongs to no delegated team: a team's file is <team>.toml or in a directory named after the team (delegated: \(delegated)); it is not read"))
                continue
            }
            do throws(ConfigError) {
                let text = try readTeamFile(file)
                var top = try TOMLCursor.parse(source: text, file: file)
                let name = try top.requiredString("team", hint: "\(d.team.quoted), the team this file belongs to")
                guard name == d.team else {
                    throw top.error("team", "says \(name.quoted), but this file is team \(d.team.quoted)'s (by its name or directory): a file cannot speak for another team")
                }
                _ = try top.string("description")
                var teamWarnings: [String] = []
                let taken = Set(mainRules.map(\.name) + byTeam.values.flatMap { $0.map(\.name) })
                let rules = try parseRules(try top.tableArray("rules"), profiles: profiles, warnings: &teamWarnings, delegation: d, takenNames: taken)
                try top.finish(allowed: ["team", "description", "rules"])
                warnings += teamWarnings
                byTeam[d.team, default: []] += rules
            } catch {
                failedTeams.insert(d.team)
                problems.append(PolicyProblem(team: d.team, file: file, message: error.message + "; this team's rules are left out until it is fixed"))
            }
        }
        let rules = byTeam.keys.sorted().filter { !failedTeams.contains($0) }.flatMap { byTeam[$0]! }
        return (rules, problems)
    }
}
