import AirlockConfiguration
import Foundation
import Identity
public import Policy

/// `airlock policy diff OLD NEW` (issue 18): which grants a policy change adds or removes, per
/// project and ref class: what a reviewer needs before merging a team's file.
///
/// The projects are the ones the two policies' rules name (by id or path, or a namespace: then "any
/// project" in it); the ref classes are a protected default branch, an unprotected branch, a
/// protected tag, every `ref` a rule names, and a deployment to every `environment` a rule names.
/// Each project × class is a synthetic job, evaluated against both policies.
public enum PolicyDiff {
    /// One change: a profile a job class gains or loses, and the rules responsible.
    public struct Change: Sendable, Equatable, Comparable {
        public let project: String
        public let refClass: String
        public let added: Bool
        public let profile: String
        /// The rules that grant it in the policy that has it, with their team.
        public let rules: [String]

        public static func < (a: Change, b: Change) -> Bool {
            (a.project, a.refClass, a.profile, a.added ? 1 : 0) < (b.project, b.refClass, b.profile, b.added ? 1 : 0)
        }

        public var line: String {
            "\(project), \(refClass): \(added ? "+" : "-") \(profile) (\(rules.joined(separator: "; ")))"
        }
    }

    /// A synthetic job: what it is called, and its claims.
    struct Subject {
        let label: String
        let claims: [String: String]
    }

    /// Rules added, removed or changed (conditions or grants), by name: what the synthetic jobs may miss
    /// (conditions on claims they do not carry) still shows.
    public static func ruleChanges(old: Policy, new: Policy) -> [String] {
        var out: [String] = []
        let before = Dictionary(old.rules.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        let after = Dictionary(new.rules.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        for name in Set(before.keys).union(after.keys).sorted() {
            switch (before[name], after[name]) {
            case (nil, let r?): out.append("rule added: \(name.debugDescription) grants \(r.grants.joined(separator: ", "))")
            case (let r?, nil): out.append("rule removed: \(name.debugDescription) granted \(r.grants.joined(separator: ", "))")
            case (let a?, let b?) where a.conditions != b.conditions || a.grants != b.grants:
                out.append("rule changed: \(name.debugDescription)" + (a.grants != b.grants ? " grants \(a.grants.joined(separator: ", ")) → \(b.grants.joined(separator: ", "))" : " (conditions)"))
            default: break
            }
        }
        return out
    }

    public static func changes(old: Policy, new: Policy) -> [Change] {
        let rules = old.rules + new.rules
        var out: [Change] = []
        for project in projects(rules) {
            for refClass in refClasses(rules) {
                let job = VerifiedJob(claims: project.claims.merging(refClass.claims) { a, _ in a }
                    .merging(["pipeline_source": "push", "ref_path": "refs/heads/" + (refClass.claims["ref"] ?? "")]) { a, _ in a })
                let before = Dictionary(uniqueKeysWithValues: old.evaluate(job).grants.map { ($0.profile, $0.rules) })
                let after = Dictionary(uniqueKeysWithValues: new.evaluate(job).grants.map { ($0.profile, $0.rules) })
                for (profile, by) in after where before[profile] == nil {
                    out.append(Change(project: project.label, refClass: refClass.label, added: true, profile: profile, rules: describe(by, in: new)))
                }
                for (profile, by) in before where after[profile] == nil {
                    out.append(Change(project: project.label, refClass: refClass.label, added: false, profile: profile, rules: describe(by, in: old)))
                }
            }
        }
        return out.sorted()
    }

    static func describe(_ names: [String], in policy: Policy) -> [String] {
        names.map { name in
            let team = policy.rules.first { $0.name == name }?.origin?.team
            return "rule \(name.debugDescription)" + (team.map { ", team \($0)" } ?? "")
        }
    }

    /// Values a matcher names: its exact values, and one sample for each glob.
    static func samples(_ m: Matcher) -> [String] {
        switch m {
        case .exact(let v): [v]
        case .glob(let g): [g.replacingOccurrences(of: "**", with: "x").replacingOccurrences(of: "*", with: "x").replacingOccurrences(of: "?", with: "x")]
        case .bool(let b): [b ? "true" : "false"]
        case .anyOf(let ms): ms.flatMap(samples)
        }
    }

    /// The projects the rules name, each with the identity claims a job there carries.
    static func projects(_ rules: [Rule]) -> [Subject] {
        var out: [String: Subject] = [:]
        for rule in rules {
            // Each claim's sample values that satisfy every condition on that claim (a team's rule has
            // its scope and its own namespace condition).
            var byClaim: [String: [String]] = [:]
            for claim in Set(rule.conditions.map(\.claim)) {
                let conditions = rule.conditions.filter { $0.claim == claim }
                let candidates = conditions.flatMap { samples($0.matcher) }
                let all = candidates.filter { v in conditions.allSatisfy { $0.matcher.matches(v) } }
                byClaim[claim] = Array(Set(all.isEmpty ? candidates : all)).sorted()
            }
            let ids = byClaim["project_id"] ?? []
            let paths = byClaim["project_path"] ?? []
            let nsIDs = byClaim["namespace_id"] ?? []
            let nsPaths = byClaim["namespace_path"] ?? []
            guard !(ids.isEmpty && paths.isEmpty && nsIDs.isEmpty && nsPaths.isEmpty) else { continue }
            for id in ids.isEmpty ? [nil] : ids.map(Optional.some) {
                for path in paths.isEmpty ? [nil] : paths.map(Optional.some) {
                    for nsID in nsIDs.isEmpty ? [nil] : nsIDs.map(Optional.some) {
                        for nsPath in nsPaths.isEmpty ? [nil] : nsPaths.map(Optional.some) {
                            let namespacePath = path.map { ($0 as NSString).deletingLastPathComponent } ?? nsPath
                            var claims: [String: String] = [:]
                            claims["project_id"] = id ?? "0"
                            claims["project_path"] = path ?? namespacePath.map { $0 + "/any-project" } ?? "any/any-project"
                            claims["namespace_id"] = nsID ?? "0"
                            claims["namespace_path"] = namespacePath ?? "any"
                            var label = id.map { "project \($0)" } ?? path.map { "project \($0)" } ?? "any project"
                            if id != nil, let path { label += " (\(path))" }
                            if path == nil, nsID != nil || nsPath != nil {
                                label += " in namespace " + [nsID, nsPath].compactMap { $0 }.joined(separator: " ")
                            }
                            out[label] = Subject(label: label, claims: claims)
                        }
                    }
                }
            }
        }
        return out.keys.sorted().map { out[$0]! }
    }

    /// The ref classes a review looks at.
    static func refClasses(_ rules: [Rule]) -> [Subject] {
        var out = [
            Subject(label: "protected main", claims: ["ref": "main", "ref_type": "branch", "ref_protected": "true"]),
            Subject(label: "unprotected branch", claims: ["ref": "feature", "ref_type": "branch", "ref_protected": "false"]),
            Subject(label: "protected tag", claims: ["ref": "v1.0.0", "ref_type": "tag", "ref_protected": "true"]),
        ]
        let refs = Set(rules.flatMap { $0.conditions.filter { $0.claim == "ref" }.flatMap { samples($0.matcher) } }).subtracting(["main", "feature", "v1.0.0"])
        for ref in refs.sorted() {
            out.append(Subject(label: "protected branch \(ref)", claims: ["ref": ref, "ref_type": "branch", "ref_protected": "true"]))
        }
        let environments = Set(rules.flatMap { $0.conditions.filter { $0.claim == "environment" }.flatMap { samples($0.matcher) } })
        for env in environments.sorted() {
            out.append(Subject(label: "protected main deploying to \(env)", claims: ["ref": "main", "ref_type": "branch", "ref_protected": "true",
                                                                                     "environment": env, "environment_protected": "true"]))
        }
        return out
    }
}
