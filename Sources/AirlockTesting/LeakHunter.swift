import Foundation

/// What a leak hunter does with a job log: decodes everything it printed in every way ordinary
/// tools encode (base64 and base64url at every alignment, hex in either case, URL, JSON, HTML/XML,
/// backslash and quote escaping; each with and without the whitespace that wraps or spaces the
/// output) and looks for any piece of a secret at least `minimum` bytes long.
///
/// Issue 13: a piece shorter than the masker's minimum (8 bytes) may show (a prefix released in
/// clear when the writer paused, the base64 characters that also depend on the bytes beside the
/// secret); a longer one may not, in any decoding.
public enum LeakHunter {
    /// The decodings of `log` in which some `minimum`-byte piece of `secret` shows, by name (empty:
    /// not recoverable). Never returns the piece itself: the result is safe to print.
    public static func recoverable(_ secret: String, in log: String, minimum: Int = 8) -> [String] {
        let bytes = Array(secret.utf8)
        var pieces = Set<[UInt8]>()
        for s in [bytes, bytes.filter { !isSpace($0) }] where s.count >= minimum {
            for i in 0...(s.count - minimum) { pieces.insert(Array(s[i..<(i + minimum)])) }
        }
        guard !pieces.isEmpty else { return [] }
        var found: [String] = []
        for (name, decoded) in decodings(Array(log.utf8)) where contains(decoded, pieces, minimum) {
            found.append(name)
        }
        return found
    }

    /// Every decoding the hunter tries, by name.
    public static func decodings(_ log: [UInt8]) -> [(String, [UInt8])] {
        let compact = log.filter { !isSpace($0) }
        var out: [(String, [UInt8])] = [("as printed", log), ("whitespace removed", compact)]
        for (label, text) in [("", log), (" (whitespace removed)", compact)] {
            out.append(("base64" + label, base64Runs(text, url: false)))
            out.append(("base64url" + label, base64Runs(text, url: true)))
            out.append(("hex" + label, hexRuns(text)))
            out.append(("URL-decoded" + label, percentDecoded(text)))
            out.append(("JSON-unescaped" + label, jsonUnescaped(text)))
            out.append(("HTML-unescaped" + label, htmlUnescaped(text)))
            out.append(("backslashes removed" + label, backslashesRemoved(text)))
            out.append(("doubled quotes undone" + label, replacing(text, Array("''".utf8), [0x27])))
            out.append(("shell quoting undone" + label, replacing(replacing(text, Array("'\\''".utf8), [0x27]), Array("'\"'\"'".utf8), [0x27])))
            out.append(("\\x and octal escapes undone" + label, byteEscapesUndone(text)))
            // bytes.hex(":") and xxd -i's "0x41, 0x4b": the separators dropped, then hex.
            out.append(("hex with separators" + label, hexRuns(replacing(text.filter { $0 != 0x3a && $0 != 0x2c }, Array("0x".utf8), []))))
        }
        return out
    }

    static func isSpace(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 || b == 0x0a || b == 0x0d }

    static func contains(_ text: [UInt8], _ pieces: Set<[UInt8]>, _ n: Int) -> Bool {
        guard text.count >= n else { return false }
        for i in 0...(text.count - n) where pieces.contains(Array(text[i..<(i + n)])) { return true }
        return false
    }

    /// Each maximal run of base64 characters, decoded from each of its first four characters (so
    /// every alignment), the results joined by a zero byte.
    static func base64Runs(_ text: [UInt8], url: Bool) -> [UInt8] {
        var value = [Int](repeating: -1, count: 256)
        for (i, c) in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789".utf8.enumerated() { value[Int(c)] = i }
        value[Int(url ? UInt8(ascii: "-") : UInt8(ascii: "+"))] = 62
        value[Int(url ? UInt8(ascii: "_") : UInt8(ascii: "/"))] = 63
        var out: [UInt8] = []
        for run in runs(text, where: { value[Int($0)] >= 0 }) {
            for start in 0..<min(4, run.count) {
                var acc = 0, bits = 0
                for c in run[(run.startIndex + start)...] {
                    acc = (acc << 6 | value[Int(c)]) & 0xffff
                    bits += 6
                    if bits >= 8 { bits -= 8; out.append(UInt8((acc >> bits) & 0xff)) }
                }
                out.append(0)
            }
        }
        return out
    }

    /// Each maximal run of hex digits, decoded from its first and second digit.
    static func hexRuns(_ text: [UInt8]) -> [UInt8] {
        func digit(_ c: UInt8) -> Int? {
            switch c {
            case 0x30...0x39: Int(c - 0x30)
            case 0x41...0x46: Int(c - 0x41 + 10)
            case 0x61...0x66: Int(c - 0x61 + 10)
            default: nil
            }
        }
        var out: [UInt8] = []
        for run in runs(text, where: { digit($0) != nil }) {
            for start in 0..<min(2, run.count) {
                var i = run.startIndex + start
                while i + 1 < run.endIndex { out.append(UInt8(digit(run[i])! << 4 | digit(run[i + 1])!)); i += 2 }
                out.append(0)
            }
        }
        return out
    }

    static func runs(_ text: [UInt8], where member: (UInt8) -> Bool) -> [ArraySlice<UInt8>] {
        var out: [ArraySlice<UInt8>] = []
        var i = 0
        while i < text.count {
            guard member(text[i]) else { i += 1; continue }
            var j = i
            while j < text.count && member(text[j]) { j += 1 }
            out.append(text[i..<j])
            i = j
        }
        return out
    }

    static func percentDecoded(_ text: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        var i = 0
        while i < text.count {
            if text[i] == 0x25, i + 2 < text.count, let v = UInt8(String(decoding: text[(i + 1)...(i + 2)], as: UTF8.self), radix: 16) {
                out.append(v); i += 3
            } else {
                out.append(text[i] == 0x2b ? 0x20 : text[i]); i += 1
            }
        }
        return out
    }

    static func jsonUnescaped(_ text: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        var i = 0
        while i < text.count {
            if text[i] == 0x5c, i + 1 < text.count {
                let c = text[i + 1]
                if c == 0x75, i + 5 < text.count, let v = UInt32(String(decoding: text[(i + 2)...(i + 5)], as: UTF8.self), radix: 16),
                   let scalar = Unicode.Scalar(v) {
                    out += Array(String(Character(scalar)).utf8); i += 6; continue
                }
                switch c {
                case 0x6e: out.append(0x0a)
                case 0x74: out.append(0x09)
                case 0x72: out.append(0x0d)
                default: out.append(c)
                }
                i += 2
            } else {
                out.append(text[i]); i += 1
            }
        }
        return out
    }

    static func htmlUnescaped(_ text: [UInt8]) -> [UInt8] {
        let named: [String: UInt8] = ["amp": 0x26, "lt": 0x3c, "gt": 0x3e, "quot": 0x22, "apos": 0x27]
        var out: [UInt8] = []
        var i = 0
        while i < text.count {
            if text[i] == 0x26, let end = text[i...].prefix(12).firstIndex(of: 0x3b) {
                let name = String(decoding: text[(i + 1)..<end], as: UTF8.self)
                var v: UInt32?
                if name.hasPrefix("#x") || name.hasPrefix("#X") { v = UInt32(name.dropFirst(2), radix: 16) }
                else if name.hasPrefix("#") { v = UInt32(name.dropFirst()) }
                else if let b = named[name] { v = UInt32(b) }
                if let v, let scalar = Unicode.Scalar(v) {
                    out += Array(String(Character(scalar)).utf8); i = end + 1; continue
                }
            }
            out.append(text[i]); i += 1
        }
        return out
    }

    /// Python's and YAML's \xHH and sed -n l's \ooo, each one byte.
    static func byteEscapesUndone(_ text: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        var i = 0
        while i < text.count {
            if text[i] == 0x5c, i + 3 < text.count, text[i + 1] == 0x78,
               let v = UInt8(String(decoding: text[(i + 2)...(i + 3)], as: UTF8.self), radix: 16) {
                out.append(v); i += 4; continue
            }
            if text[i] == 0x5c, i + 3 < text.count, let v = UInt16(String(decoding: text[(i + 1)...(i + 3)], as: UTF8.self), radix: 8), v < 256 {
                out.append(UInt8(v)); i += 4; continue
            }
            out.append(text[i]); i += 1
        }
        return out
    }

    static func backslashesRemoved(_ text: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        var i = 0
        while i < text.count {
            if text[i] == 0x5c, i + 1 < text.count { out.append(text[i + 1]); i += 2 } else { out.append(text[i]); i += 1 }
        }
        return out
    }

    static func replacing(_ text: [UInt8], _ what: [UInt8], _ with: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        var i = 0
        while i < text.count {
            if i + what.count <= text.count, Array(text[i..<(i + what.count)]) == what { out += with; i += what.count }
            else { out.append(text[i]); i += 1 }
        }
        return out
    }
}
