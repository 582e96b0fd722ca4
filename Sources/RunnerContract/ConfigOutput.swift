/// The JSON `config_exec` prints (custom-executor.md §1): unknown keys are ignored by the runner.
public struct ConfigOutput: Sendable, Codable, Equatable {
    /// The driver block, printed by the runner as "Using Custom executor with driver N V".
    public struct Driver: Sendable, Codable, Equatable {
        public var name: String
        public var version: String
        public init(name: String, version: String) {
            self.name = name
            self.version = version
        }
    }
    public var buildsDir: String
    public var cacheDir: String
    public var buildsDirIsShared: Bool
    public var hostname: String
    public var driver: Driver
    public var shell: String
    /// Added to the environment of later executor calls, never given to the job.
    public var jobEnv: [String: String]

    enum CodingKeys: String, CodingKey {
        case buildsDir = "builds_dir", cacheDir = "cache_dir", buildsDirIsShared = "builds_dir_is_shared"
        case hostname, driver, shell, jobEnv = "job_env"
    }

    public init(buildsDir: String, cacheDir: String, hostname: String, driver: Driver, jobEnv: [String: String]) {
        self.buildsDir = buildsDir
        self.cacheDir = cacheDir
        self.buildsDirIsShared = false
        self.hostname = hostname
        self.driver = driver
        self.shell = "bash"
        self.jobEnv = jobEnv
    }

    /// The JSON text `config_exec` prints: what JSONEncoder writes with sorted keys and slashes left
    /// as they are (RunnerContractTests compares the two), without its generic machinery, whose
    /// first use cost config_exec about half a millisecond (issue 19).
    public var json: String {
        JSONValue.compactJSON([
            "builds_dir": .string(buildsDir), "cache_dir": .string(cacheDir), "builds_dir_is_shared": .bool(buildsDirIsShared),
            "hostname": .string(hostname), "driver": .object(["name": .string(driver.name), "version": .string(driver.version)]),
            "shell": .string(shell), "job_env": .object(jobEnv.mapValues { .string($0) }),
        ])
    }
}
