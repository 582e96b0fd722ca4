import AirlockAdmin
import AirlockConfiguration
import AirlockTesting
import Foundation
import Testing

/// Issue 18, parts 2 and 3, on the README's example policy (docs/example-policy: a main file that
/// delegates to two teams, and their files): the JSON and Backstage exports are the committed ones,
/// do not depend on where the policy is checked out, and the Backstage entities satisfy the catalog's
/// entity schema; `policy diff` names what a team's change adds and removes.
struct PolicyExportTests {
    static let example = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("docs/example-policy").path

    /// A copy of the example policy elsewhere, to change or to compare.
    static func copy() throws -> String {
        let dir = NSTemporaryDirectory() + "airlock-policy-\(UUID().uuidString)"
        try FileManager.default.copyItem(atPath: example, toPath: dir)
        return dir
    }

    @Test func theJSONExportIsTheCommittedOneWhereverThePolicyLives() throws {
        let c = try AirlockConfig.load(path: Self.example + "/airlock.toml")
        #expect(c.policyProblems.isEmpty, "\(c.policyProblems)")
        let exported = PolicyExport.json(c)
        let committed = try Data(contentsOf: URL(fileURLWithPath: Self.example + "/export.json"))
        #expect(exported == committed, "regenerate with: airlock policy export --config docs/example-policy/airlock.toml --out docs/example-policy/export.json, and review the diff")
        let elsewhere = try Self.copy()
        defer { try? FileManager.default.removeItem(atPath: elsewhere) }
        #expect(PolicyExport.json(try AirlockConfig.load(path: elsewhere + "/airlock.toml")) == exported)
        // What a portal reads from it: each rule's team and file, each profile's target and owners.
        let doc = try #require(try JSONSerialization.jsonObject(with: exported) as? [String: Any])
        let rules = try #require(doc["rules"] as? [[String: Any]])
        #expect(rules.map { $0["team"] as? String ?? "platform" } == ["platform", "payments", "payments", "search"])
        #expect(rules[1]["file"] as? String == "teams/payments.toml" && rules[1]["line"] as? Int == 4)
        let scope = (rules[1]["conditions"] as? [[String: Any]])?.first
        #expect(scope?["claim"] as? String == "namespace_id" && scope?["equals"] as? String == "42")
        let deploy = (doc["profiles"] as? [String: Any])?["payments-deploy"] as? [String: Any]
        #expect((deploy?["target"] as? [String: String])?["role_arn"] == "arn:aws:iam::123456789012:role/payments-deploy")
        #expect(deploy?["delegated_to"] as? [String] == ["payments"] && deploy?["granted_by"] as? [String] == ["payments/payments api deploys from protected main"])
    }

    /// Backstage's catalog entity schema (backstage/backstage packages/catalog-model/src/schema:
    /// EntityMeta requires `metadata.name`; Resource requires `spec.type` and `spec.owner`, Group
    /// `spec.type` and `spec.children`, Component `spec.type`, `spec.lifecycle` and `spec.owner`, each
    /// a non-empty string; apiVersion backstage.io/v1alpha1 or v1beta1), restated here, plus the
    /// catalog's name rule (letters and digits joined by single '-', '_' or '.', at most 63), checked
    /// with PyYAML and jsonschema on the YAML as written.
    static let schemaCheck = #"""
    import json, sys, yaml, jsonschema
    text = open(sys.argv[1]).read()
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    s = {"type": "string", "minLength": 1}
    name = {"type": "string", "pattern": "^[a-zA-Z0-9]+([-_.][a-zA-Z0-9]+)*$", "maxLength": 63}
    base = {"type": "object", "required": ["apiVersion", "kind", "metadata", "spec"], "properties": {
        "apiVersion": {"enum": ["backstage.io/v1alpha1", "backstage.io/v1beta1"]},
        "metadata": {"type": "object", "required": ["name"], "properties": {"name": name,
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}}}}}}
    spec = {"Resource": {"required": ["type", "owner"], "properties": {"type": s, "owner": s, "dependsOn": {"type": "array", "items": s}}},
            "Group": {"required": ["type", "children"], "properties": {"type": s, "children": {"type": "array", "items": s}}},
            "Component": {"required": ["type", "lifecycle", "owner"], "properties": {"type": s, "lifecycle": s, "owner": s, "dependsOn": {"type": "array", "items": s}}}}
    seen = set()
    for d in docs:
        jsonschema.validate(d, base)
        jsonschema.validate(d["spec"], dict(type="object", **spec[d["kind"]]))
        key = (d["kind"], d["metadata"]["name"])
        assert key not in seen, key
        seen.add(key)
    print("valid", len(docs), " ".join(sorted({d["kind"] for d in docs})))
    """#

    @Test func theBackstageExportIsTheCommittedOneAndFitsTheCatalogSchema() throws {
        let c = try AirlockConfig.load(path: Self.example + "/airlock.toml")
        let yaml = BackstageExport.yaml(c)
        let committed = try String(contentsOfFile: Self.example + "/backstage.yaml", encoding: .utf8)
        #expect(yaml == committed, "regenerate with: airlock policy export --config docs/example-policy/airlock.toml --format backstage --out docs/example-policy/backstage.yaml")
        let file = NSTemporaryDirectory() + "airlock-backstage-\(UUID().uuidString).yaml"
        try Data(yaml.utf8).write(to: URL(fileURLWithPath: file))
        defer { try? FileManager.default.removeItem(atPath: file) }
        let r = TestWorld.launch("/usr/bin/env", ["python3", "-c", Self.schemaCheck, file], environment: nil)
        #expect(r.code == 0 && r.stdout == "valid 10 Component Group Resource\n", "\(r.stdout)\(r.stderr)")
        // The GitLab plugin's annotations link each project; the resources it depends on are the profiles granted.
        let entities = BackstageExport.entities(c)
        let project = entities.first { ($0["metadata"] as? [String: Any])?["name"] as? String == "gitlab-project-1001" }
        #expect(((project?["metadata"] as? [String: Any])?["annotations"] as? [String: String])?["gitlab.com/project-id"] == "1001")
        #expect((project?["spec"] as? [String: Any])?["dependsOn"] as? [String] == ["resource:default/payments-db", "resource:default/payments-deploy"])
        #expect((project?["spec"] as? [String: Any])?["owner"] as? String == "group:default/payments")
        // The checker itself refuses an entity without an owner.
        let broken = yaml.replacingOccurrences(of: "  owner: \"group:default/search\"\n", with: "")
        try Data(broken.utf8).write(to: URL(fileURLWithPath: file))
        let refused = TestWorld.launch("/usr/bin/env", ["python3", "-c", Self.schemaCheck, file], environment: nil)
        #expect(refused.code != 0 && refused.stderr.contains("'owner' is a required property"), "\(refused.stderr)")
    }

    @Test func aDiffNamesWhatATeamsChangeAddsAndRemoves() throws {
        let old = try AirlockConfig.load(path: Self.example + "/airlock.toml")
        let dir = try Self.copy()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(PolicyDiff.changes(old: old.policy, new: try AirlockConfig.load(path: dir + "/airlock.toml").policy).isEmpty)
        // Payments lets any branch deploy; search moves its grant from protected to unprotected branches.
        let payments = dir + "/teams/payments.toml", search = dir + "/teams/search.toml"
        try (String(contentsOfFile: payments, encoding: .utf8) + "\n[[rules]]\nname = \"payments api deploys from any branch\"\nproject_id = 1001\ngrant = [\"payments-deploy\"]\n")
            .write(toFile: payments, atomically: true, encoding: .utf8)
        try String(contentsOfFile: search, encoding: .utf8).replacingOccurrences(of: "ref_protected = true", with: "ref_protected = false")
            .write(toFile: search, atomically: true, encoding: .utf8)
        let new = try AirlockConfig.load(path: dir + "/airlock.toml")
        #expect(PolicyDiff.changes(old: old.policy, new: new.policy).map(\.line) == [
            #"project 1001 in namespace 42, protected tag: + payments-deploy (rule "payments/payments api deploys from any branch", team payments)"#,
            #"project 1001 in namespace 42, unprotected branch: + payments-deploy (rule "payments/payments api deploys from any branch", team payments)"#,
            #"project search/indexer, protected main: - search-gcs (rule "search/search indexer, protected branches", team search)"#,
            #"project search/indexer, protected tag: - search-gcs (rule "search/search indexer, protected branches", team search)"#,
            #"project search/indexer, unprotected branch: + search-gcs (rule "search/search indexer, protected branches", team search)"#,
        ])
        #expect(PolicyDiff.ruleChanges(old: old.policy, new: new.policy) == [
            #"rule added: "payments/payments api deploys from any branch" grants payments-deploy"#,
            #"rule changed: "search/search indexer, protected branches" (conditions)"#,
        ])
        // A change the synthetic jobs cannot see (they are push pipelines) still shows as a rule change.
        let scheduled = try Self.copy()
        defer { try? FileManager.default.removeItem(atPath: scheduled) }
        try (String(contentsOfFile: scheduled + "/teams/payments.toml", encoding: .utf8) + "\n[[rules]]\nname = \"nightly\"\nproject_id = 1001\npipeline_source = \"schedule\"\ngrant = [\"payments-deploy\"]\n")
            .write(toFile: scheduled + "/teams/payments.toml", atomically: true, encoding: .utf8)
        let nightly = try AirlockConfig.load(path: scheduled + "/airlock.toml")
        #expect(PolicyDiff.changes(old: old.policy, new: nightly.policy).isEmpty)
        #expect(PolicyDiff.ruleChanges(old: old.policy, new: nightly.policy) == [#"rule added: "payments/nightly" grants payments-deploy"#])
        // A team file that breaks takes that team's grants away, and the diff says so.
        try "team = \"search\"\n[[rules]\n".write(toFile: search, atomically: true, encoding: .utf8)
        let broken = try AirlockConfig.load(path: dir + "/airlock.toml")
        #expect(broken.policyProblems.count == 1)
        #expect(PolicyDiff.changes(old: old.policy, new: broken.policy).contains { !$0.added && $0.profile == "search-gcs" && $0.refClass == "protected main" })
    }
}
