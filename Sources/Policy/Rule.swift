import Identity

/// What a rule condition accepts for one claim.
public indirect enum Matcher: Sendable, Equatable, CustomStringConvertible {
    /// The claim equals this string exactly.
    case exact(String)
    /// A glob: `*` matches within one path segment, `**` across segments, `?` one character.
    case glob(String)
    /// GitLab's "true"/"false" strings.
    case bool(Bool)
    /// Any of these.
    case anyOf([Matcher])

    /// A policy's string value: a glob when it has a wildcard (`*`, `?`), else an exact value.
    public static func pattern(_ s: String) -> Matcher { s.contains("*") || s.contains("?") ? .glob(s) : .exact(s) }

    public func matches(_ value: String) -> Bool {
        switch self {
        case .exact(let s): return s == value
        case .glob(let g): return Glob.match(Array(g.utf8), Array(value.utf8))
        case .bool(let b): return value == (b ? "true" : "false")
        case .anyOf(let ms): return ms.contains { $0.matches(value) }
        }
    }

    public var description: String {
        switch self {
        case .exact(let s): return s.debugDescription
        case .glob(let g): return "glob \(g.debugDescription)"
        case .bool(let b): return b ? "\"true\"" : "\"false\""
        case .anyOf(let ms): return "one of [" + ms.map(\.description).joined(separator: ", ") + "]"
        }
    }
}

/// One condition of a rule: a claim and what it must be.
public struct Condition: Sendable, Equatable {
    public let claim: String
    public let matcher: Matcher
    public init(claim: String, matcher: Matcher) {
        self.claim = claim
        self.matcher = matcher
    }
}

/// A `[[rules]]` entry: when every condition holds, the job is granted these profiles.
public struct Rule: Sendable, Equatable {
    public let name: String
    public let conditions: [Condition]
    public let grants: [String]
    /// Where it was written: the main file, or a team's file (issue 18).
    public let origin: RuleOrigin?
    public init(name: String, conditions: [Condition], grants: [String], origin: RuleOrigin? = nil) {
        self.name = name
        self.conditions = conditions
        self.grants = grants
        self.origin = origin
    }
}

/// The file and line a rule comes from, and the team that owns it (nil: the platform's main file).
public struct RuleOrigin: Sendable, Equatable, CustomStringConvertible {
    public let team: String?
    public let file: String
    private let findLine: @Sendable () -> Int?
    /// The rule's line in `file`, found when asked for (by the admin tools: the stages, which read
    /// the configuration on every call, never ask; issue 19).
    public var line: Int? { findLine() }
    public init(team: String?, file: String, line: Int?) {
        self.init(team: team, file: file, findLine: { line })
    }
    public init(team: String?, file: String, findLine: @escaping @Sendable () -> Int?) {
        self.team = team
        self.file = file
        self.findLine = findLine
    }
    public static func == (a: RuleOrigin, b: RuleOrigin) -> Bool { a.team == b.team && a.file == b.file && a.line == b.line }
    public var description: String {
        (team.map { "team \($0), " } ?? "") + file + (line.map { ":\($0)" } ?? "")
    }
}

/// Glob matching over bytes.
enum Glob {
    static func match(_ p: [UInt8], _ s: [UInt8]) -> Bool {
        var memo = [Int: Bool]()
        func go(_ i: Int, _ j: Int) -> Bool {
            let key = i * (s.count + 1) + j
            if let m = memo[key] { return m }
            var r: Bool
            if i == p.count {
                r = j == s.count
            } else if p[i] == 0x2a {  // '*'
                let double = i + 1 < p.count && p[i + 1] == 0x2a
                let next = double ? i + 2 : i + 1
                r = go(next, j)
                var k = j
                while !r && k < s.count && (double || s[k] != 0x2f) {
                    k += 1
                    r = go(next, k)
                }
            } else if j < s.count && (p[i] == 0x3f ? s[j] != 0x2f : p[i] == s[j]) {
                r = go(i + 1, j + 1)
            } else {
                r = false
            }
            memo[key] = r
            return r
        }
        return go(0, 0)
    }
}
