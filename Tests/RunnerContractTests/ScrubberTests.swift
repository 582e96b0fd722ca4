import Testing
@testable import RunnerContract

struct ScrubberTests {
    @Test func removesTokenValueFromAnsiCQuotedBody() {
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
        let script = "(trap 'exit 1' TERM; eval $'export CI_JOB_ID=1\\nexport AIRLOCK_ID_TOKEN=\(jwt)\\necho hi\\n') < /dev/null"
        let (out, n) = ScriptScrubber.scrub(script, removing: [jwt])
        #expect(n == 1)
        #expect(!out.contains(jwt))
        #expect(out.contains("export AIRLOCK_ID_TOKEN=\\n"))
    }
}
