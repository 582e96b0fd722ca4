/// A profile the policy grants to a job, with the names of the rules that granted it.
public struct Grant: Sendable, Equatable, Codable {
    /// The profile name, a key of `[profiles]`.
    public let profile: String
    /// The rules whose conditions all held and that list this profile.
    public let rules: [String]

    public init(profile: String, rules: [String]) {
        self.profile = profile
        self.rules = rules
    }
}
