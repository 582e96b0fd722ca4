public import Identity
public import RunnerContract

/// How one rule fared against a job: matched, or the first condition that failed and why.
public struct RuleEvaluation: Sendable, Equatable {
    public let rule: String
    public let matched: Bool
    /// "ref is \"feature/x\", rule wants \"main\"", when not matched.
    public let failure: String?
    public let grants: [String]
    /// Where the rule was written (a team's file, or the main file).
    public let origin: RuleOrigin?
}

/// The policy's answer for a job: every rule's evaluation and the union of granted profiles.
public struct Decision: Sendable, Equatable {
    public let evaluations: [RuleEvaluation]
    /// Granted profiles, sorted, each with the rules that granted it.
    public let grants: [Grant]

    /// Names of the rules that matched.
    public var matchedRules: [String] { evaluations.filter(\.matched).map(\.rule) }
}

/// Deny by default: a job gets the union of the grants of the rules whose conditions all hold.
public struct Policy: Sendable {
    public let rules: [Rule]
    public init(rules: [Rule]) { self.rules = rules }

    /// Evaluates every rule against the job's verified claims.
    public func evaluate(_ job: VerifiedJob) -> Decision {
        var evaluations: [RuleEvaluation] = []
        var byProfile: [String: [String]] = [:]
        for rule in rules {
            var failure: String?
            for c in rule.conditions {
                if let value = job[c.claim] {
                    if !c.matcher.matches(value) {
                        failure = "\(c.claim) is \(value.debugDescription), rule wants \(c.matcher)"
                        break
                    }
                } else if let list = job.listClaims[c.claim] {
                    if !list.contains(where: c.matcher.matches) {
                        failure = "\(c.claim) has no entry matching \(c.matcher)"
                        break
                    }
                } else {
                    failure = "\(c.claim) is absent from the token, rule wants \(c.matcher)"
                    break
                }
            }
            evaluations.append(RuleEvaluation(rule: rule.name, matched: failure == nil, failure: failure, grants: rule.grants, origin: rule.origin))
            if failure == nil { for p in rule.grants { byProfile[p, default: []].append(rule.name) } }
        }
        let grants = byProfile.keys.sorted().map { Grant(profile: $0, rules: byProfile[$0]!) }
        return Decision(evaluations: evaluations, grants: grants)
    }

    /// Narrows a decision to the profiles the job asked for with `AIRLOCK_PROFILES`.
    /// - Throws: `AirlockFailure` (the job's fault) for a profile no matching rule grants, saying
    ///   which rule could grant it and which of its conditions failed.
    public func narrow(_ decision: Decision, to requested: [String]) throws(AirlockFailure) -> [Grant] {
        var out: [Grant] = []
        for name in requested {
            if let g = decision.grants.first(where: { $0.profile == name }) {
                out.append(g)
                continue
            }
            let could = decision.evaluations.filter { $0.grants.contains(name) }
            let why = could.isEmpty
                ? "no rule grants it"
                : could.map { "rule \($0.rule.debugDescription) could grant it but \($0.failure ?? "did not match")" }.joined(separator: "; ")
            throw AirlockFailure(.job, "AIRLOCK_PROFILES asks for profile \(name.debugDescription), which this job is not granted: \(why)")
        }
        return out
    }
}
