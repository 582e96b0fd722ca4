import AirlockTesting
import Delivery
import Foundation
import Testing

/// Issue 13's leak hunt: a job prints a secret with ordinary tools, wrapped into lines, spaced out,
/// escaped, at any read size and pausing anywhere; the masked log must not give back any piece of
/// it of 8 bytes or more in any decoding (`LeakHunter`). Each row first shows that the hunter does
/// recover the secret from the same text unmasked, so a row cannot pass by testing nothing.
struct LeakHuntTests {
    /// 64 characters of the standard base64 alphabet, '+' and '/' included (the issue's case).
    static let secret = "q7Zp+Lw2/XeR9tKd0YbN4uVhC1sMa8Gf/Ej3Wo6Ti+Py5nBxQc7HlUr2Dz0Ak9mS"

    struct Printed: Sendable, CustomTestStringConvertible {
        let secretName: String
        let secret: String
        let tool: String
        let text: String
        var testDescription: String { "\(tool) of the \(secretName)" }
    }

    /// What the tools print, made by the tools themselves (coreutils, xxd, hexdump, python3).
    static func printed(_ name: String, _ s: String) -> [Printed] {
        let sh = #"""
        s=$1
        emit() { printf '%s\0' "$1"; shift; "$@"; printf '\0'; }
        emit "base64 of a credentials file (coreutils, 76 columns)" sh -c 'printf "[default]\naws_secret_access_key = %s\n" "$1" | base64' - "$s"
        emit "base64 (coreutils, 76 columns)" sh -c 'printf %s "$1" | base64' - "$s"
        emit "base64 after 1 byte (76 columns)" sh -c 'printf "x%s" "$1" | base64' - "$s"
        emit "base64 after 2 bytes (76 columns)" sh -c 'printf "xy%s" "$1" | base64' - "$s"
        emit "base64 -w 4" sh -c 'printf %s "$1" | base64 -w 4' - "$s"
        emit "base64 -w 13" sh -c 'printf %s "$1" | base64 -w 13' - "$s"
        emit "base64 -w 0" sh -c 'printf %s "$1" | base64 -w 0' - "$s"
        emit "base64url (basenc, 76 columns)" sh -c 'printf %s "$1" | basenc --base64url' - "$s"
        emit "base64url after 1 byte, -w 9" sh -c 'printf "z%s" "$1" | basenc --base64url -w 9' - "$s"
        emit "xxd -p (60 columns)" sh -c 'printf %s "$1" | xxd -p' - "$s"
        emit "xxd -p -u -c 5" sh -c 'printf %s "$1" | xxd -p -u -c 5' - "$s"
        emit "od -An -tx1" sh -c 'printf %s "$1" | od -An -tx1' - "$s"
        emit "od -An -tx1 -w4" sh -c 'printf %s "$1" | od -An -tx1 -w4' - "$s"
        emit "hexdump, spaced upper-case bytes" sh -c 'printf %s "$1" | hexdump -v -e "/1 \"%02X \""' - "$s"
        emit "fold -w 10" sh -c 'printf %s "$1" | fold -w 10' - "$s"
        emit "JSON with \\u for + and / (python3)" python3 -c 'import sys; print("".join(c if c.isalnum() else "\\u%04x" % ord(c) for c in sys.argv[1]))' "$s"
        emit "JSON, .NET-style upper-case \\u002B" python3 -c 'import sys; print("".join("\\u%04X" % ord(c) if c in "+<>&\x27\"" else "\\\\" if c == "\\" else c for c in sys.argv[1]))' "$s"
        emit "URL-encoded (python3 quote, safe='')" python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$s"
        emit "HTML numeric references (python3)" python3 -c 'import sys; print("".join(c if c.isalnum() else "&#%d;" % ord(c) for c in sys.argv[1]))' "$s"
        emit "printf %q" bash -c 'printf "%q\n" "$1"' - "$s"
        emit "sed -n 'l 20' (wrapped with a backslash)" sh -c 'printf "%s\n" "$1" | sed -n "l 20"' - "$s"
        emit "bash set -x trace" bash -c 'exec 2>&1; set -x; : "$1"' - "$s"
        emit "declare -p" bash -c 'S=$1; declare -p S' - "$s"
        emit "jq @uri" jq -rn --arg s "$s" '$s|@uri'
        emit "jq @sh" jq -rn --arg s "$s" '$s|@sh'
        emit "python3 repr" python3 -c 'import sys; print(repr(sys.argv[1]))' "$s"
        emit "python3 repr of the bytes" python3 -c 'import sys; print(repr(sys.argv[1].encode()))' "$s"
        emit "python3 json.dumps (ensure_ascii)" python3 -c 'import sys, json; print(json.dumps(sys.argv[1]))' "$s"
        emit "python3 shlex.quote" python3 -c 'import sys, shlex; print(shlex.quote(sys.argv[1]))' "$s"
        emit "XML text (saxutils.escape)" python3 -c 'import sys; from xml.sax.saxutils import escape; print(escape(sys.argv[1]))' "$s"
        emit "Go encoding/json (as python3 writes it)" python3 -c 'import sys, json; print(json.dumps(sys.argv[1], ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))' "$s"
        emit "HTML xmlcharrefreplace" python3 -c 'import sys, html; print(html.escape(sys.argv[1], quote=False).encode("ascii", "xmlcharrefreplace").decode())' "$s"
        emit "CSV (python3 csv)" python3 -c 'import sys, csv; csv.writer(sys.stdout, quoting=csv.QUOTE_ALL).writerow([sys.argv[1]])' "$s"
        emit "xxd -i" sh -c 'printf %s "$1" | xxd -i' - "$s"
        emit "bytes.hex(\":\")" python3 -c 'import sys; print(sys.argv[1].encode().hex(":"))' "$s"
        """#
        let r = TestWorld.launch("/bin/bash", ["-c", sh, "-", s], environment: MaskerTests.helperEnvironment).stdout
        let parts = r.split(separator: "\0", omittingEmptySubsequences: false).map(String.init)
        return stride(from: 0, to: parts.count - 1, by: 2).map { Printed(secretName: name, secret: s, tool: parts[$0], text: parts[$0 + 1]) }
    }

    /// What the red team printed in clear before these forms: a single quote, '$', '!', '*', '()',
    /// '~', '&', '<', '"', '>', a backslash and non-ASCII letters.
    static let quirky = #"it's Pä$$wört!*(x)~&<"q">\z"#

    static let all = printed("64-character base64-alphabet secret", secret) + printed("typed secret", MaskerTests.typed)
        + printed("quirky secret", quirky)

    /// How the output reaches the masker: reads of a fixed size, or reads with the stream going idle
    /// (a flush, as the pump does after 200 ms) after every `pause` bytes.
    enum Delivery: Sendable, CustomTestStringConvertible {
        case reads(Int)
        case pausingEvery(Int)
        var testDescription: String {
            switch self {
            case .reads(let n): "reads of \(n)"
            case .pausingEvery(let n): "a pause every \(n) bytes"
            }
        }
    }

    static let deliveries: [Delivery] = [.reads(1), .reads(3), .reads(7), .reads(64), .reads(4096),
                                         .pausingEvery(5), .pausingEvery(13), .pausingEvery(30), .pausingEvery(50)]

    static func mask(_ text: String, _ delivery: Delivery, secrets: [String]) -> String {
        let m = StreamMasker(MaskPatterns(secrets: secrets))
        let input = Array(text.utf8)
        var out: [UInt8] = []
        var i = 0
        switch delivery {
        case .reads(let n):
            while i < input.count { out += m.feed(input[i..<min(input.count, i + n)]); i += n }
        case .pausingEvery(let n):
            while i < input.count { out += m.feed(input[i..<min(input.count, i + n)]); out += m.flush(); i += n }
        }
        return String(decoding: out + m.flush(), as: UTF8.self)
    }

    @Test func everyToolPrintedSomething() {
        #expect(Self.all.count == 3 * 35)
        #expect(Self.all.allSatisfy { !$0.text.isEmpty })
    }

    @Test(arguments: all, deliveries)
    func nothingOfTheSecretCanBeDecodedFromTheLog(_ p: Printed, _ delivery: Delivery) {
        let text = "out: \(p.text)done\n"
        // The hunter finds the secret in what the tool printed (names of decodings only: no value).
        let unmasked = LeakHunter.recoverable(p.secret, in: text)
        #expect(!unmasked.isEmpty)
        let log = Self.mask(text, delivery, secrets: [Self.secret, MaskerTests.typed, Self.quirky])
        let found = LeakHunter.recoverable(p.secret, in: log)
        #expect(found.isEmpty, "recoverable from the masked log by: \(found.joined(separator: ", "))")
        let marked = log.contains("[MASKED]")
        #expect(marked && log.hasPrefix("out: ") && log.hasSuffix("done\n"))
    }

    /// The issue's timing case with a real writer and the real pump: 30 characters, 1.2 s of
    /// silence (the pump flushes after 200 ms), then the rest, on stdout then stderr.
    @Test(arguments: [false, true])
    func aWriterThatPausesMidSecretLeaksNothing(restOnStderr: Bool) throws {
        let s = Self.secret
        let script = "printf 'key=%s' '\(s.prefix(30))'; sleep 1.2; printf '%s\\n' '\(s.dropFirst(30))'" + (restOnStderr ? " >&2" : "")
        let child = try ChildProcess(argv: ["/bin/sh", "-c", script], environment: MaskerTests.helperEnvironment, directory: nil)
        child.startReaper {}
        let masker = StreamMasker(MaskPatterns(secrets: [s]))
        var chunks: [String] = []
        child.pump(stdout: masker, stderr: masker, sink: { _, bytes in if !bytes.isEmpty { chunks.append(String(decoding: bytes, as: UTF8.self)) } })
        _ = child.wait()
        let log = chunks.joined()
        let found = LeakHunter.recoverable(s, in: log)
        #expect(found.isEmpty, "recoverable by: \(found.joined(separator: ", "))")
        // The first 30 went out at the pause, as [MASKED], and so did the rest.
        #expect(log == "key=[MASKED][MASKED]\n")
        #expect(chunks.count >= 2)
    }

    /// The hunter itself: it finds an 8-byte piece in each decoding it claims, and not a 7-byte one.
    @Test func theHunterFindsPiecesOfEightAndNotOfSeven() {
        let s = Self.secret
        let eight = String(s.dropFirst(10).prefix(8)), seven = String(s.dropFirst(10).prefix(7))
        #expect(!LeakHunter.recoverable(s, in: "x \(eight) y").isEmpty)
        #expect(LeakHunter.recoverable(s, in: "x \(seven) y").isEmpty)
        let b64 = Data(("ab" + eight).utf8).base64EncodedString()
        #expect(LeakHunter.recoverable(s, in: "\(b64.prefix(5))\n\(b64.dropFirst(5))").contains("base64 (whitespace removed)"))
        let hex = Array(eight.utf8).map { String(format: "%02X ", $0) }.joined()
        #expect(LeakHunter.recoverable(s, in: hex).contains("hex (whitespace removed)"))
    }

    /// Ordinary output with hex, base64 and words, and unrelated secrets among the patterns, passes
    /// unchanged: skipping whitespace does not make the masker eat text.
    @Test func ordinaryOutputPassesUnchanged() {
        var text = ""
        for i in 0..<200 {
            text += "commit 3f9c2a1b\(i) Merge branch 'main' into feature \(i % 7)\n"
            text += "  sha256: 9b74c9897bac770ffc029102a200c5de  size \(i * 37)\n"
            text += "  blob \(Data("line \(i)".utf8).base64EncodedString()) ok\n"
        }
        for delivery in Self.deliveries {
            #expect(Self.mask(text, delivery, secrets: [Self.secret, MaskerTests.typed, MaskerTests.token]) == text, "\(delivery.testDescription)")
        }
    }
}
