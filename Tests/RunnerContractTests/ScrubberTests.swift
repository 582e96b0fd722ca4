import Foundation
import Testing
@testable import RunnerContract

struct ScrubberTests {
    static let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"

    @Test func removesTokenValueFromAnsiCQuotedBody() {
        let script = "(trap 'exit 1' TERM; eval $'export CI_JOB_ID=1\\nexport AIRLOCK_ID_TOKEN=\(Self.jwt)\\necho hi\\n') < /dev/null"
        let (out, n) = ScriptScrubber.scrub(script, removing: [Self.jwt])
        #expect(n == 1)
        #expect(!out.contains(Self.jwt))
        #expect(out.contains("export AIRLOCK_ID_TOKEN=\\n"))
    }

    /// However the runner quotes it, and however often it appears (a job copies it into other
    /// variables), every occurrence goes and the rest of the script stays as it was.
    struct Quoting: Sendable, CustomTestStringConvertible {
        let name: String
        let script: String
        let occurrences: Int
        var testDescription: String { name }
    }

    static let quotings: [Quoting] = [
        .init(name: "single quotes", script: "export AIRLOCK_ID_TOKEN='\(jwt)'\necho ok\n", occurrences: 1),
        .init(name: "double quotes", script: "export AIRLOCK_ID_TOKEN=\"\(jwt)\"\necho ok\n", occurrences: 1),
        .init(name: "copied into two more variables", script: "export A=\(jwt)\nexport B=\(jwt)\nexport C=x\(jwt)y\necho ok\n", occurrences: 3),
        .init(name: "a file variable's content", script: "printf '%s' '\(jwt)' > \"$TMP/token\"\necho ok\n", occurrences: 1),
    ]

    @Test(arguments: quotings)
    func everyOccurrenceIsRemoved(_ q: Quoting) {
        let (out, n) = ScriptScrubber.scrub(q.script, removing: [Self.jwt])
        #expect(n == q.occurrences)
        #expect(!out.contains(Self.jwt))
        #expect(out == q.script.replacingOccurrences(of: Self.jwt, with: ""))
        #expect(out.hasSuffix("echo ok\n"))
    }

    @Test func valuesShorterThanEightCharactersAreLeftAlone() {
        let script = "export SHORT=abc1234\necho abc1234\n"
        let (out, n) = ScriptScrubber.scrub(script, removing: ["abc1234"])
        #expect(n == 0)
        #expect(out == script)
    }
}
