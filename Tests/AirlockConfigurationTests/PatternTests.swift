import ConfigSyntax
import Foundation
import Testing

/// `Pattern` (issue 19: the configuration's checks without ICU) against ICU's regex engine (NSString's
/// `.regularExpression`, which the checks used before) on every pattern the configuration uses, with
/// strings made from valid values by random edits and from the pattern's own characters.
struct PatternTests {
    /// Each pattern the checks use, with values it accepts.
    static let cases: [(pattern: String, valid: [String])] = [
        ("^[A-Za-z_][A-Za-z0-9_]*$", ["GITLAB_OIDC_TOKEN", "_x", "A1"]),
        ("^[a-z0-9][a-z0-9_.-]{0,62}$", ["platform", "team-a.b_c", "0"]),
        (#"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"#, ["9f8e7d6c-1111-2222-3333-444455556666", "ABCDEF01-abcd-0000-ffff-0123456789ab"]),
        (#"^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$"#, ["contoso.onmicrosoft.com", "a.b", "x-1.y-2.z"]),
        ("^[a-z0-9-]{3,50}$", ["airlock-cosmos", "abc"]),
        (#"^//iam\.googleapis\.com/projects/[0-9]+/locations/global/workloadIdentityPools/[a-z0-9-]+/providers/[a-z0-9-]+$"#,
         ["//iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/gitlab/providers/gitlab-ci"]),
        (#"^arn:aws(-cn|-us-gov|-iso|-iso-b)?:iam::([0-9]{12}|\{[a-z_]+\}):role/([A-Za-z0-9+=,.@_/-]|\{[a-z_]+\})+$"#,
         ["arn:aws:iam::123456789012:role/ci-deploy", "arn:aws-us-gov:iam::{account}:role/ci/{project_id}-x", "arn:aws-iso-b:iam::000000000000:role/a+=,.@_/-"]),
        (#"^arn:aws(-cn|-us-gov|-iso|-iso-b)?:iam::([0-9]{12}|aws):policy/[A-Za-z0-9+=,.@_/-]+$"#,
         ["arn:aws:iam::aws:policy/ReadOnlyAccess", "arn:aws-cn:iam::123456789012:policy/team/x"]),
    ]

    private static func icu(_ v: String, _ pattern: String) -> Bool { v.range(of: pattern, options: .regularExpression) != nil }

    @Test(arguments: 0..<cases.count)
    func itAgreesWithICU(_ n: Int) {
        let (pattern, valid) = Self.cases[n]
        let compiled = Pattern(pattern)
        // The pattern's own characters, the valid values' and a few others (non-ASCII, space, NUL).
        let alphabet = Array(Set(pattern.unicodeScalars.filter { !"^$\\()|?*+{}[]".unicodeScalars.contains($0) } + valid.flatMap(\.unicodeScalars)
                                 + ["{", "}", "-", ".", "/", ":", " ", "\u{0}", "é", "Z", "9", "\t"]))
        var rng = SystemRandomNumberGenerator()
        var samples = valid
        for _ in 0..<4_000 {
            var s = Array(valid.randomElement(using: &rng)!.unicodeScalars)
            for _ in 0..<Int.random(in: 1...3, using: &rng) {
                let i = Int.random(in: 0...s.count, using: &rng)
                switch Int.random(in: 0..<3, using: &rng) {
                case 0: s.insert(alphabet.randomElement(using: &rng)!, at: i)
                case 1: if i < s.count { s.remove(at: i) }
                default: if i < s.count { s[i] = alphabet.randomElement(using: &rng)! }
                }
            }
            samples.append(String(String.UnicodeScalarView(s)))
        }
        for _ in 0..<1_000 {
            let s = (0..<Int.random(in: 0...12, using: &rng)).map { _ in alphabet.randomElement(using: &rng)! }
            samples.append(String(String.UnicodeScalarView(s)))
        }
        // Long ones, for the upper bounds ({0,62}, {3,50}, {12}): a valid value with one of its own
        // characters repeated up to 70 times somewhere in it.
        for _ in 0..<1_000 {
            var s = Array(valid.randomElement(using: &rng)!.unicodeScalars)
            let i = Int.random(in: 0..<s.count, using: &rng)
            s.insert(contentsOf: Array(repeating: s[i], count: Int.random(in: 1...70, using: &rng)), at: i)
            samples.append(String(String.UnicodeScalarView(s)))
        }
        var accepted = 0
        var differing: [String] = []
        for s in samples {
            let ours = compiled.matches(s)
            if ours { accepted += 1 }
            if ours != Self.icu(s, pattern) { differing.append(s.debugDescription) }
        }
        let count = differing.count
        #expect(count == 0, "pattern \(pattern): e.g. \(differing.prefix(3))")
        // The generated strings exercise both answers.
        #expect(accepted > valid.count && accepted < samples.count)
    }

    /// ICU lets a value with a line break at its end through `$`; these checks do not.
    @Test func aLineBreakAtTheEndDoesNotPass() {
        for (pattern, valid) in Self.cases {
            for v in valid {
                #expect(Self.icu(v + "\n", pattern), "ICU \(pattern)")
                #expect(!Pattern(pattern).matches(v + "\n"), "\(pattern)")
                #expect(!Pattern(pattern).matches(v + "\r\n"), "\(pattern)")
            }
        }
    }
}
