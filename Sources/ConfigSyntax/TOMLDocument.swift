import Foundation
public import RunnerContract
internal import TOMLKit

/// A parsed TOML value as a plain `Sendable` tree, so the config can cross concurrency domains.
package enum TOMLNode: Sendable {
    case string(String), int(Int), double(Double), bool(Bool)
    case array([TOMLNode])
    case table([String: TOMLNode], order: [String])
    case other(String)

    package var typeName: String {
        switch self {
        case .string: "string"
        case .int: "integer"
        case .double: "float"
        case .bool: "boolean"
        case .array: "array"
        case .table: "table"
        case .other(let t): t
        }
    }

    static func from(_ value: any TOMLValueConvertible) -> TOMLNode {
        switch value.type {
        case .string: return .string(value.string ?? "")
        case .int: return .int(value.int ?? 0)
        case .double: return .double(value.double ?? 0)
        case .bool: return .bool(value.bool ?? false)
        case .array:
            return .array((value.array ?? TOMLArray()).map { from($0) })
        case .table:
            let t = value.table ?? TOMLTable()
            var dict: [String: TOMLNode] = [:]
            let keys = t.keys
            for k in keys { if let v = t[k] { dict[k] = from(v) } }
            return .table(dict, order: keys)
        default:
            return .other(value.type.rawValue)
        }
    }
}

/// Where each key of a TOML file stands, so errors can name the line. A light scan that understands
/// `[table]`, `[[array.of.tables]]` and `key = value` lines, which is all Airlock's files use.
package struct TOMLLineIndex: Sendable {
    private let source: String
    /// The scan, shared by every copy of this index (each table's cursor holds one), made once.
    private let scanned = Scanned()

    private final class Scanned: @unchecked Sendable {
        let lock = NSLock()
        var lines: [String: Int]?
    }

    /// The index of `source`, scanned when a line is first asked for (an error, or a rule's origin):
    /// the stages that only read the runner's settings never scan it (issue 19: the scan was a
    /// fifth of a run stage's own time with the example configuration, done twice).
    package init(source: String) { self.source = source }

    private func table() -> [String: Int] {
        scanned.lock.withLock {
            if let lines = scanned.lines { return lines }
            let lines = scan()
            scanned.lines = lines
            return lines
        }
    }

    private func scan() -> [String: Int] {
        var lines: [String: Int] = [:]
        var current: [String] = []
        var arrayCounts: [String: Int] = [:]
        for (i, raw) in source.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = Self.trimmed(raw)
            if line.hasPrefix("[["), let end = line.firstRange(of: "]]") {
                let name = Self.keyPath(String(line[line.index(line.startIndex, offsetBy: 2)..<end.lowerBound]))
                let joined = name.joined(separator: ".")
                let n = arrayCounts[joined, default: 0]
                arrayCounts[joined] = n + 1
                current = name.dropLast() + ["\(name.last ?? "")[\(n)]"]
                lines[current.joined(separator: ".")] = i + 1
            } else if line.hasPrefix("["), let end = line.firstIndex(of: "]") {
                current = Self.keyPath(String(line[line.index(after: line.startIndex)..<end]))
                lines[current.joined(separator: "."), default: i + 1] = i + 1
            } else if !line.hasPrefix("#"), let eq = line.firstIndex(of: "=") {
                let key = Self.keyPath(String(line[..<eq]))
                guard !key.isEmpty else { continue }
                lines[(current + key).joined(separator: "."), default: i + 1] = i + 1
            }
        }
        return lines
    }

    /// Splits `a."b.c".d` into its keys.
    package static func keyPath(_ s: String) -> [String] {
        var parts: [String] = []
        var cur = ""
        var quote: Character? = nil
        for ch in s {
            if let q = quote {
                if ch == q { quote = nil } else { cur.append(ch) }
            } else if ch == "\"" || ch == "'" {
                quote = ch
            } else if ch == "." {
                parts.append(String(trimmed(cur[...]))); cur = ""
            } else {
                cur.append(ch)
            }
        }
        let last = String(trimmed(cur[...]))
        if !last.isEmpty || !parts.isEmpty { parts.append(last) }
        return parts
    }

    /// `s` without the white space at either end that Foundation's `trimmingCharacters(in:
    /// .whitespaces)` removes (tab, Unicode's space separators, Zs, and the zero width space,
    /// which CoreFoundation still counts among them), in the standard library:
    /// Foundation's version goes through NSString, and this index is built on every read of a
    /// configuration, in every stage (issue 19).
    package static func trimmed(_ s: Substring) -> Substring {
        func blank(_ u: Unicode.Scalar) -> Bool { u == "\t" || u == "\u{200B}" || u.properties.generalCategory == .spaceSeparator }
        let scalars = s.unicodeScalars
        guard let first = scalars.firstIndex(where: { !blank($0) }), let last = scalars.lastIndex(where: { !blank($0) }) else { return s[s.endIndex...] }
        return Substring(scalars[first...last])
    }

    /// The 1-based line of a dotted key path, or of its nearest enclosing table.
    package func line(of path: [String]) -> Int? {
        let lines = table()
        var p = path
        while !p.isEmpty {
            if let l = lines[p.joined(separator: ".")] { return l }
            p.removeLast()
        }
        return nil
    }
}

/// A configuration error: the file, line and key that are wrong, and what is allowed. Host's fault.
public struct ConfigError: BlamedError, Equatable {
    public var fault: Fault { .system }
    /// The full message, e.g. `airlock.toml:7: [runner] isolation: expected one of ...`.
    public let message: String
    public var description: String { message }
    package init(message: String) { self.message = message }
}

/// Reads one table of the file, remembers which keys were read, and reports the rest as unknown.
package struct TOMLCursor {
    package let file: String
    package let index: TOMLLineIndex
    package let path: [String]
    package let entries: [String: TOMLNode]
    package let order: [String]
    package private(set) var used: Set<String> = []

    package init(file: String, index: TOMLLineIndex, path: [String], node: TOMLNode) {
        self.file = file
        self.index = index
        self.path = path
        if case .table(let d, let o) = node {
            entries = d
            order = o
        } else {
            entries = [:]
            order = []
        }
    }

    /// The path as a reader sees it: `[runner] graceful_kill`, `[[rules]] #2 ref`.
    package func describe(_ key: String?) -> String {
        var table = ""
        for p in path {
            if let open = p.firstIndex(of: "["), let n = Int(p[p.index(after: open)..<p.index(before: p.endIndex)]) {
                table += (table.isEmpty ? "" : ".") + p[..<open] + " #\(n + 1)"
            } else {
                table += (table.isEmpty ? "" : ".") + p
            }
        }
        let t = table.isEmpty ? "" : "[\(table)]"
        guard let key else { return t.isEmpty ? "top level" : t }
        return t.isEmpty ? key : "\(t) \(key)"
    }

    package func error(_ key: String?, _ what: String) -> ConfigError {
        let line = index.line(of: path + (key.map { [$0] } ?? [])).map { ":\($0)" } ?? ""
        return ConfigError(message: "\(file)\(line): \(describe(key)): \(what)")
    }

    package mutating func raw(_ key: String) -> TOMLNode? {
        used.insert(key)
        return entries[key]
    }

    package func has(_ key: String) -> Bool { entries[key] != nil }

    package mutating func string(_ key: String) throws(ConfigError) -> String? {
        guard let n = raw(key) else { return nil }
        guard case .string(let s) = n else { throw error(key, "expected a string, got \(n.typeName)") }
        return s
    }

    package mutating func requiredString(_ key: String, hint: String) throws(ConfigError) -> String {
        guard let s = try string(key) else { throw error(key, "is required: \(hint)") }
        guard !TOMLLineIndex.trimmed(s[...]).isEmpty else { throw error(key, "must not be empty: \(hint)") }
        return s
    }

    package mutating func bool(_ key: String) throws(ConfigError) -> Bool? {
        guard let n = raw(key) else { return nil }
        guard case .bool(let b) = n else { throw error(key, "expected true or false, got \(n.typeName)") }
        return b
    }

    package mutating func int(_ key: String) throws(ConfigError) -> Int? {
        guard let n = raw(key) else { return nil }
        guard case .int(let i) = n else { throw error(key, "expected an integer, got \(n.typeName)") }
        return i
    }

    package mutating func stringArray(_ key: String) throws(ConfigError) -> [String]? {
        guard let n = raw(key) else { return nil }
        if case .string(let s) = n { return [s] }
        guard case .array(let items) = n else { throw error(key, "expected a list of strings, got \(n.typeName)") }
        var out: [String] = []
        for item in items {
            guard case .string(let s) = item else { throw error(key, "expected a list of strings, found a \(item.typeName) in it") }
            out.append(s)
        }
        return out
    }

    package mutating func stringMap(_ key: String) throws(ConfigError) -> [String: String]? {
        guard let n = raw(key) else { return nil }
        guard case .table(let d, _) = n else { throw error(key, "expected a table of strings, got \(n.typeName)") }
        var out: [String: String] = [:]
        for (k, v) in d {
            guard case .string(let s) = v else { throw error(key, "\(k): expected a string, got \(v.typeName)") }
            out[k] = s
        }
        return out
    }

    /// A duration written as `"90s"`, `"10m"`, `"1h"`, `"1h30m"`, `"500ms"`, or a number of seconds.
    package mutating func duration(_ key: String) throws(ConfigError) -> Double? {
        guard let n = raw(key) else { return nil }
        switch n {
        case .int(let i) where i >= 0: return Double(i)
        case .string(let s):
            guard let d = Self.parseDuration(s) else {
                throw error(key, "expected a duration like \"10s\", \"5m\" or \"1h30m\", got \(s.quoted)")
            }
            return d
        default: throw error(key, "expected a duration like \"10s\", got \(n.typeName)")
        }
    }

    package static func parseDuration(_ s: String) -> Double? {
        var total = 0.0
        var num = ""
        var i = s.startIndex
        var sawUnit = false
        while i < s.endIndex {
            let c = s[i]
            if c.isNumber || c == "." { num.append(c); i = s.index(after: i); continue }
            guard let v = Double(num) else { return nil }
            let rest = s[i...]
            let (unit, mult): (String, Double) =
                rest.hasPrefix("ms") ? ("ms", 0.001) : rest.hasPrefix("s") ? ("s", 1) : rest.hasPrefix("m") ? ("m", 60)
                : rest.hasPrefix("h") ? ("h", 3600) : ("", 0)
            guard !unit.isEmpty else { return nil }
            total += v * mult
            num = ""
            sawUnit = true
            i = s.index(i, offsetBy: unit.count)
        }
        if !num.isEmpty { return nil }
        return sawUnit ? total : nil
    }

    package mutating func table(_ key: String) throws(ConfigError) -> TOMLCursor? {
        guard let n = raw(key) else { return nil }
        guard case .table = n else { throw error(key, "expected a table [\(key)], got \(n.typeName)") }
        return TOMLCursor(file: file, index: index, path: path + [key], node: n)
    }

    /// `[[key]]` entries.
    package mutating func tableArray(_ key: String) throws(ConfigError) -> [TOMLCursor] {
        guard let n = raw(key) else { return [] }
        guard case .array(let items) = n else { throw error(key, "expected [[\(key)]] tables, got \(n.typeName)") }
        var out: [TOMLCursor] = []
        for (i, item) in items.enumerated() {
            guard case .table = item else { throw error(key, "entry \(i + 1) is a \(item.typeName), expected a table") }
            out.append(TOMLCursor(file: file, index: index, path: path + ["\(key)[\(i)]"], node: item))
        }
        return out
    }

    /// Every sub-table, for `[profiles.NAME]`-style sections.
    package func subtables() throws(ConfigError) -> [(String, TOMLCursor)] {
        var out: [(String, TOMLCursor)] = []
        for k in order {
            guard let n = entries[k] else { continue }
            guard case .table = n else { throw error(k, "expected a table [\(describe(nil).dropFirst().dropLast()).\(k)], got \(n.typeName)") }
            out.append((k, TOMLCursor(file: file, index: index, path: path + [k], node: n)))
        }
        return out
    }

    /// Rejects every key that was not read.
    package func finish(allowed: [String]? = nil) throws(ConfigError) {
        for k in order where !used.contains(k) {
            let known = allowed ?? used.sorted()
            throw error(k, "unknown key; allowed here: \(known.sorted().joined(separator: ", "))")
        }
    }

    /// The string `key` of the top-level table `[table]`, read without building the whole tree (the
    /// stages after prepare need only `[runner] state_dir` of the file to find the job's own copy).
    /// nil when `source` is not TOML or has no such table; `.some(nil)` when the key is absent or
    /// not a string.
    package static func string(in source: String, table: String, key: String) -> String?? {
        guard let top = try? TOMLTable(string: source), let t = top[table], t.type == .table, let sub = t.table else { return nil }
        guard let v = sub[key], v.type == .string else { return .some(nil) }
        return .some(v.string)
    }

    /// Parses a whole file.
    package static func parse(source: String, file: String) throws(ConfigError) -> TOMLCursor {
        let table: TOMLTable
        do {
            table = try TOMLTable(string: source)
        } catch let e as TOMLParseError {
            throw ConfigError(message: "\(file):\(e.source.begin.line): TOML syntax error: \(e.description)")
        } catch {
            throw ConfigError(message: "\(file): TOML syntax error: \(error)")
        }
        return TOMLCursor(file: file, index: TOMLLineIndex(source: source), path: [], node: TOMLNode.from(table))
    }
}

extension String {
    /// The string in double quotes with `"` and `\` escaped, for messages. (TOMLKit redefines
    /// `String.debugDescription` to return the bare string, so it cannot be used in this module.)
    package var quoted: String {
        "\"" + replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
    }
}
