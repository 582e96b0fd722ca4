import AirlockConfiguration
import CredentialEndpoint
import Federation
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import RunnerContract
import Synchronization
import Testing

/// A credential source with canned credentials: what the server asked for and refused is recorded.
final class StubSource: CredentialSource {
    let secret = "job-secret-0123456789abcdef0123456789"
    let servedProfiles = ["deploy", "arm", "gcs"]
    let profiles: [String: ProfileSpec] = [
        "deploy": ProfileSpec(name: "deploy", provider: "aws", deliver: .endpoint,
                              settings: AWSRoleProfile(roleARN: "arn:aws:iam::123456789012:role/ci", sessionName: "s", maxDuration: 3600,
                                                       sessionPolicy: nil, policyARNs: [], region: "eu-west-1")),
        "arm": ProfileSpec(name: "arm", provider: "azure", deliver: .endpoint,
                           settings: AzureProfile(tenantID: "contoso.onmicrosoft.com", clientID: "0a1b2c3d-0000-4000-8000-00000000abcd", resource: .arm)),
        "gcs": ProfileSpec(name: "gcs", provider: "gcp", deliver: .endpoint,
                           settings: GCPProfile(workloadIdentityProvider: "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/q",
                                                serviceAccount: "ci@proj.iam.gserviceaccount.com", projectID: "proj")),
        "other": ProfileSpec(name: "other", provider: "aws", deliver: .endpoint,
                             settings: AWSRoleProfile(roleARN: "arn:aws:iam::123456789012:role/other", sessionName: "s", maxDuration: 3600,
                                                      sessionPolicy: nil, policyARNs: [], region: "eu-west-1")),
    ]
    struct State {
        var refusals: [String] = []
        var requests = 0
        var issued = 0
        var failure: (any Error & Sendable)?
        /// Each credential issued gets an AccessKeyId of its own (ASIASTUBKEY + the issue count).
        var rotate = false
    }
    let state = Mutex(State())

    func spec(_ profile: String) -> ProfileSpec? { profiles[profile] }

    func credential(_ profile: String) async throws -> IssuedCredential {
        if let f = state.withLock({ $0.failure }) { throw f }
        let (n, rotate) = state.withLock { s in s.issued += 1; return (s.issued, s.rotate) }
        let secrets = profile == "deploy"
            ? ["AccessKeyId": rotate ? "ASIASTUBKEY\(String(format: "%09d", n))" : "ASIASTUBKEY000000001", "SecretAccessKey": "stub-secret-access-key-0123456789", "SessionToken": "stub-session-token-0123456789"]
            : ["access_token": "stub-access-token-\(profile)-0123456789"]
        return IssuedCredential(profile: profile, provider: profiles[profile]!.provider, providerType: profiles[profile]!.provider,
                                secrets: secrets, details: [:], expiresAt: Date().addingTimeInterval(900), revocationHandle: nil,
                                delivery: DeliveryContract(), summary: "stub")
    }

    func refused(_ reason: String, _ detail: String) { state.withLock { $0.refusals.append("\(reason) \(detail)") } }
    func countRequest() { state.withLock { $0.requests += 1 } }
    var refusals: [String] { state.withLock { $0.refusals } }
    var issued: Int { state.withLock { $0.issued } }
}

/// The credential server's routes, in process through Hummingbird's router (HummingbirdTesting).
/// What the SDKs send follows federation.md B1-B3; the end-to-end suites drive the same server with
/// botocore, azure-identity and google-auth.
struct EndpointRouteTests {
    static let flavor: HTTPFields = [HTTPField.Name("Metadata-Flavor")!: "Google"]

    func withServer(ownerUID: UInt32? = nil, peer: UInt32? = nil, requestsPerSecond: Double = 100,
                    _ body: @Sendable (any TestClientProtocol, StubSource) async throws -> Void) async throws {
        let source = StubSource()
        let server = EndpointServer(source: source, requestsPerSecond: requestsPerSecond, ownerUID: ownerUID, peerUID: { _ in peer })
        let app = Application(router: server.router())
        try await app.test(.router) { client in try await body(client, source) }
    }

    static func json(_ r: TestResponse) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(r.body.readableBytesView)) as? [String: Any]) ?? [:]
    }

    @Test func awsAnswersWithTheSecretInAuthorizationAndNothingWithout() async throws {
        try await withServer { client, source in
            let ok = try await client.execute(uri: "/aws/deploy", method: .get, headers: [.authorization: source.secret])
            #expect(ok.status == .ok)
            let body = Self.json(ok)
            #expect(body["AccessKeyId"] as? String == "ASIASTUBKEY000000001" && body["Token"] as? String == "stub-session-token-0123456789")
            #expect(body["Expiration"] as? String != nil)
            for headers: HTTPFields in [[:], [.authorization: "wrong"], [.authorization: source.secret + "x"], [HTTPField.Name("X-IDENTITY-HEADER")!: source.secret]] {
                let r = try await client.execute(uri: "/aws/deploy", method: .get, headers: headers)
                #expect(r.status == .unauthorized)
            }
            #expect(source.refusals == Array(repeating: "bad_secret aws", count: 4))
            #expect(source.issued == 1)
            // A profile the job is not served, or not an AWS one: 404, counted.
            #expect(try await client.execute(uri: "/aws/other", method: .get, headers: [.authorization: source.secret]).status == .notFound)
            #expect(try await client.execute(uri: "/aws/gcs", method: .get, headers: [.authorization: source.secret]).status == .notFound)
            #expect(source.refusals.suffix(2) == ["not_granted aws profile other", "not_granted aws profile gcs"])
        }
    }

    @Test func azureServesOnlyTheGrantedResourceAndClient() async throws {
        try await withServer { client, source in
            let h: HTTPFields = [HTTPField.Name("X-IDENTITY-HEADER")!: source.secret]
            let ok = try await client.execute(uri: "/azure?api-version=2019-08-01&resource=https%3A%2F%2Fmanagement.azure.com%2F", method: .get, headers: h)
            #expect(ok.status == .ok)
            #expect(Self.json(ok)["access_token"] as? String == "stub-access-token-arm-0123456789")
            #expect(Self.json(ok)["client_id"] as? String == "0a1b2c3d-0000-4000-8000-00000000abcd")
            let vault = try await client.execute(uri: "/azure?api-version=2019-08-01&resource=https://vault.azure.net", method: .get, headers: h)
            #expect(vault.status == .badRequest && (Self.json(vault)["message"] as? String ?? "").contains("granted: https://management.azure.com"))
            let otherApp = try await client.execute(uri: "/azure?api-version=2019-08-01&resource=https://management.azure.com&client_id=ffffffff-0000-4000-8000-000000000000", method: .get, headers: h)
            #expect(otherApp.status == .badRequest)
            #expect(try await client.execute(uri: "/azure?resource=https://management.azure.com", method: .get, headers: h).status == .badRequest)
            #expect(try await client.execute(uri: "/azure?api-version=2019-08-01&resource=https://management.azure.com", method: .get,
                                             headers: [.authorization: source.secret]).status == .unauthorized)
            #expect(source.refusals == ["resource_not_granted azure resource https://vault.azure.net",
                                        "client_not_granted azure client_id ffffffff-0000-4000-8000-000000000000", "bad_secret azure"])
        }
    }

    @Test func metadataUnderTheSecretPrefix() async throws {
        try await withServer { client, source in
            let base = "/\(source.secret)/computeMetadata/v1"
            let token = try await client.execute(uri: "\(base)/instance/service-accounts/default/token", method: .get, headers: Self.flavor)
            #expect(token.status == .ok && token.headers[HTTPField.Name("Metadata-Flavor")!] == "Google")
            #expect(Self.json(token)["access_token"] as? String == "stub-access-token-gcs-0123456789")
            let email = try await client.execute(uri: "\(base)/instance/service-accounts/default/email", method: .get, headers: Self.flavor)
            #expect(String(buffer: email.body) == "ci@proj.iam.gserviceaccount.com")
            #expect(String(buffer: try await client.execute(uri: "\(base)/project/project-id", method: .get, headers: Self.flavor).body) == "proj")
            #expect(try await client.execute(uri: "/\(source.secret)", method: .get, headers: Self.flavor).status == .ok)  // detection ping
            #expect(try await client.execute(uri: "\(base)/instance/attributes/", method: .get, headers: Self.flavor).status == .notFound)
            // No Metadata-Flavor: 403, as the real server answers.
            #expect(try await client.execute(uri: "\(base)/instance/service-accounts/default/token", method: .get).status == .forbidden)
            // A wrong prefix: 401.
            #expect(try await client.execute(uri: "/not-the-secret/computeMetadata/v1/instance/service-accounts/default/token", method: .get, headers: Self.flavor).status == .unauthorized)
            #expect(source.refusals == ["bad_secret metadata"])
        }
    }

    /// Metadata at the root is the job's own uid's alone: another uid, an unknown peer, or a job
    /// without a uid of its own (isolation = "none") gets 401.
    @Test(arguments: [(UInt32?(200_001), UInt32?(200_001), true), (200_001, 200_002, false), (200_001, 0, false), (200_001, nil, false), (nil, 200_001, false), (nil, nil, false)])
    func metadataAtTheRootIsTheOwnersAlone(owner: UInt32?, peer: UInt32?, served: Bool) async throws {
        try await withServer(ownerUID: owner, peer: peer) { client, source in
            let token = try await client.execute(uri: "/computeMetadata/v1/instance/service-accounts/default/token", method: .get, headers: Self.flavor)
            let ping = try await client.execute(uri: "/", method: .get, headers: Self.flavor)
            #expect(token.status == (served ? .ok : .unauthorized))
            #expect(ping.status == (served ? .ok : .unauthorized))
            #expect(source.issued == (served ? 1 : 0))
        }
    }

    /// The server keeps each AWS answer's bytes for the credential it carries (issue 19), and only for
    /// it: a credential the broker replaced is answered at once.
    @Test func aReplacedCredentialIsAnsweredNotTheKeptOne() async throws {
        try await withServer { client, source in
            source.state.withLock { $0.rotate = true }
            var keys: [String] = []
            for _ in 0..<3 {
                let r = try await client.execute(uri: "/aws/deploy", method: .get, headers: [.authorization: source.secret])
                keys.append(Self.json(r)["AccessKeyId"] as? String ?? "?")
            }
            #expect(keys == ["ASIASTUBKEY000000001", "ASIASTUBKEY000000002", "ASIASTUBKEY000000003"])
        }
    }

    /// Requests without the secret cost the job nothing; with it, the rate limit holds (burst 2×rate).
    @Test func theRateLimitCountsOnlyRequestsThatCarryTheSecret() async throws {
        try await withServer(requestsPerSecond: 2) { client, source in
            for _ in 0..<20 { _ = try await client.execute(uri: "/aws/deploy", method: .get, headers: [.authorization: "wrong"]) }
            // 30 in a row: the bucket (4, refilled 2 per second) empties unless each request takes half a
            // second; 6 in a row once did not, under the load of the whole unit suite.
            var statuses: [HTTPResponse.Status] = []
            for _ in 0..<30 { statuses.append(try await client.execute(uri: "/aws/deploy", method: .get, headers: [.authorization: source.secret]).status) }
            #expect(statuses.prefix(4).allSatisfy { $0 == .ok })
            #expect(statuses.contains(.tooManyRequests))
            #expect(source.refusals.filter { $0 == "rate_limited aws" }.count >= 1)
        }
    }

    /// A path or method no route serves: 404, and counted, so that probing shows in the audit log.
    @Test func unknownRoutesAre404AndCounted() async throws {
        try await withServer { client, source in
            for (uri, method) in [("/\(source.secret)/foo", HTTPRequest.Method.get), ("/aws", .get), ("/computeMetadata", .get),
                                  ("/aws/deploy", .post), ("/aws/deploy", .head)] {
                let r = try await client.execute(uri: uri, method: method, headers: [.authorization: source.secret])
                #expect(r.status == .notFound, "\(method) \(uri)")
            }
            #expect(source.refusals == ["no_route GET", "no_route GET", "no_route GET", "no_route POST", "no_route HEAD"])
            // One segment that is not the secret is the metadata ping with a wrong prefix: 401.
            #expect(try await client.execute(uri: "/foo", method: .get, headers: Self.flavor).status == .unauthorized)
            #expect(source.refusals.last == "bad_secret metadata")
            #expect(source.issued == 0)
        }
    }

    @Test func aLargeBodyIsRefusedBeforeAnything() async throws {
        try await withServer { client, source in
            let r = try await client.execute(uri: "/aws/deploy", method: .get, headers: [.authorization: source.secret],
                                             body: ByteBuffer(repeating: 0x41, count: 4096))
            #expect(r.status == .contentTooLarge)
            #expect(source.issued == 0)
        }
    }

    /// A provider that refuses the job answers 400, one that fails answers 503; the message is the
    /// error's own (which never holds a credential).
    @Test(arguments: [(Fault.job, HTTPResponse.Status.badRequest), (.system, .serviceUnavailable)])
    func federationFailuresAreTheSDKsErrors(fault: Fault, status: HTTPResponse.Status) async throws {
        try await withServer { client, source in
            source.state.withLock { $0.failure = FederationError(fault: fault, profile: "deploy", provider: "aws", code: "AccessDenied", message: "no") }
            let r = try await client.execute(uri: "/aws/deploy", method: .get, headers: [.authorization: source.secret])
            #expect(r.status == status)
            #expect((Self.json(r)["message"] as? String ?? "").contains("AccessDenied"))
        }
    }
}
