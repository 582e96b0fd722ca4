import ConfigSyntax
import Foundation
import Testing

/// The line index every read of a configuration builds (issue 19: trimmed in the standard library,
/// not through NSString): it trims exactly what Foundation's `trimmingCharacters(in: .whitespaces)`
/// trims, and still names the lines of keys and tables.
struct TOMLLineIndexTests {
    @Test func itTrimsWhatFoundationTrims() {
        // Tab, Unicode's space separators (Zs) and the zero width space are white space here;
        // newlines, the Mongolian vowel separator and the byte order mark are not.
        let parts = [" ", "\t", "\u{00A0}", "\u{1680}", "\u{2003}", "\u{3000}", "\n", "\r", "\u{200B}", "\u{180E}", "\u{FEFF}", "a", "é", "=", "\u{0301}"]
        var rng = SystemRandomNumberGenerator()
        var differing: [String] = []
        for n in 0..<5_000 {
            let count = n < parts.count ? 1 : Int.random(in: 0...6, using: &rng)
            let s = n < parts.count ? parts[n] : (0..<count).map { _ in parts.randomElement(using: &rng)! }.joined()
            let ours = String(TOMLLineIndex.trimmed(s[...]))
            if ours != s.trimmingCharacters(in: .whitespaces) { differing.append(s.unicodeScalars.map { String($0.value, radix: 16) }.joined(separator: " ")) }
        }
        let count = differing.count
        #expect(count == 0, "e.g. \(differing.prefix(3))")
    }

    @Test func itNamesTheLinesOfTablesArraysAndKeys() {
        let source = """
        # comment = not a key
        [runner]
          state_dir = "/var/lib/airlock"\t
        \u{00A0}[[rules]]
        name = "a"
        [[rules]]
        name = "b"
        [providers."aws.main"]
        role = "x"
        """
        let index = TOMLLineIndex(source: source)
        #expect(index.line(of: ["runner", "state_dir"]) == 3)
        #expect(index.line(of: ["rules[0]", "name"]) == 5)
        #expect(index.line(of: ["rules[1]", "name"]) == 7)
        #expect(index.line(of: ["providers", "aws.main", "role"]) == 9)
        #expect(index.line(of: ["comment"]) == nil)
    }
}
