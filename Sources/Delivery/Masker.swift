import Foundation

/// The byte patterns that must never reach a log: each secret and the forms a job is likely to print
/// it in (base64 at every alignment, base64url, URL-encoded, JSON-escaped with or without `\uXXXX`,
/// hex, XML/HTML character references, backslash-escaped).
///
/// The runner's own masker covers exact values only and never learns of driver-created secrets
/// (custom-executor.md §4), so Airlock masks what it issues itself.
public struct MaskPatterns: Sendable {
    /// The patterns, longest first, deduplicated.
    public let patterns: [[UInt8]]

    /// Shortest pattern worth masking; shorter fragments would mask ordinary text.
    public static let minimumLength = 8

    /// Builds patterns for these secret values; multi-line values are masked line by line.
    public init(secrets: [String]) {
        var set = Set<[UInt8]>()
        for secret in secrets {
            for line in secret.split(whereSeparator: { $0 == "\n" || $0 == "\r" }) {
                let v = line.trimmingCharacters(in: .whitespaces)
                guard v.utf8.count >= Self.minimumLength else { continue }
                for form in Self.forms(of: v) where form.count >= Self.minimumLength && !form.contains(0x0a) {
                    set.insert(form)
                }
            }
        }
        patterns = set.sorted { $0.count != $1.count ? $0.count > $1.count : $0.lexicographicallyPrecedes($1) }
    }

    /// Exact values only, as GitLab Runner's own phrase masker does (custom-executor.md §4). GitLab
    /// refuses to mask a variable shorter than 8 characters, and so does this.
    public init(exact values: [String]) {
        patterns = Set(values.map { Array($0.trimmingCharacters(in: .whitespacesAndNewlines).utf8) }.filter { $0.count >= Self.minimumLength })
            .sorted { $0.count > $1.count }
    }

    static func forms(of value: String) -> [[UInt8]] {
        let raw = Array(value.utf8)
        var out: [[UInt8]] = [raw]
        // URL-encoded: every reserved byte, upper and lower hex, with and without '/' kept (Python's quote default).
        for kept in ["", "/"] {
            for upper in [true, false] {
                out.append(percentEncode(raw, keeping: kept, upper: upper))
            }
        }
        out.append(percentEncode(raw, spaceAsPlus: true))
        // Path-style escaping: Foundation's .urlPathAllowed keeps the sub-delims, ':', '@' and '/';
        // Go's url.PathEscape keeps "$&+,:;=@" and escapes '/'.
        out.append(percentEncode(raw, keeping: "!$&'()*+,;=:@/"))
        out.append(percentEncode(raw, keeping: "$&+,:;=@"))
        // JSON-escaped, with and without "\/".
        out.append(jsonEscape(raw, slash: false))
        out.append(jsonEscape(raw, slash: true))
        // JSON with \uXXXX for every byte but letters and digits (lower and upper hex), and for the
        // characters .NET's default encoder escapes (HTML-sensitive ones and '+', upper hex).
        let alnum: (UInt8) -> Bool = { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5a) || ($0 >= 0x61 && $0 <= 0x7a) }
        out.append(escapeEach(raw, where: { !alnum($0) }, { "\\u00" + hex($0, upper: false) }))
        out.append(escapeEach(raw, where: { !alnum($0) }, { "\\u00" + hex($0, upper: true) }))
        let dotnet = Set("\"&'+<>`\\".utf8), xml = Set("&<>\"'".utf8), shell = Set(" \t!\"$&'()*,;<>?[\\]^`{|}".utf8)
        out.append(escapeEach(raw, where: { dotnet.contains($0) || $0 < 0x20 }, { b in
            b == 0x5c ? "\\\\" : "\\u00" + hex(b, upper: true)
        }))
        // Hex, lower and upper case (xxd -p, od, hexdump and friends without their line breaks).
        // Table lookups, not String(format:): 100 session tokens of 1000 bytes took 0.5 s that way.
        for digits in [hexLower, hexUpper] {
            var h = [UInt8](); h.reserveCapacity(raw.count * 2)
            for b in raw { h.append(digits[Int(b >> 4)]); h.append(digits[Int(b & 0xf)]) }
            out.append(h)
        }
        // XML/HTML: the named references for & < > " (and &#39;, &apos; or &#x27; for '), and numeric
        // references (decimal, hex) for every byte but letters and digits.
        for apos in ["&#39;", "&apos;", "&#x27;"] {
            out.append(escapeEach(raw, where: { xml.contains($0) }, { b in
                switch b { case 0x26: "&amp;"; case 0x3c: "&lt;"; case 0x3e: "&gt;"; case 0x22: "&quot;"; default: apos }
            }))
        }
        out.append(escapeEach(raw, where: { !alnum($0) }, { "&#\($0);" }))
        out.append(escapeEach(raw, where: { !alnum($0) }, { "&#x" + String($0, radix: 16) + ";" }))
        out.append(escapeEach(raw, where: { !alnum($0) }, { "&#x" + String($0, radix: 16, uppercase: true) + ";" }))
        // Backslash-escaped: C strings (\" and \\) and the shell's printf %q / ${v@Q}-less quoting,
        // which puts a backslash before each shell-special character.
        out.append(escapeEach(raw, where: { $0 == 0x22 || $0 == 0x5c }, { "\\" + String(UnicodeScalar($0)) }))
        // (bash 5's set; '#' and '~' only as the first character, where they would mean something).
        var q = escapeEach(raw, where: { shell.contains($0) }, { "\\" + String(UnicodeScalar($0)) })
        if let first = raw.first, first == 0x23 || first == 0x7e { q.insert(0x5c, at: 0) }
        out.append(q)
        // base64 at the three alignments: keep only the characters that depend on the secret alone.
        for offset in 0..<3 {
            let data = Data(repeating: 0, count: offset) + Data(raw)
            let b64 = Array(data.base64EncodedString().utf8)
            let drop = [0, 2, 3][offset]
            let keep = ((offset + raw.count) * 8) / 6
            guard keep > drop, keep <= b64.count else { continue }
            let core = Array(b64[drop..<keep])
            out.append(core)
            out.append(core.map { $0 == 0x2b ? 0x2d : $0 == 0x2f ? 0x5f : $0 })  // base64url
        }
        return out
    }

    static let hexLower = Array("0123456789abcdef".utf8), hexUpper = Array("0123456789ABCDEF".utf8)

    /// Two hex digits.
    static func hex(_ b: UInt8, upper: Bool) -> String {
        let d = upper ? hexUpper : hexLower
        return String(decoding: [d[Int(b >> 4)], d[Int(b & 0xf)]], as: UTF8.self)
    }

    /// `bytes` with every byte for which `escape` holds replaced by `replacement`.
    static func escapeEach(_ bytes: [UInt8], where escape: (UInt8) -> Bool, _ replacement: (UInt8) -> String) -> [UInt8] {
        var out: [UInt8] = []
        for b in bytes { if escape(b) { out += Array(replacement(b).utf8) } else { out.append(b) } }
        return out
    }

    /// Percent-encoding of every byte but the unreserved ones and those in `keeping`; a space as
    /// '+' with `spaceAsPlus` (form encoding).
    static func percentEncode(_ bytes: [UInt8], keeping: String = "", upper: Bool = true, spaceAsPlus: Bool = false) -> [UInt8] {
        let hex = upper ? hexUpper : hexLower
        let kept = Array(keeping.utf8)
        var out: [UInt8] = []
        for b in bytes {
            let unreserved = (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a)
                || b == 0x2d || b == 0x2e || b == 0x5f || b == 0x7e || kept.contains(b)
            if unreserved { out.append(b) }
            else if spaceAsPlus && b == 0x20 { out.append(0x2b) }
            else { out += [0x25, hex[Int(b >> 4)], hex[Int(b & 0xf)]] }
        }
        return out
    }

    static func jsonEscape(_ bytes: [UInt8], slash: Bool) -> [UInt8] {
        var out: [UInt8] = []
        for b in bytes {
            switch b {
            case 0x22: out += [0x5c, 0x22]
            case 0x5c: out += [0x5c, 0x5c]
            case 0x2f where slash: out += [0x5c, 0x2f]
            case 0x09: out += [0x5c, 0x74]
            case ..<0x20: out += Array(String(format: "\\u%04x", b).utf8)
            default: out.append(b)
            }
        }
        return out
    }
}

/// A streaming masker for one output stream: replaces every pattern with `[MASKED]`, also when a
/// pattern is split across reads. Memory is bounded: it holds back at most the longest pattern
/// minus one byte, and only while the tail of what it has seen could still become a secret.
/// The lookup structures for a set of patterns, built once and shared by every stream that masks
/// the same secrets (a stage's stdout and stderr).
public final class MaskTable: Sendable {
    // Patterns bucketed by their first two bytes in a flat table (offsets into `bucketItems`), and
    // two bitmaps over byte pairs: bytes 0-1 and bytes 2-3 of every pattern. Almost every position
    // of ordinary output fails the first bitmap test and costs a few instructions.
    let bucketOffsets: [Int32]
    let bucketItems: [Int32]
    let pairFilter: [UInt64]
    let pairFilter2: [UInt64]
    let firstByte: [Bool]
    /// Wu-Manber shift table over hashed 3-grams, for a window of min(16, shortest pattern) bytes:
    /// sparse enough that ordinary text mostly shifts by the whole window even with 100 secrets
    /// (a 2-gram table saturates: hundreds of patterns cover nearly every alphanumeric pair).
    let shift: [UInt8]
    let window: Int
    /// Longest first, deduplicated.
    let patterns: [[UInt8]]

    /// Builds the tables for `patterns` (deduplicated here). The filters read a pattern's first four
    /// bytes: shorter ones are left out (they would mask ordinary text anyway; MaskPatterns never
    /// makes one, and a 2-byte value once crashed the runner simulator here).
    public init(_ patterns: [[UInt8]]) {
        let patterns = Set(patterns.filter { $0.count >= 4 }).sorted { $0.count != $1.count ? $0.count > $1.count : $0.lexicographicallyPrecedes($1) }
        var pairFilter = [UInt64](repeating: 0, count: 1024)
        var pairFilter2 = [UInt64](repeating: 0, count: 1024)
        var firstByte = [Bool](repeating: false, count: 256)
        var counts = [Int32](repeating: 0, count: 65537)
        for p in patterns {
            let key = Int(p[0]) << 8 | Int(p[1])
            counts[key + 1] += 1
            pairFilter[key >> 6] |= 1 << UInt64(key & 63)
            let key2 = Int(p[2]) << 8 | Int(p[3])
            pairFilter2[key2 >> 6] |= 1 << UInt64(key2 & 63)
            firstByte[Int(p[0])] = true
        }
        for k in 0..<65536 { counts[k + 1] += counts[k] }
        let window = max(3, min(16, patterns.last?.count ?? 3))
        var shift = [UInt8](repeating: UInt8(window - 2), count: 65536)
        for p in patterns {
            for j in 0...(window - 3) {
                let g = StreamMasker.hash3(p[j], p[j + 1], p[j + 2])
                shift[g] = min(shift[g], UInt8(window - 3 - j))
            }
        }
        var fill = counts
        var items = [Int32](repeating: 0, count: patterns.count)
        for (idx, p) in patterns.enumerated() {  // longest first within each bucket
            let key = Int(p[0]) << 8 | Int(p[1])
            items[Int(fill[key])] = Int32(idx)
            fill[key] += 1
        }
        self.patterns = patterns
        self.bucketOffsets = counts
        self.bucketItems = items
        self.pairFilter = pairFilter
        self.pairFilter2 = pairFilter2
        self.firstByte = firstByte
        self.shift = shift
        self.window = window
    }
}

public final class StreamMasker {
    private var table: MaskTable
    private var pending: [UInt8] = []
    public static let replacement = Array("[MASKED]".utf8)

    /// Creates a masker; `patterns` may grow later with `add`.
    public convenience init(_ patterns: MaskPatterns) {
        self.init(MaskTable(patterns.patterns))
    }

    /// A masker over tables already built (shared between a stage's streams).
    public init(_ table: MaskTable) {
        self.table = table
    }

    /// Adds patterns (new credentials issued while the stage runs).
    public func add(_ more: MaskPatterns) {
        table = MaskTable(table.patterns + more.patterns)
    }

    /// Whether bytes are held back waiting for more input.
    public var hasPending: Bool { !pending.isEmpty }

    /// Feeds bytes; returns what is safe to emit now.
    public func feed(_ bytes: some Collection<UInt8>) -> [UInt8] {
        if table.patterns.isEmpty { return Array(bytes) }
        // Nothing held back: scan the input where it is, and keep only an undecided tail.
        if pending.isEmpty, let r = bytes.withContiguousStorageIfAvailable({ buf -> [UInt8] in
            let (out, hold) = scan(buf, final: false)
            if hold < buf.count { pending = Array(UnsafeBufferPointer(rebasing: buf[hold...])) }
            return out
        }) {
            return r
        }
        pending.append(contentsOf: bytes)
        return drain(final: false)
    }

    /// Emits everything held back (end of stream, or the stream went idle).
    public func flush() -> [UInt8] {
        drain(final: true)
    }

    private func drain(final: Bool) -> [UInt8] {
        let (out, hold) = pending.withUnsafeBufferPointer { scan($0, final: final) }
        pending.removeFirst(hold)
        return out
    }

    /// Masks `buf`; returns the output and where the undecided tail starts.
    private func scan(_ buf: UnsafeBufferPointer<UInt8>, final: Bool) -> ([UInt8], Int) {
        var out: [UInt8] = []
        out.reserveCapacity(buf.count + 16)
        var emitFrom = 0
        var holdFrom = buf.count
        let t = table
        let patterns = t.patterns
        let firstByte = t.firstByte
        t.pairFilter.withUnsafeBufferPointer { f1 in
        t.pairFilter2.withUnsafeBufferPointer { f2 in
        t.bucketOffsets.withUnsafeBufferPointer { offsets in
        t.bucketItems.withUnsafeBufferPointer { items in
        t.shift.withUnsafeBufferPointer { sh1 in
            let n = buf.count
            let m = t.window
            var i = 0
            // Wu-Manber: a match starting at i needs the 3-gram ending the window [i, i+m) to occur
            // at the right place in some pattern; if it does not, no match starts in the next
            // `shift` positions.
            scan: while i + m <= n {
                let g = Self.hash3(buf[i + m - 3], buf[i + m - 2], buf[i + m - 1])
                let sh = Int(sh1[g])
                if sh > 0 { i += sh; continue }
                let key = Int(buf[i]) << 8 | Int(buf[i + 1])
                if f1[key >> 6] & (1 << UInt64(key & 63)) == 0 { i += 1; continue }
                let key2 = Int(buf[i + 2]) << 8 | Int(buf[i + 3])
                if f2[key2 >> 6] & (1 << UInt64(key2 & 63)) == 0 { i += 1; continue }
                var matched = 0
                var partial = false
                let avail = n - i
                for b in Int(offsets[key])..<Int(offsets[key + 1]) {
                    let p = patterns[Int(items[b])]
                    if avail >= p.count {
                        // A longer pattern still partially matching wins: hold rather than mask a prefix of it.
                        if Self.equal(buf, i, p, p.count) { if !partial { matched = p.count }; break }
                    } else if !final && Self.equal(buf, i, p, avail) {
                        partial = true
                    }
                }
                if matched > 0 {
                    out.append(contentsOf: UnsafeBufferPointer(rebasing: buf[emitFrom..<i]))
                    out.append(contentsOf: Self.replacement)
                    i += matched
                    emitFrom = i
                    continue
                }
                if partial { holdFrom = i; break scan }
                i += 1
            }
            // The last m-1 positions cannot hold a whole pattern; hold from the first one that
            // could still be the start of one.
            if holdFrom == n && !final {
                tail: while i < n {
                    let avail = n - i
                    if avail >= 2 {
                        let key = Int(buf[i]) << 8 | Int(buf[i + 1])
                        for b in Int(offsets[key])..<Int(offsets[key + 1]) where Self.equal(buf, i, patterns[Int(items[b])], avail) {
                            holdFrom = i
                            break tail
                        }
                    } else if firstByte[Int(buf[i])] {
                        holdFrom = i
                        break tail
                    }
                    i += 1
                }
            }
            if holdFrom == n || final { holdFrom = n }
            out.append(contentsOf: UnsafeBufferPointer(rebasing: buf[emitFrom..<holdFrom]))
        }}}}}
        return (out, holdFrom)
    }

    @inline(__always)
    static func hash3(_ a: UInt8, _ b: UInt8, _ c: UInt8) -> Int {
        (Int(a) << 8 ^ Int(b) << 4 ^ Int(c) &* 0x9E) & 0xFFFF
    }

    @inline(__always)
    private static func equal(_ buf: UnsafeBufferPointer<UInt8>, _ at: Int, _ p: [UInt8], _ len: Int) -> Bool {
        p.withUnsafeBufferPointer { pb in
            memcmp(buf.baseAddress! + at, pb.baseAddress!, len) == 0
        }
    }
}
