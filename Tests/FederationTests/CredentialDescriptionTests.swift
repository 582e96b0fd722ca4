import Federation
import Foundation
import Testing

/// A credential printed by mistake names what it is, never its values or its revocation handle.
struct CredentialDescriptionTests {
    @Test func printingACredentialShowsNoValue() {
        let c = IssuedCredential(profile: "deploy", provider: "aws", providerType: "aws",
                                 secrets: ["AccessKeyId": "ASIAVALUEONE", "SecretAccessKey": "value-two-secret", "SessionToken": "value-three-token"],
                                 details: ["role_arn": "arn:aws:iam::123456789012:role/ci"], expiresAt: Date(timeIntervalSince1970: 0),
                                 revocationHandle: "handle-value-four", delivery: DeliveryContract(), summary: "role ci")
        for (how, text) in [("interpolation", "\(c)"), ("String(reflecting:)", String(reflecting: c)), ("print", { var s = ""; print(c, to: &s); return s }()),
                            ("an optional", "\(String(describing: Optional(c)))"), ("an array", "\([c])")] {
            let shown = ["ASIAVALUEONE", "value-two-secret", "value-three-token", "handle-value-four"].filter { text.contains($0) }.count
            #expect(shown == 0, "\(how) shows \(shown) value(s)")
            #expect(text.contains(c.id) && text.contains("SecretAccessKey"), "\(how) names the credential and its values")
        }
    }
}
