public import AirlockConfiguration
import Federation
import Foundation
import Policy

/// `airlock policy export --format backstage` (issue 18): the policy as Backstage catalog entities
/// (apiVersion backstage.io/v1alpha1), so that a developer portal shows who gets what:
/// - one `Group` per delegation (type `team`);
/// - one `Resource` per profile (type from its provider, e.g. `aws-iam-role`), owned by the team it is
///   delegated to (the first, by name) or by `owner`, annotated with what it reaches;
/// - one `Component` per GitLab project a rule names by id or path, annotated
///   `gitlab.com/project-id` / `gitlab.com/project-slug` for the GitLab plugin, owned by the rule's
///   team, and depending on the resources its rules grant.
/// YAML documents separated by `---`, in a fixed order with sorted keys: deterministic.
public enum BackstageExport {
    public static let apiVersion = "backstage.io/v1alpha1"

    /// Each entity as a dictionary (what the tests check against the catalog schema).
    public static func entities(_ config: AirlockConfig, owner: String = "platform") -> [[String: Any]] {
        var out: [[String: Any]] = []
        func group(_ team: String) -> String { "group:default/" + entityName(team) }
        // The owner of what is not delegated, and the teams' parent.
        out.append(entity("Group", name: owner, description: "Owns Airlock's main policy: providers, profiles and delegations",
                          annotations: [:], spec: ["type": "team", "children": config.delegations.map { group($0.team) }.sorted()]))
        for d in config.delegations.sorted(by: { $0.team < $1.team }) {
            out.append(entity("Group", name: d.team, description: "Airlock delegation: rules in \(d.scope), granting \(d.profiles.joined(separator: ", "))",
                              annotations: ["airlock.dev/scope": d.scope.description, "airlock.dev/profiles": d.profiles.joined(separator: ",")],
                              spec: ["type": "team", "children": [String](), "parent": group(owner)]))
        }
        for (name, p) in config.profiles.sorted(by: { $0.key < $1.key }) {
            let spec = config.providers[p.provider]
            let team = config.delegations.filter { $0.profiles.contains(name) }.map(\.team).sorted().first
            var annotations = ["airlock.dev/provider": p.provider, "airlock.dev/deliver": p.deliver.rawValue]
            for (k, v) in (spec?.settings.target ?? [:]).merging(p.settings.target, uniquingKeysWith: { _, b in b }) { annotations["airlock.dev/\(k.replacingOccurrences(of: "_", with: "-"))"] = v }
            out.append(entity("Resource", name: name, description: "Airlock profile \(name) (\(spec?.typeName ?? "?") via [providers.\(p.provider)])",
                              annotations: annotations,
                              spec: ["type": resourceType(spec?.typeName), "owner": group(team ?? owner)]))
        }
        var projects: [String: (annotations: [String: String], owner: String, profiles: Set<String>, rules: [String])] = [:]
        for rule in config.policy.rules {
            var ids: [String] = [], slugs: [String] = []
            for c in rule.conditions {
                let values: [String]
                switch c.matcher {
                case .exact(let v): values = [v]
                case .anyOf(let ms): values = ms.compactMap { if case .exact(let v) = $0 { v } else { nil } }
                default: values = []
                }
                if c.claim == "project_id" { ids += values }
                if c.claim == "project_path" { slugs += values }
            }
            for (key, value, annotation) in ids.map({ (entityName("gitlab-project-\($0)"), $0, "gitlab.com/project-id") }) + slugs.map({ (entityName(slugName($0)), $0, "gitlab.com/project-slug") }) {
                var p = projects[key] ?? ([annotation: value], group(rule.origin?.team ?? owner), [], [])
                p.profiles.formUnion(rule.grants)
                p.rules.append(rule.name)
                projects[key] = p
            }
        }
        for (key, p) in projects.sorted(by: { $0.key < $1.key }) {
            out.append(entity("Component", name: key, description: "GitLab project granted by Airlock rules: \(p.rules.joined(separator: "; "))",
                              annotations: p.annotations,
                              spec: ["type": "service", "lifecycle": "production", "owner": p.owner,
                                     "dependsOn": p.profiles.sorted().map { "resource:default/" + entityName($0) }]))
        }
        return out
    }

    public static func yaml(_ config: AirlockConfig, owner: String = "platform") -> String {
        entities(config, owner: owner).map { "---\n" + render($0, indent: 0, order: ["apiVersion", "kind", "metadata", "spec"]) }.joined()
    }

    static func entity(_ kind: String, name: String, description: String, annotations: [String: String], spec: [String: Any]) -> [String: Any] {
        ["apiVersion": apiVersion, "kind": kind,
         "metadata": ["name": entityName(name), "description": description, "annotations": annotations] as [String: Any], "spec": spec]
    }

    static func resourceType(_ providerType: String?) -> String {
        switch providerType {
        case "aws": "aws-iam-role"
        case "azure": "azure-workload-identity"
        case "gcp": "gcp-workload-identity"
        case "vault": "vault-role"
        case "oauth2": "oauth-api"
        default: "credential"
        }
    }

    /// Backstage's entity name: `[a-zA-Z0-9]` runs joined by single `-`, `_` or `.`, at most 63 characters.
    static func entityName(_ s: String) -> String {
        var out = ""
        for ch in s {
            if ch.isASCII && (ch.isLetter || ch.isNumber) { out.append(ch) } else if let last = out.last, last != "-" { out.append("-") }
        }
        while out.hasSuffix("-") { out.removeLast() }
        return String(out.prefix(63)).trimmingCharacters(in: CharacterSet(charactersIn: "-"))
    }

    static func slugName(_ path: String) -> String { "gitlab-" + path.replacingOccurrences(of: "/", with: "-") }

    /// A minimal YAML writer: mappings in block style, scalars as JSON strings (valid YAML), string lists in flow style.
    static func render(_ map: [String: Any], indent: Int, order: [String] = []) -> String {
        let pad = String(repeating: " ", count: indent)
        let keys = order.filter { map[$0] != nil } + map.keys.filter { !order.contains($0) }.sorted()
        var out = ""
        for k in keys {
            switch map[k] {
            case let m as [String: Any]:
                out += m.isEmpty ? "\(pad)\(k): {}\n" : "\(pad)\(k):\n" + render(m, indent: indent + 2)
            case let m as [String: String]:
                out += m.isEmpty ? "\(pad)\(k): {}\n" : "\(pad)\(k):\n" + render(m, indent: indent + 2)
            case let l as [String]:
                out += "\(pad)\(k): [" + l.map(quote).joined(separator: ", ") + "]\n"
            case let s as String:
                out += "\(pad)\(k): \(quote(s))\n"
            default:
                continue
            }
        }
        return out
    }

    static func quote(_ s: String) -> String {
        let data = (try? JSONSerialization.data(withJSONObject: [s], options: [.withoutEscapingSlashes])) ?? Data("[\"\"]".utf8)
        return String(String(decoding: data, as: UTF8.self).dropFirst().dropLast())
    }
}
