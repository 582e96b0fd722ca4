public import AirlockConfiguration
import Federation
public import Foundation
import Policy

/// `airlock policy export` (issue 18): the effective policy as data a portal and a reviewer can
/// read: who may get which profile, what each profile reaches, and which team owns each rule.
/// Deterministic: the same configuration and team files give the same bytes (sorted keys, rules in
/// policy order, team files in name order), so the export can be committed and diffed.
public enum PolicyExport {
    public static let formatVersion = 1

    /// The export as a JSON value.
    public static func document(_ config: AirlockConfig) -> [String: Any] {
        // Files under the main file's directory are named relative to it: the export does not
        // change with where the policy repository is checked out.
        let base = (config.path as NSString).deletingLastPathComponent + "/"
        func file(_ path: String) -> String { path.hasPrefix(base) ? String(path.dropFirst(base.count)) : path }
        let delegated = Dictionary(grouping: config.delegations.flatMap { d in d.profiles.map { ($0, d.team) } }, by: \.0).mapValues { $0.map(\.1).sorted() }
        var profiles: [String: Any] = [:]
        for (name, p) in config.profiles {
            let spec = config.providers[p.provider]
            var entry: [String: Any] = [
                "provider": p.provider, "type": spec?.typeName ?? "?", "deliver": p.deliver.rawValue,
                "identity": spec?.identity.isAirlock == true ? "airlock" : "gitlab",
                "target": (spec?.settings.target ?? [:]).merging(p.settings.target) { _, profile in profile },
                "delegated_to": delegated[name] ?? [],
                "granted_by": config.policy.rules.filter { $0.grants.contains(name) }.map(\.name),
            ]
            if let stages = p.stages { entry["stages"] = stages }
            if let audience = spec?.airlockAudience(for: p.settings) { entry["audience"] = audience }
            profiles[name] = entry
        }
        let rules: [[String: Any]] = config.policy.rules.map { r in
            var entry: [String: Any] = ["name": r.name, "grants": r.grants, "conditions": r.conditions.map(condition)]
            entry["team"] = r.origin?.team ?? NSNull()
            if let o = r.origin { entry["file"] = file(o.file); entry["line"] = o.line ?? NSNull() }
            return entry
        }
        let delegations: [[String: Any]] = config.delegations.map { d in
            ["team": d.team, "scope": scope(d.scope), "profiles": d.profiles, "file": file(d.origin.file), "line": d.origin.line ?? NSNull()]
        }
        let problems: [[String: Any]] = config.policyProblems.map { ["team": $0.team ?? NSNull(), "file": file($0.file), "message": $0.message.replacingOccurrences(of: base, with: "")] }
        return ["airlock_policy_export": formatVersion, "profiles": profiles, "rules": rules, "delegations": delegations, "problems": problems]
    }

    /// The export as JSON text (sorted keys, two-space indentation, a final newline).
    public static func json(_ config: AirlockConfig) -> Data {
        var d = (try? JSONSerialization.data(withJSONObject: document(config), options: [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes])) ?? Data()
        d.append(0x0a)
        return d
    }

    static func scope(_ s: DelegationScope) -> [String: Any] {
        switch s {
        case .namespaceIDs(let ids): ["namespace_id": ids]
        case .namespacePaths(let globs): ["namespace_path": globs]
        }
    }

    /// `{"claim": "ref", "equals": "main"}`, `{"claim": "project_path", "glob": "a/*"}`, `{"claim": "x", "any_of": [...]}`.
    static func condition(_ c: Condition) -> [String: Any] {
        var out = matcher(c.matcher)
        out["claim"] = c.claim
        return out
    }

    static func matcher(_ m: Matcher) -> [String: Any] {
        switch m {
        case .exact(let v): ["equals": v]
        case .glob(let g): ["glob": g]
        case .bool(let b): ["equals": b ? "true" : "false"]
        case .anyOf(let ms): ["any_of": ms.map(matcher)]
        }
    }
}
