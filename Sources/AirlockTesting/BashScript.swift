/// Stage scripts in GitLab Runner 19.x's bash shape (custom-executor.md §1, `shells/bash.go`):
/// a fixed prologue, then the whole body as ONE ANSI-C-quoted string passed to `eval`.
public enum BashScript {
    /// The script file's text for a body (a list of shell lines).
    public static func script(body: [String]) -> String {
        let joined = body.joined(separator: "\n") + "\n"
        return """
        #!/usr/bin/env bash

        trap 'exit 1' TERM

        case "$(set -o)" in *"pipefail"*) set -o pipefail;; esac; set -o errexit
        set +o noclobber
        (trap 'exit 1' TERM; eval \(ansiC(joined))) < /dev/null
        exit 0

        """
    }

    /// `$'...'` quoting: backslash, quote, newline and control bytes escaped.
    public static func ansiC(_ s: String) -> String {
        var out = "$'"
        for b in s.utf8 {
            switch b {
            case 0x5c: out += "\\\\"
            case 0x27: out += "\\'"
            case 0x0a: out += "\\n"
            case 0x0d: out += "\\r"
            case 0x09: out += "\\t"
            case ..<0x20, 0x7f: out += "\\x" + String(b, radix: 16, uppercase: false).leftPad(2)
            default: out += String(UnicodeScalar(b))
            }
        }
        return out + "'"
    }

    /// Shell escaping as the runner's `ShellEscape`: bare when safe, otherwise `$'...'`.
    /// Bytes above 0x7f pass through unchanged inside the quotes.
    public static func escape(_ s: String) -> String {
        let safe = !s.isEmpty && s.utf8.allSatisfy { b in
            (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a)
                || [0x2d, 0x2e, 0x5f, 0x2f, 0x3a, 0x40, 0x3d, 0x2c, 0x2b].contains(b)
        }
        if safe { return s }
        var out = "$'"
        for ch in s.unicodeScalars {
            switch ch {
            case "\\": out += "\\\\"
            case "'": out += "\\'"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "\r": out += "\\r"
            default:
                if ch.value < 0x20 { out += "\\x" + String(ch.value, radix: 16).leftPad(2) } else { out.unicodeScalars.append(ch) }
            }
        }
        return out + "'"
    }

    /// `export KEY=VALUE`.
    public static func export(_ key: String, _ value: String) -> String { "export \(key)=\(escape(value))" }

    /// The runner's echo of a command before running it, in green.
    public static func echoCommand(_ cmd: String) -> String {
        "echo " + escape("\u{1b}[32;1m$ \(cmd)\u{1b}[0;m")
    }
}

extension String {
    func leftPad(_ n: Int) -> String { count >= n ? self : String(repeating: "0", count: n - count) + self }
}
