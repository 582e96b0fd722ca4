import AirlockTesting
import Delivery
import Federation
import Foundation
import HTTPClient
import Identity
import RunnerContract
import Testing

/// The suite every provider passes: issue, values masked, revoke, revoke again (no-op), revoke after
/// expiry, error mapping. AWS runs it against moto's server (a real peer) and a fake STS that answers
/// with STS's error XML (federation.md A1).
enum ProviderConformance {
    static func job() -> VerifiedJob {
        VerifiedJob(claims: ["project_id": "42", "job_id": "1001", "ref": "feature/a:b", "project_path": "platform/api"])
    }

    static func request(_ profile: String, deadline: Double = 60) -> IssueRequest {
        IssueRequest(profile: profile, job: job(), idToken: "eyJhbGciOiJSUzI1NiJ9.e30.c2ln", jobTimeoutSeconds: 1800,
                     now: Date(), deadline: Date().addingTimeInterval(deadline))
    }

    /// Issue, mask, revoke, revoke again, revoke after expiry.
    static func lifecycle(_ provider: any CredentialProvider, profile: String, request given: IssueRequest? = nil) async throws {
        let c = try await provider.issue(given ?? request(profile))
        #expect(c.profile == profile)
        #expect(!c.secrets.isEmpty)
        #expect(c.expiresAt > Date())
        #expect(c.fingerprint.hasPrefix("hmac:") && c.fingerprint.count == 37)
        for v in c.secrets.values { #expect(!c.fingerprint.contains(v)) }
        // Values masked in a job's output.
        let masker = StreamMasker(MaskPatterns(secrets: Array(c.secrets.values)))
        let printed = c.secrets.values.map { "value=\($0)\n" }.joined()
        let out = String(decoding: masker.feed(Array(printed.utf8)) + masker.flush(), as: UTF8.self)
        for v in c.secrets.values where v.count >= MaskPatterns.minimumLength { #expect(!out.contains(v)) }
        let first = try await provider.revoke(c, now: Date())
        let second = try await provider.revoke(c, now: Date())
        #expect([RevokeOutcome.revoked, .notRevocable(expiresAt: c.expiresAt)].contains(first))
        // Idempotent: a second revoke never fails; a provider that cannot tell "already revoked" from
        // "never revocable" (Google's revoke endpoint answers 400 for both) says it expires.
        #expect(second == first || second == .alreadyGone || second == .notRevocable(expiresAt: c.expiresAt))
        let late = try await provider.revoke(c, now: c.expiresAt.addingTimeInterval(1))
        #expect(late == .expired(at: c.expiresAt) || late == .alreadyGone)
    }
}

@Suite(.serialized)
struct AWSConformanceTests {
    static func provider(_ endpoint: String, transport: any HTTPTransport = URLSessionTransport()) -> AWSProvider {
        AWSProvider(name: "aws-test", endpoint: URL(string: endpoint)!, profiles: [
            "p": AWSRoleProfile(roleARN: "arn:aws:iam::123456789012:role/gitlab-{project_id}", sessionName: "gitlab-{project_id}-{job_id}-{ref}",
                                maxDuration: 3600, sessionPolicy: nil, policyARNs: [], region: "eu-west-1"),
        ], transport: transport)
    }

    @Test func lifecycleAgainstMoto() async throws {
        let moto = try MotoServer()
        try await ProviderConformance.lifecycle(Self.provider(moto.url), profile: "p")
        let c = try await Self.provider(moto.url).issue(ProviderConformance.request("p"))
        #expect(c.details["session_name"] == "gitlab-42-1001-feature-a-b")
        #expect(c.details["duration_seconds"] == "1800")
        #expect(c.details["assumed_role_arn"] == "arn:aws:sts::123456789012:assumed-role/gitlab-42/gitlab-42-1001-feature-a-b")
    }

    struct ErrorCase: Sendable, CustomTestStringConvertible {
        let code: String
        let status: Int
        let fault: Fault
        let transient: Bool
        init(_ code: String, _ status: Int, _ fault: Fault, _ transient: Bool) {
            self.code = code
            self.status = status
            self.fault = fault
            self.transient = transient
        }
        var testDescription: String { "\(code) (HTTP \(status)) → \(fault)\(transient ? ", retried" : "")" }
    }

    static let errorCases: [ErrorCase] = [
        .init("InvalidIdentityToken", 400, .job, false), .init("IDPRejectedClaim", 403, .job, false), .init("ExpiredTokenException", 400, .job, false),
        .init("AccessDenied", 403, .job, false), .init("MalformedPolicyDocument", 400, .system, false), .init("Throttling", 400, .system, true),
        .init("InternalFailure", 500, .system, true), .init("IDPCommunicationError", 400, .system, true),
    ]

    @Test(arguments: errorCases)
    func errorMapping(_ c: ErrorCase) async throws {
        let (code, status, fault, transient) = (c.code, c.status, c.fault, c.transient)
        let sts = try FakeSTS.rejecting(code: code, status: status)
        do {
            _ = try await Self.provider(sts.baseURL).issue(ProviderConformance.request("p", deadline: transient ? 10 : 60))
            Issue.record("issued despite \(code)")
        } catch let e as FederationError {
            #expect(e.code == code)
            #expect(e.fault == fault)
            #expect(e.transient == transient)
            #expect(!e.description.contains("eyJhbGciOiJSUzI1NiJ9"))
        }
        // Transient errors are retried within the deadline, permanent ones are not.
        if transient { #expect(sts.requestCount > 1) } else { #expect(sts.requestCount == 1) }
    }

    @Test func unreachableSTSIsTheSystemsFaultAndRetried() async throws {
        do {
            _ = try await Self.provider("http://127.0.0.1:9").issue(ProviderConformance.request("p", deadline: 1.5))
            Issue.record("issued")
        } catch let e as FederationError {
            #expect(e.fault == .system)
            #expect(e.code == "ConnectionFailed")
            #expect(e.message.contains("gave up after"))
        }
    }

    @Test func expirationWithAndWithoutFractionalSeconds() {
        #expect(ISO8601.parse("2026-11-22T12:00:00Z") == Date(timeIntervalSince1970: 1_795_348_800))
        #expect(ISO8601.parse("2026-11-22T12:00:00.123456Z")!.timeIntervalSince1970 > 1_795_348_800)
        #expect(ISO8601.parse("not a date") == nil)
    }

    @Test(arguments: [(60, 900), (1800, 1800), (7200, 3600)])
    func durationFollowsTheJobTimeoutWithinBounds(_ c: (Int, Int)) {
        #expect(AWSProvider.duration(jobTimeout: c.0, max: 3600) == c.1)
    }

    @Test func sessionNameStaysWithinSTSLimits() {
        let n = AWSProvider.sessionName(String(repeating: "a/b:", count: 40))
        #expect(n.count == 64)
        #expect(n.allSatisfy { $0.isLetter || $0.isNumber || "_+=,.@-".contains($0) })
    }
}
