/// How a profile's credentials reach the job (`deliver =` on `[profiles.NAME]`).
public enum DeliveryMode: String, Sendable, CaseIterable {
    /// Environment variables of the stage.
    case env
    /// Files in the job's secrets dir, their paths in the environment.
    case file
    /// The job's credential server: the endpoints the cloud SDKs speak, refreshed as they run out.
    case endpoint
}

/// The SDK endpoints the job's credential server speaks (federation.md B1-B3).
public enum EndpointKind: String, Sendable, Codable, CaseIterable {
    /// AWS container credentials (`AWS_CONTAINER_CREDENTIALS_FULL_URI`).
    case awsContainer = "aws_container"
    /// Azure App Service managed identity (`IDENTITY_ENDPOINT`, `IDENTITY_HEADER`).
    case azureManagedIdentity = "azure_managed_identity"
    /// The GCE metadata server (`GCE_METADATA_HOST`).
    case gceMetadata = "gce_metadata"
}

/// What a credential gives the job, decided by its provider when it issues it. Delivery and the
/// credential server read this and nothing provider-specific: a new provider fills it in and needs
/// no change above Federation.
public struct DeliveryContract: Sendable, Codable, Equatable {
    /// One secret value, a key of `IssuedCredential.secrets`. With `deliver = "env"` it is set under
    /// each of `variables`; with `deliver = "file"` it is the file `file` in the job's secrets dir,
    /// whose path goes in `fileVariable`.
    public struct Secret: Sendable, Codable, Equatable {
        public var key: String
        public var variables: [String]
        public var file: String
        public var fileVariable: String

        public init(key: String, variables: [String], file: String, fileVariable: String) {
            self.key = key
            self.variables = variables
            self.file = file
            self.fileVariable = fileVariable
        }
    }

    /// One file that replaces the per-secret files with `deliver = "file"` (AWS's shared credentials
    /// file): text and secret values in order.
    public struct File: Sendable, Codable, Equatable {
        public enum Part: Sendable, Codable, Equatable {
            case text(String)
            /// A key of `IssuedCredential.secrets`.
            case secret(String)
        }
        public var name: String
        public var content: [Part]
        /// The variable that gets the file's path.
        public var pathVariable: String
        /// Public values set beside it (AWS_PROFILE).
        public var environment: [String: String]

        public init(name: String, content: [Part], pathVariable: String, environment: [String: String] = [:]) {
            self.name = name
            self.content = content
            self.pathVariable = pathVariable
            self.environment = environment
        }
    }

    public var secrets: [Secret]
    /// nil: one file per secret.
    public var file: File?
    /// Public values set beside the secrets, as env or as files (region, tenant, VAULT_ADDR).
    public var environment: [String: String]
    /// The endpoint that serves it with `deliver = "endpoint"`; nil: it cannot be served.
    public var endpoint: EndpointKind?
    /// Public values set beside the endpoint's variables (region, tenant, project).
    public var endpointEnvironment: [String: String]
    /// The values are long-lived ones Airlock only copied (a Vault KV field, a Key Vault secret):
    /// not Airlock's to revoke, so a value too short to mask may still go out as a file.
    public var copiedValues: Bool
    /// Read from a ledger an earlier Airlock wrote (upgraded while the job ran): it says nothing of
    /// what to deliver, so the run stage refuses it rather than deliver nothing in silence.
    public var fromOlderLedger: Bool = false

    public init(secrets: [Secret] = [], file: File? = nil, environment: [String: String] = [:],
                endpoint: EndpointKind? = nil, endpointEnvironment: [String: String] = [:], copiedValues: Bool = false) {
        self.secrets = secrets
        self.file = file
        self.environment = environment
        self.endpoint = endpoint
        self.endpointEnvironment = endpointEnvironment
        self.copiedValues = copiedValues
    }
}

extension DeliveryContract.Secret {
    /// One secret under one variable, as `<profile>-<suffix>` when delivered as a file (its path in
    /// the same variable): the common case (an access token, a Vault field).
    public static func token(_ key: String, variable: String, file: String) -> Self {
        Self(key: key, variables: [variable], file: file, fileVariable: variable)
    }
}
