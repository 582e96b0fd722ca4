/// The anchored patterns the configuration's checks use (`^…$`: literals, `\`-escapes, `.`, classes
/// with ranges, groups with `|`, and `? * + {n} {n,} {n,m}`), matched against a whole string in the
/// standard library.
///
/// Issue 19: these checks ran through NSString's `.regularExpression`, and ICU's regex engine sets
/// up its Unicode property sets on first use, about 3 ms in every stage that reads a configuration
/// with a provider (Swift's own `Regex` costs about 2 ms the same way). Unlike ICU, `$` here is the
/// end of the string only: a value with a line break at its end does not pass (ICU lets one through).
/// PatternTests compares every pattern the configuration uses with ICU on generated strings.
package struct Pattern: Sendable {
    indirect enum Node: Sendable {
        case scalar(Unicode.Scalar)
        case any
        case set([ClosedRange<UInt32>], negated: Bool)
        case sequence([Node])
        case alternatives([Node])
        case repeated(Node, min: Int, max: Int?)
    }

    let root: Node

    /// Parses `source`, which must start with `^` and end with `$` (a programming error otherwise:
    /// the patterns are constants in the code).
    package init(_ source: String) {
        var p = Parser(scalars: Array(source.unicodeScalars))
        precondition(p.scalars.first == "^" && p.scalars.last == "$", "pattern \(source) is not anchored with ^…$")
        p.scalars = Array(p.scalars.dropFirst().dropLast())
        root = p.alternatives()
        precondition(p.position == p.scalars.count, "pattern \(source): unexpected \(p.scalars[p.position]) at \(p.position + 1)")
    }

    /// Whether all of `value` matches.
    package func matches(_ value: String) -> Bool {
        let input = Array(value.unicodeScalars)
        return Self.match(root, input, 0) { $0 == input.count }
    }

    private static func match(_ node: Node, _ s: [Unicode.Scalar], _ i: Int, _ next: (Int) -> Bool) -> Bool {
        switch node {
        case .scalar(let c):
            return i < s.count && s[i] == c && next(i + 1)
        case .any:
            return i < s.count && s[i] != "\n" && s[i] != "\r" && next(i + 1)
        case .set(let ranges, let negated):
            guard i < s.count else { return false }
            let inside = ranges.contains { $0.contains(s[i].value) }
            return inside != negated && next(i + 1)
        case .sequence(let nodes):
            return sequence(nodes[...], s, i, next)
        case .alternatives(let nodes):
            return nodes.contains { match($0, s, i, next) }
        case .repeated(let node, let min, let max):
            return repeated(node, min: min, max: max, count: 0, s, i, next)
        }
    }

    private static func sequence(_ nodes: ArraySlice<Node>, _ s: [Unicode.Scalar], _ i: Int, _ next: (Int) -> Bool) -> Bool {
        guard let first = nodes.first else { return next(i) }
        return match(first, s, i) { j in sequence(nodes.dropFirst(), s, j, next) }
    }

    /// Greedy, backtracking; a repetition that consumed nothing does not repeat again.
    private static func repeated(_ node: Node, min: Int, max: Int?, count: Int, _ s: [Unicode.Scalar], _ i: Int,
                                 _ next: (Int) -> Bool) -> Bool {
        if max.map({ count < $0 }) ?? true,
           match(node, s, i, { j in j > i && repeated(node, min: min, max: max, count: count + 1, s, j, next) }) {
            return true
        }
        return count >= min && next(i)
    }

    private struct Parser {
        var scalars: [Unicode.Scalar]
        var position = 0

        var peek: Unicode.Scalar? { position < scalars.count ? scalars[position] : nil }

        mutating func take() -> Unicode.Scalar {
            defer { position += 1 }
            return scalars[position]
        }

        mutating func alternatives() -> Node {
            var options = [sequence()]
            while peek == "|" {
                position += 1
                options.append(sequence())
            }
            return options.count == 1 ? options[0] : .alternatives(options)
        }

        mutating func sequence() -> Node {
            var nodes: [Node] = []
            while let c = peek, c != "|", c != ")" {
                nodes.append(quantified(atom()))
            }
            return .sequence(nodes)
        }

        mutating func atom() -> Node {
            let c = take()
            switch c {
            case "(":
                let inner = alternatives()
                precondition(take() == ")", "unclosed group")
                return inner
            case "[":
                return set()
            case "\\":
                return .scalar(take())
            case ".":
                return .any
            default:
                precondition(!"*+?{}$^".unicodeScalars.contains(c), "pattern character \(c) is not supported unescaped")
                return .scalar(c)
            }
        }

        mutating func set() -> Node {
            var negated = false
            if peek == "^" { negated = true; position += 1 }
            var ranges: [ClosedRange<UInt32>] = []
            var first = true
            while let c = peek, c != "]" || first {
                first = false
                var low = take()
                if low == "\\" { low = take() }
                if peek == "-", position + 1 < scalars.count, scalars[position + 1] != "]" {
                    position += 1
                    var high = take()
                    if high == "\\" { high = take() }
                    precondition(low.value <= high.value, "bad range")
                    ranges.append(low.value...high.value)
                } else {
                    ranges.append(low.value...low.value)
                }
            }
            precondition(take() == "]", "unclosed class")
            return .set(ranges, negated: negated)
        }

        mutating func quantified(_ node: Node) -> Node {
            switch peek {
            case "?": position += 1; return .repeated(node, min: 0, max: 1)
            case "*": position += 1; return .repeated(node, min: 0, max: nil)
            case "+": position += 1; return .repeated(node, min: 1, max: nil)
            case "{":
                position += 1
                let low = number()
                var high: Int? = low
                if peek == "," {
                    position += 1
                    high = peek == "}" ? nil : number()
                }
                precondition(take() == "}", "bad {n,m}")
                return .repeated(node, min: low, max: high)
            default:
                return node
            }
        }

        mutating func number() -> Int {
            var n = 0
            var digits = 0
            while let c = peek, ("0"..."9").contains(c) {
                n = n * 10 + Int(c.value - 48)
                digits += 1
                position += 1
            }
            precondition(digits > 0, "a number is expected in {n,m}")
            return n
        }
    }
}
