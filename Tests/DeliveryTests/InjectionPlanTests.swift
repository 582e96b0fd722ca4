import Delivery
import Federation
import Foundation
import RunnerContract
import Testing

/// What one stage receives (issue 16: InjectionPlan had no unit tests).
struct InjectionPlanTests {
    static let dir = "/run/airlock/secrets"

    static func aws(_ profile: String = "deploy", region: String = "eu-west-1") -> IssuedCredential {
        IssuedCredential(profile: profile, provider: "aws", providerType: "aws",
                         secrets: ["AccessKeyId": "ASIAEXAMPLEKEY000001", "SecretAccessKey": "secret-access-key-0123456789abcdef0123", "SessionToken": "session-token-0123456789"],
                         details: ["region": region], expiresAt: Date().addingTimeInterval(3600), revocationHandle: nil,
                         delivery: AWSKind.delivery(profile: profile, region: region), summary: "role")
    }

    static func gcp() -> IssuedCredential {
        IssuedCredential(profile: "gcs", provider: "gcp", providerType: "gcp", secrets: ["access_token": "ya29.token-0123456789"],
                         details: [:], expiresAt: Date().addingTimeInterval(3600), revocationHandle: nil,
                         delivery: GCPKind.delivery(profile: "gcs", projectID: "platform-prod"), summary: "pool")
    }

    @Test func awsKeysReachTheScriptStagesOnly() throws {
        let rules = ["deploy": DeliveryRule(profile: "deploy", asFile: false, stages: nil)]
        let build = try InjectionPlan.make(stage: "build_script", credentials: [Self.aws()], rules: rules, secretsDir: Self.dir)
        #expect(build.environment["AWS_ACCESS_KEY_ID"] == "ASIAEXAMPLEKEY000001")
        #expect(build.environment["AWS_SESSION_TOKEN"] == "session-token-0123456789")
        #expect(build.environment["AWS_REGION"] == "eu-west-1" && build.profiles == ["deploy"])
        // Runner-made stages (sources, cache, artifacts) get nothing unless the profile names them.
        for stage in ["prepare_script", "get_sources", "restore_cache", "archive_cache", "upload_artifacts_on_success", "cleanup_file_variables"] {
            let plan = try InjectionPlan.make(stage: stage, credentials: [Self.aws()], rules: rules, secretsDir: Self.dir)
            #expect(plan.environment.isEmpty && plan.files.isEmpty, "\(stage) received \(plan.environment.keys.sorted())")
        }
        let named = ["deploy": DeliveryRule(profile: "deploy", asFile: false, stages: ["archive_cache"])]
        #expect(try InjectionPlan.make(stage: "archive_cache", credentials: [Self.aws()], rules: named, secretsDir: Self.dir).environment["AWS_ACCESS_KEY_ID"] != nil)
        #expect(try InjectionPlan.make(stage: "build_script", credentials: [Self.aws()], rules: named, secretsDir: Self.dir).environment.isEmpty)
    }

    @Test func awsAsAFileIsASharedCredentialsFileInTheSecretsDir() throws {
        let rules = ["deploy": DeliveryRule(profile: "deploy", asFile: true, stages: nil)]
        let plan = try InjectionPlan.make(stage: "build_script", credentials: [Self.aws()], rules: rules, secretsDir: Self.dir)
        #expect(plan.environment["AWS_ACCESS_KEY_ID"] == nil && plan.environment["AWS_SECRET_ACCESS_KEY"] == nil)
        #expect(plan.environment["AWS_SHARED_CREDENTIALS_FILE"] == "\(Self.dir)/aws-credentials-deploy")
        #expect(plan.environment["AWS_PROFILE"] == "deploy")
        let file = try #require(plan.files["aws-credentials-deploy"])
        #expect(file.contains("[deploy]\naws_access_key_id = ASIAEXAMPLEKEY000001\n") && file.contains("region = eu-west-1"))
    }

    /// Two profiles that would set one variable to different values in one stage: refused, naming
    /// both and the fix; two that agree are fine.
    @Test func profilesThatDisagreeOnAVariableAreRefused() throws {
        let rules = ["a": DeliveryRule(profile: "a", asFile: false, stages: nil), "b": DeliveryRule(profile: "b", asFile: false, stages: nil)]
        do {
            _ = try InjectionPlan.make(stage: "build_script", credentials: [Self.aws("a"), Self.aws("b", region: "us-east-2")], rules: rules, secretsDir: Self.dir)
            Issue.record("two AWS profiles in one environment were accepted")
        } catch {
            #expect("\(error)".contains("profiles a and b both set AWS_DEFAULT_REGION in stage build_script") && "\(error)".contains("deliver = \"file\""), "\(error)")
        }
    }

    /// Endpoint delivery puts no credential in the stage, only where to ask: GCE metadata at the
    /// root for a job with its own uid (the server checks the connection's owner), with the secret as
    /// a path prefix otherwise; AWS with the secret in a file and (for older botocore) a variable.
    @Test(arguments: [true, false])
    func endpointDeliveryGivesWhereToAskAndNoCredential(ownerOnly: Bool) throws {
        let rules = ["gcs": DeliveryRule(profile: "gcs", asFile: false, stages: nil, viaEndpoint: true),
                     "deploy": DeliveryRule(profile: "deploy", asFile: false, stages: nil, viaEndpoint: true)]
        let access = EndpointAccess(port: 40123, secret: "endpoint-secret-0123456789abcdef", ownerOnly: ownerOnly)
        let plan = try InjectionPlan.make(stage: "build_script", credentials: [Self.gcp(), Self.aws()], rules: rules, secretsDir: Self.dir, endpoint: access)
        let host = ownerOnly ? "127.0.0.1:40123" : "127.0.0.1:40123/endpoint-secret-0123456789abcdef"
        for v in ["GCE_METADATA_HOST", "GCE_METADATA_IP", "GCE_METADATA_ROOT"] { #expect(plan.environment[v] == host, "\(v)") }
        #expect(plan.environment["GOOGLE_CLOUD_PROJECT"] == "platform-prod")
        #expect(plan.environment["AWS_CONTAINER_CREDENTIALS_FULL_URI"] == "http://127.0.0.1:40123/aws/deploy")
        #expect(plan.environment["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"] == "\(Self.dir)/\(EndpointAccess.tokenFileName)")
        #expect(plan.files[EndpointAccess.tokenFileName] == "endpoint-secret-0123456789abcdef")
        let values = plan.environment.values.joined(separator: "\n") + plan.files.values.joined(separator: "\n")
        let credentialInStage = values.contains("ya29.") || values.contains("ASIAEXAMPLE") || values.contains("secret-access-key")
        #expect(!credentialInStage)
        // Without a running server, endpoint delivery is a system failure that says where to look.
        #expect(throws: AirlockFailure.self) {
            _ = try InjectionPlan.make(stage: "build_script", credentials: [Self.gcp()], rules: rules, secretsDir: Self.dir)
        }
    }

    /// Delivery knows no provider: a kind it has never heard of (a sixth provider) is delivered from
    /// its contract alone, as env, as files, and its public values beside them.
    @Test func aContractAloneSaysWhatReachesTheJob() throws {
        let contract = DeliveryContract(
            secrets: [.token("api_key", variable: "EXAMPLE_API_KEY", file: "ci-example-key"),
                      .init(key: "cert", variables: ["EXAMPLE_CERT", "EXAMPLE_CERT_PEM"], file: "ci-example.pem", fileVariable: "EXAMPLE_CERT_FILE")],
            environment: ["EXAMPLE_ENDPOINT": "https://api.example.com"])
        let c = IssuedCredential(profile: "ci", provider: "example", providerType: "example-kind",
                                 secrets: ["api_key": "example-api-key-0123456789", "cert": "-----BEGIN CERT-----0123456789", "unmapped": "never-delivered-0123456789"],
                                 details: [:], expiresAt: Date().addingTimeInterval(600), revocationHandle: nil, delivery: contract, summary: "example")
        let env = try InjectionPlan.make(stage: "build_script", credentials: [c], rules: ["ci": DeliveryRule(profile: "ci", asFile: false, stages: nil)], secretsDir: Self.dir)
        #expect(env.environment == ["EXAMPLE_API_KEY": "example-api-key-0123456789", "EXAMPLE_CERT": "-----BEGIN CERT-----0123456789",
                                    "EXAMPLE_CERT_PEM": "-----BEGIN CERT-----0123456789", "EXAMPLE_ENDPOINT": "https://api.example.com"])
        #expect(env.files.isEmpty)
        let file = try InjectionPlan.make(stage: "build_script", credentials: [c], rules: ["ci": DeliveryRule(profile: "ci", asFile: true, stages: nil)], secretsDir: Self.dir)
        #expect(file.environment == ["EXAMPLE_API_KEY": "\(Self.dir)/ci-example-key", "EXAMPLE_CERT_FILE": "\(Self.dir)/ci-example.pem",
                                     "EXAMPLE_ENDPOINT": "https://api.example.com"])
        #expect(file.files == ["ci-example-key": "example-api-key-0123456789", "ci-example.pem": "-----BEGIN CERT-----0123456789"])
        // From a ledger an earlier Airlock wrote: refused, not delivered as nothing.
        var old = c
        old.delivery = DeliveryContract()
        old.delivery.fromOlderLedger = true
        #expect(throws: AirlockFailure.self) {
            _ = try InjectionPlan.make(stage: "build_script", credentials: [old], rules: ["ci": DeliveryRule(profile: "ci", asFile: false, stages: nil)], secretsDir: Self.dir)
        }
        // No endpoint in its contract: endpoint delivery is refused, not guessed.
        let access = EndpointAccess(port: 40123, secret: "endpoint-secret-0123456789abcdef")
        #expect(throws: AirlockFailure.self) {
            _ = try InjectionPlan.make(stage: "build_script", credentials: [c], rules: ["ci": DeliveryRule(profile: "ci", asFile: false, stages: nil, viaEndpoint: true)],
                                       secretsDir: Self.dir, endpoint: access)
        }
    }
}
