import Delivery
import Foundation
import Testing

/// The stream masker: every form of every secret, across any read boundary, with bounded memory.
struct MaskerTests {
    static let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
    static let token = "FwoGZXIvYXdzEB8aDHVgLqKxb3J0dHM3ZSKvAQ=="

    static func run(_ input: [UInt8], chunk: Int, secrets: [String] = [secret, token]) -> String {
        let m = StreamMasker(MaskPatterns(secrets: secrets))
        var out: [UInt8] = []
        var i = 0
        while i < input.count {
            out += m.feed(input[i..<min(input.count, i + chunk)])
            i += chunk
        }
        out += m.flush()
        return String(decoding: out, as: UTF8.self)
    }

    static func forms(_ s: String) -> [String] {
        let d = Data(s.utf8)
        return [
            s,
            d.base64EncodedString(),
            (Data("x".utf8) + d).base64EncodedString(),
            (Data("xy".utf8) + d).base64EncodedString(),
            d.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_"),
            s.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!,
            s.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed)!,
            String(decoding: try! JSONEncoder().encode([s]), as: UTF8.self),
        ]
    }

    @Test(arguments: [1, 2, 3, 7, 64, 4096])
    func everyFormIsMaskedAtEveryChunkSize(chunk: Int) {
        for s in [Self.secret, Self.token] {
            for (n, form) in Self.forms(s).enumerated() {
                let out = Self.run(Array("before \(form) after\n".utf8), chunk: chunk)
                #expect(out.contains("[MASKED]"), "form \(n) at chunk \(chunk): \(out)")
                #expect(!out.contains(String(s.prefix(12))) && !out.contains(String(s.suffix(12))), "form \(n) leaked: \(out)")
                #expect(out.hasPrefix("before ") && out.hasSuffix(" after\n"))
            }
        }
    }

    @Test func textWithoutSecretsPassesUnchangedAndImmediately() {
        let m = StreamMasker(MaskPatterns(secrets: [Self.secret]))
        #expect(m.feed(Array("Password: ".utf8)) == Array("Password: ".utf8))
        #expect(!m.hasPending)
        // A tail that could start a secret is held, then released when it cannot.
        #expect(m.feed(Array("wJal".utf8)).isEmpty)
        #expect(m.hasPending)
        #expect(String(decoding: m.feed(Array("ly\n".utf8)), as: UTF8.self) == "wJally\n")
    }

    @Test func heldBackBytesAreBoundedByTheLongestPattern() {
        let m = StreamMasker(MaskPatterns(secrets: [Self.secret]))
        var emitted = 0
        let prefix = Array(Self.secret.utf8.dropLast())
        for _ in 0..<1000 { emitted += m.feed(prefix).count }
        // Everything but the last, still-possible prefix has been emitted.
        #expect(emitted >= 1000 * prefix.count - 200)
    }

    @Test func noPatternsIsAPassThrough() {
        let m = StreamMasker(MaskPatterns(secrets: ["short"]))  // under the 8-byte minimum
        #expect(m.feed(Array("short secret".utf8)) == Array("short secret".utf8))
    }

    @Test func multiLineSecretsAreMaskedLineByLine() {
        let pem = "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END KEY-----"
        let out = Self.run(Array("k=\(pem)\n".utf8), chunk: 5, secrets: [pem])
        #expect(!out.contains("MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"))
    }
}
