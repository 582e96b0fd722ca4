@testable import AirlockCore
import AirlockTesting
import Foundation
import Testing

/// Which JWTs in a stage script are trusted ID tokens that the job must not hold (README "Threat
/// model": every JWT from the issuer with an audience Airlock trusts, whatever variable holds it).
struct TrustedTokensTests {
    static let azure = """
    [providers.entra]
    type = "azure"
    tenant_id = "72f988bf-86f1-41af-91ab-2d7cd011db47"
    """

    struct Case: Sendable, CustomTestStringConvertible {
        let name: String
        let trusted: Bool
        let make: @Sendable (IdentityFixture) -> String
        var testDescription: String { "\(name): \(trusted ? "scrubbed" : "left")" }
    }

    static let cases: [Case] = [
        .init(name: "the main audience", trusted: true) { f in f.issuer.mint(f.claims()) },
        .init(name: "a provider's token_audience", trusted: true) { f in f.issuer.mint(f.issuer.claims(for: f.job, audience: "api://AzureADTokenExchange")) },
        .init(name: "a list of audiences with a trusted one", trusted: true) { f in
            var c = f.claims(); c["aud"] = ["https://other.example", IdentityFixture.audience]; return f.issuer.mint(c) },
        .init(name: "a forged signature", trusted: true) { f in
            try! TestIssuer.mintWithForeignKey(f.claims(), header: ["kid": "x"]) },
        .init(name: "an audience nobody trusts", trusted: false) { f in f.issuer.mint(f.issuer.claims(for: f.job, audience: "https://elsewhere.example")) },
        .init(name: "another issuer", trusted: false) { f in var c = f.claims(); c["iss"] = "https://gitlab.other.example"; return f.issuer.mint(c) },
    ]

    @Test(arguments: cases)
    func trustedTokensAreFoundUnderAnyVariable(_ c: Case) throws {
        let f = try IdentityFixture(extraConfig: Self.azure)
        let token = c.make(f)
        let script = "export CI_JOB_ID=1\nexport SOME_OTHER_NAME='\(token)'\necho \"x=\(token)\"\n"
        let found = TrustedTokens.find(in: script, config: f.config)
        #expect(found == (c.trusted ? [token] : []))
    }
}
