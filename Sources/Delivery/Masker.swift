import CSupport
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

    /// Builds patterns for these secret values: each whole value and, for a multi-line one (a PEM
    /// key), each line as well. Patterns carry no whitespace: the masker skips whitespace in the
    /// output too, so a form broken into lines or spaced out still matches.
    public init(secrets: [String]) {
        var set = Set<[UInt8]>()
        for secret in secrets {
            let whole = secret.trimmingCharacters(in: .whitespacesAndNewlines)
            var values = [whole]
            // isNewline: "\r\n" is one Character, neither "\n" nor "\r" (a CRLF PEM got no lines).
            if whole.contains(where: \.isNewline) {
                values += whole.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
            }
            for v in values where Self.isMaskable(v) {
                for form in Self.forms(of: v) {
                    let skeleton = Self.withoutWhitespace(form)
                    if skeleton.count >= Self.minimumLength { set.insert(skeleton) }
                    // A value ending in a backslash printed before a newline: the masker skips that
                    // backslash as a line continuation (sed -n l), so match without it too.
                    if skeleton.last == 0x5c, skeleton.count - 1 >= Self.minimumLength { set.insert(Array(skeleton.dropLast())) }
                }
            }
        }
        patterns = set.sorted { $0.count != $1.count ? $0.count > $1.count : $0.lexicographicallyPrecedes($1) }
    }

    /// Exact values only, as GitLab Runner's own phrase masker does (custom-executor.md §4). GitLab
    /// refuses to mask a variable shorter than 8 characters, and so does this.
    public init(exact values: [String]) {
        patterns = Set(values.map { Self.withoutWhitespace(Array($0.utf8)) }.filter { $0.count >= Self.minimumLength })
            .sorted { $0.count > $1.count }
    }

    /// Whether the masker can mask `value` (it has at least `minimumLength` bytes besides whitespace).
    /// Airlock hands out no value that fails this in a place a script can print.
    public static func isMaskable(_ value: String) -> Bool {
        withoutWhitespace(Array(value.utf8)).count >= minimumLength
    }

    /// What the masker compares of `bytes`: no whitespace, and no backslash that ends a line (as
    /// airlock_skipped treats output), so a multi-line value with such a line still matches whole.
    static func withoutWhitespace(_ bytes: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        for (i, b) in bytes.enumerated() where MaskTable.kept[Int(b)] == 1 {
            if b == 0x5c, i + 1 < bytes.count, bytes[i + 1] == 0x0a || bytes[i + 1] == 0x0d { continue }
            out.append(b)
        }
        return out
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
        out.append(escapeEach(raw, where: { $0 < 0x80 && !alnum($0) }, { "\\u00" + hex($0, upper: false) }))
        out.append(escapeEach(raw, where: { $0 < 0x80 && !alnum($0) }, { "\\u00" + hex($0, upper: true) }))
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
        out.append(escapeEach(raw, where: { $0 < 0x80 && !alnum($0) }, { "&#\($0);" }))
        out.append(escapeEach(raw, where: { $0 < 0x80 && !alnum($0) }, { "&#x" + String($0, radix: 16) + ";" }))
        out.append(escapeEach(raw, where: { $0 < 0x80 && !alnum($0) }, { "&#x" + String($0, radix: 16, uppercase: true) + ";" }))
        // Backslash-escaped: C strings (\" and \\) and the shell's printf %q / ${v@Q}-less quoting,
        // which puts a backslash before each shell-special character.
        out.append(escapeEach(raw, where: { $0 == 0x22 || $0 == 0x5c }, { "\\" + String(UnicodeScalar($0)) }))
        // (bash 5's set; '#' and '~' only as the first character, where they would mean something).
        var q = escapeEach(raw, where: { shell.contains($0) }, { "\\" + String(UnicodeScalar($0)) })
        if let first = raw.first, first == 0x23 || first == 0x7e { q.insert(0x5c, at: 0) }
        out.append(q)
        // GitHub Actions' other encoders: single quotes doubled (its expression strings, SQL, YAML)
        // and a value in double quotes without them.
        out.append(escapeEach(raw, where: { $0 == 0x27 }, { _ in "''" }))
        if raw.count > 2, raw.first == 0x22, raw.last == 0x22 { out.append(Array(raw[1..<(raw.count - 1)])) }
        // What everyday tools print that the encoders above do not cover (issue 13's red team):
        // JavaScript's encodeURIComponent and jq's @uri keep !*'(); Java's URLEncoder keeps '*',
        // encodes '~' and writes a space as '+'.
        out.append(percentEncode(raw, keeping: "!*'()"))
        out.append(percentEncode(raw, keeping: "*", spaceAsPlus: true, encodeTilde: true))
        // Shell quoting of a single quote: bash's set -x, ${v@Q}, declare and jq @sh write '\'';
        // Python's shlex.quote writes '"'"'.
        out.append(escapeEach(raw, where: { $0 == 0x27 }, { _ in "'\\''" }))
        out.append(escapeEach(raw, where: { $0 == 0x27 }, { _ in "'\"'\"'" }))
        // Inside double quotes (declare -p, export -p): a backslash before $ ` " and \.
        out.append(escapeEach(raw, where: { $0 == 0x24 || $0 == 0x60 || $0 == 0x22 || $0 == 0x5c }, { "\\" + String(UnicodeScalar($0)) }))
        // Python's and node's repr of a string: a backslash before \ and ' (not ").
        out.append(escapeEach(raw, where: { $0 == 0x27 || $0 == 0x5c }, { "\\" + String(UnicodeScalar($0)) }))
        // Go's encoding/json: \" and \\, and < > & as lower-case \u003c \u003e \u0026 ('+' as it is).
        out.append(escapeEach(raw, where: { $0 == 0x22 || $0 == 0x5c || $0 == 0x3c || $0 == 0x3e || $0 == 0x26 }, { b in
            b == 0x22 ? "\\\"" : b == 0x5c ? "\\\\" : "\\u00" + hex(b, upper: false)
        }))
        // XML text content (saxutils.escape, ElementTree): only & < >; CSV: " doubled.
        out.append(escapeEach(raw, where: { $0 == 0x26 || $0 == 0x3c || $0 == 0x3e }, { b in b == 0x26 ? "&amp;" : b == 0x3c ? "&lt;" : "&gt;" }))
        out.append(escapeEach(raw, where: { $0 == 0x22 }, { _ in "\"\"" }))
        // Hex with a separator per byte: Python's bytes.hex(":"), and xxd -i's "0x41, " (the masker
        // skips the space).
        for upper in [false, true] {
            out.append(Array(raw.map { hex($0, upper: upper) }.joined(separator: ":").utf8))
            out.append(Array(raw.map { "0x" + hex($0, upper: upper) }.joined(separator: ",").utf8))
        }
        // sed -n l: only the backslash doubled.
        out.append(escapeEach(raw, where: { $0 == 0x5c }, { _ in "\\\\" }))
        // A secret with non-ASCII characters: each form above again with them escaped per code point
        // (HTML's &#N; and &#xN;, JSON's ensure_ascii \uXXXX in either case) or per byte (Python
        // bytes and YAML \xHH, sed -n l's octal); tools escape the ASCII ones as above either way.
        if raw.contains(where: { $0 >= 0x80 }) {
            let styles: [(Unicode.Scalar) -> String] = [
                { "&#\($0.value);" }, { "&#x" + String($0.value, radix: 16) + ";" },
                { Self.utf16Escape($0, upper: false) }, { Self.utf16Escape($0, upper: true) },
                { String($0).utf8.map { "\\x" + hex($0, upper: false) }.joined() },
                { String($0).utf8.map { "\\x" + hex($0, upper: true) }.joined() },
                { String($0).utf8.map { "\\" + String($0, radix: 8) }.joined() },
            ]
            let asciiForms = out
            for form in asciiForms {
                let text = String(decoding: form, as: UTF8.self)
                for style in styles {
                    var t = ""
                    for u in text.unicodeScalars { if u.isASCII { t.unicodeScalars.append(u) } else { t += style(u) } }
                    out.append(Array(t.utf8))
                }
            }
        }
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

    /// \uXXXX for a scalar, as a UTF-16 surrogate pair beyond the BMP (JSON).
    static func utf16Escape(_ u: Unicode.Scalar, upper: Bool) -> String {
        String(u).utf16.map { "\\u" + hex(UInt8($0 >> 8), upper: upper) + hex(UInt8($0 & 0xff), upper: upper) }.joined()
    }

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
    static func percentEncode(_ bytes: [UInt8], keeping: String = "", upper: Bool = true, spaceAsPlus: Bool = false, encodeTilde: Bool = false) -> [UInt8] {
        let hex = upper ? hexUpper : hexLower
        let kept = Array(keeping.utf8)
        var out: [UInt8] = []
        for b in bytes {
            let unreserved = (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a)
                || b == 0x2d || b == 0x2e || b == 0x5f || (b == 0x7e && !encodeTilde) || kept.contains(b)
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
    /// Longest first, deduplicated, without whitespace.
    let patterns: [[UInt8]]
    /// Raw bytes a masker may hold back before it releases them as if the stream had paused: the
    /// longest pattern with room for the whitespace a dump puts inside it (od: one per 2 digits).
    let holdCap: Int

    /// 1 for a byte the masker compares, 0 for whitespace (space, tab, CR, LF), which it skips.
    static let kept: [UInt8] = (0..<256).map { $0 == 0x20 || $0 == 0x09 || $0 == 0x0a || $0 == 0x0d ? 0 : 1 }

    /// Builds the tables for `patterns` (deduplicated here). The filters read a pattern's first four
    /// bytes: shorter ones are left out (they would mask ordinary text anyway; MaskPatterns never
    /// makes one, and a 2-byte value once crashed the runner simulator here).
    public init(_ patterns: [[UInt8]]) {
        let patterns = Set(patterns.map(MaskPatterns.withoutWhitespace).filter { $0.count >= 4 }).sorted { $0.count != $1.count ? $0.count > $1.count : $0.lexicographicallyPrecedes($1) }
        // No secret: nothing is ever looked up (StreamMasker passes the output through), so no table
        // is built. Building one zeroes and touches about 800 KB: half a millisecond of every stage.
        guard !patterns.isEmpty else {
            (self.patterns, bucketOffsets, bucketItems, pairFilter, pairFilter2, firstByte, shift) = ([], [], [], [], [], [], [])
            (window, holdCap) = (3, 4096)
            return
        }
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
        let window = max(3, min(32, patterns.last?.count ?? 3))
        var shift = [UInt8](repeating: UInt8(window - 2), count: 1 << StreamMasker.shiftBits)
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
        self.holdCap = max(4096, 4 * (patterns.first?.count ?? 0))
    }
}

/// A streaming masker: replaces every pattern with `[MASKED]`, also when a pattern is split across
/// reads, broken into lines or spaced out (whitespace inside a pattern's occurrence is skipped:
/// `base64` wrapped at any column, `xxd -p`, `od -An -tx1`), and when the writer pauses in the
/// middle of a secret: a held prefix that must be released (idle flush, end of stream) goes out as
/// `[MASKED]` once it is `minimumLength` long, and what continues it after the pause is masked too.
///
/// Memory is bounded: it holds back at most one possible secret (the longest pattern plus the
/// whitespace inside it, at most `holdCap` bytes); past that, what it holds is released as if the
/// stream had paused.
public final class StreamMasker {
    private var table: MaskTable
    /// Raw bytes not yet decided (a possible start of a secret), whitespace included.
    private var pending: [UInt8] = []
    /// Scratch: the bytes being scanned with their whitespace removed.
    private var view: UnsafeMutablePointer<UInt8>
    private var viewCapacity: Int
    /// Scratch: for each block of `blockSize` raw bytes, how many kept bytes came before it (so a
    /// view position maps back to a raw one by walking at most one block).
    private var blockStarts: UnsafeMutablePointer<Int>
    /// Scratch: the starts in the view that the Wu-Manber filter lets through (`airlock_wm_candidates`).
    private var candidates: UnsafeMutablePointer<UInt32>
    private static let blockSize = 64
    /// A prefix of a secret that was released: what follows it (after any whitespace) is masked as
    /// long as it continues one of `candidates`, each a pattern and how much of it was seen.
    private var armed: Continuation?
    private struct Continuation {
        var candidates: [(pattern: [UInt8], offset: Int)]
        /// Characters of the secret released so far (whitespace not counted).
        var characters: Int
        /// Some of the secret already went out as `[MASKED]`: all that continues it is masked too.
        var confirmed: Bool
        /// Bytes of it (whitespace inside included) that went out in clear, fewer than `minimumLength`.
        var clear: Int
    }

    public static let replacement = Array("[MASKED]".utf8)

    /// Creates a masker; `patterns` may grow later with `add`.
    public convenience init(_ patterns: MaskPatterns) {
        self.init(MaskTable(patterns.patterns))
    }

    /// A masker over tables already built (shared between maskers of the same secrets).
    public init(_ table: MaskTable) {
        self.table = table
        viewCapacity = ChildProcess.pumpBuffer
        view = .allocate(capacity: viewCapacity)
        blockStarts = .allocate(capacity: viewCapacity / Self.blockSize + 1)
        candidates = .allocate(capacity: viewCapacity)
    }

    deinit {
        view.deallocate()
        blockStarts.deallocate()
        candidates.deallocate()
    }

    /// Adds patterns (new credentials issued while the stage runs).
    public func add(_ more: MaskPatterns) {
        table = MaskTable(table.patterns + more.patterns)
    }

    /// Whether bytes are held back waiting for more input.
    public var hasPending: Bool { !pending.isEmpty }

    /// Feeds bytes; returns what is safe to emit now.
    public func feed(_ bytes: some Collection<UInt8>) -> [UInt8] {
        if let r = bytes.withContiguousStorageIfAvailable({ buf -> [UInt8] in
            var out: [UInt8] = []
            feed(buf) { for piece in $0 { out.append(contentsOf: piece) } }
            return out
        }) {
            return r
        }
        let copy = Array(bytes)
        return feed(copy)
    }

    /// Feeds bytes; hands what is safe to emit now to `emit`, in order, as pieces valid during the
    /// call (`emit` may be called more than once). Output is handed over where it lies in `bytes`
    /// with each masked stretch between the pieces, not copied: the pump writes the pieces with
    /// one writev(2).
    public func feed(_ bytes: UnsafeBufferPointer<UInt8>, emit: ([UnsafeBufferPointer<UInt8>]) -> Void) {
        if table.patterns.isEmpty { if !bytes.isEmpty { emit([bytes]) }; return }
        // Nothing held back: scan the input where it is, and keep only an undecided tail.
        if pending.isEmpty {
            let (out, hold) = process(bytes, final: false)
            if hold < bytes.count { pending = Array(UnsafeBufferPointer(rebasing: bytes[hold...])) }
            out.emit(from: bytes, to: emit)
            return
        }
        // Holding more than one secret can take (whitespace stretches it): release it as a pause would.
        let release = pending.count > table.holdCap
        // A big read after a held tail (most reads, with many secrets: a read rarely ends where no
        // secret could begin): decide the tail with the read's first `holdCap` bytes, then scan the
        // rest where it lies instead of copying all of it behind the tail.
        let head = table.holdCap
        if !release && bytes.count > 2 * head {
            let carried = pending.count
            pending.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[..<head]))
            let raw = pending
            var decided: Int? = nil
            raw.withUnsafeBufferPointer { buf in
                let (out, hold) = process(buf, final: false)
                out.emit(from: buf, to: emit)
                if hold >= carried { decided = hold - carried } else { pending = Array(raw[hold...]) }
            }
            if let decided {
                pending = []
                feed(UnsafeBufferPointer(rebasing: bytes[decided...]), emit: emit)
                return
            }
            // What is undecided still begins in the held tail: hold the rest of the read with it.
            pending.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[head...]))
            drain(final: false, emit: emit)
            return
        }
        pending.append(contentsOf: bytes)
        drain(final: release, emit: emit)
    }

    /// Emits everything held back (end of stream, or the stream went idle); a held prefix of a
    /// secret goes out as `[MASKED]` when long enough, and its continuation stays recognised.
    public func flush() -> [UInt8] {
        var out: [UInt8] = []
        flush { for piece in $0 { out.append(contentsOf: piece) } }
        return out
    }

    /// `flush()`, handing the bytes to `emit` as `feed(_:emit:)` does.
    public func flush(emit: ([UnsafeBufferPointer<UInt8>]) -> Void) {
        drain(final: true, emit: emit)
    }

    private func drain(final: Bool, emit: ([UnsafeBufferPointer<UInt8>]) -> Void) {
        let raw = pending
        raw.withUnsafeBufferPointer { buf in
            let (out, hold) = process(buf, final: final)
            pending = hold < raw.count ? Array(raw[hold...]) : []
            out.emit(from: buf, to: emit)
        }
    }

    /// What a pass over the input produced: a prefix of the input unchanged (most output); or
    /// stretches of the input with masks between them (`kept[0]`, `masks[0]`, `kept[1]`, ...; each
    /// mask a range of `replacements`); or bytes made anew.
    private enum Emitted {
        case input(Int)
        case spliced(kept: [Range<Int>], masks: [Range<Int>], replacements: [UInt8])
        case bytes([UInt8])

        func emit(from raw: UnsafeBufferPointer<UInt8>, to emit: ([UnsafeBufferPointer<UInt8>]) -> Void) {
            switch self {
            case .input(let count): if count > 0 { emit([UnsafeBufferPointer(rebasing: raw[..<count])]) }
            case .bytes(let bytes): if !bytes.isEmpty { bytes.withUnsafeBufferPointer { emit([$0]) } }
            case .spliced(let kept, let masks, let replacements):
                replacements.withUnsafeBufferPointer { r in
                    var pieces: [UnsafeBufferPointer<UInt8>] = []
                    pieces.reserveCapacity(kept.count + masks.count)
                    for (k, range) in kept.enumerated() {
                        if !range.isEmpty { pieces.append(UnsafeBufferPointer(rebasing: raw[range])) }
                        if k < masks.count { pieces.append(UnsafeBufferPointer(rebasing: r[masks[k]])) }
                    }
                    emit(pieces)
                }
            }
        }

        func bytes(from raw: UnsafeBufferPointer<UInt8>) -> [UInt8] {
            var out: [UInt8] = []
            emit(from: raw) { for piece in $0 { out.append(contentsOf: piece) } }
            return out
        }
    }

    /// Masks `raw`; returns the output and where the undecided tail starts. With `final`, nothing is
    /// held: a partial secret at the end is released (masked from `minimumLength` on) and armed.
    private func process(_ raw: UnsafeBufferPointer<UInt8>, final: Bool) -> (Emitted, Int) {
        // A backslash at the end may continue a line (`sed -n l`): it stays held until the next byte;
        // at a pause, what comes before it is released (and armed) as if the backslash were not there.
        if let last = raw.last, last == 0x5c {
            let (out, hold) = processKnown(UnsafeBufferPointer(rebasing: raw[..<(raw.count - 1)]), final: final)
            guard final else { return (out, hold) }
            // Released at a pause, the backslash goes out as it is; what follows may continue a
            // secret with it (a JSON \u form) or without it (sed's line continuation): arm both.
            var next = armed ?? Continuation(candidates: [], characters: 0, confirmed: false, clear: 0)
            next.candidates += next.candidates.filter { $0.offset < $0.pattern.count - 1 && $0.pattern[$0.offset] == 0x5c }.map { ($0.pattern, $0.offset + 1) }
            if armed == nil { next.candidates = table.patterns.filter { $0.count > 1 && $0[0] == 0x5c }.map { ($0, 1) } }
            next.characters += 1
            next.clear += next.confirmed ? 0 : 1
            armed = next.candidates.isEmpty ? nil : next
            if case .input(raw.count - 1) = out { return (.input(raw.count), raw.count) }
            return (.bytes(out.bytes(from: raw) + [0x5c]), raw.count)
        }
        return processKnown(raw, final: final)
    }

    private func processKnown(_ raw: UnsafeBufferPointer<UInt8>, final: Bool) -> (Emitted, Int) {
        let n = raw.count
        if n == 0 { return (.input(0), 0) }
        if table.patterns.isEmpty { return (.input(n), n) }  // an empty table has no lookup structures
        // What airlock_skipped says, inlined: the mapping below asks it for every byte it walks.
        @inline(__always) func kept(_ k: Int) -> Bool {
            let b = raw[k]
            if b == 0x20 || b == 0x09 || b == 0x0a || b == 0x0d { return false }
            return !(b == 0x5c && k + 1 < n && (raw[k + 1] == 0x0a || raw[k + 1] == 0x0d))
        }
        if n > viewCapacity {
            view.deallocate()
            blockStarts.deallocate()
            candidates.deallocate()
            viewCapacity = max(n, viewCapacity * 2)
            view = .allocate(capacity: viewCapacity)
            blockStarts = .allocate(capacity: viewCapacity / Self.blockSize + 1)
            candidates = .allocate(capacity: viewCapacity)
        }
        // The view: `raw` without whitespace, so that a pattern broken into lines or spaced out is
        // contiguous in it. Branch-free: each byte is written, and the cursor moves past kept ones.
        let v = view, starts = blockStarts, blockSize = Self.blockSize
        let vn = airlock_compact_whitespace(raw.baseAddress!, n, v, starts, blockSize)
        let vbuf = UnsafeBufferPointer(start: v, count: vn)
        var ranges: [(Int, Int)] = []
        var start = 0
        var holdV = vn

        // Raw position of the k-th kept byte, counted from the start (for short distances).
        func rawIndexFromStart(_ k: Int) -> Int {
            var rk = 0, seen = -1
            while true {
                if kept(rk) { seen += 1; if seen == k { return rk } }
                rk += 1
            }
        }
        // Raw position of view[k], counted back from the end (for the tail).
        func rawIndexFromEnd(_ k: Int) -> Int {
            var rk = n, count = 0
            while count < vn - k { rk -= 1; count += kept(rk) ? 1 : 0 }
            return rk
        }

        // A released prefix: mask what continues it, hold while it still may. What goes out in clear
        // of one secret stays under `minimumLength` bytes in all, counting the whitespace inside it.
        if let arm = armed, vn > 0 {
            var best = 0
            var open: [(pattern: [UInt8], offset: Int)] = []
            for (p, offset) in arm.candidates {
                let rest = p.count - offset
                let l = Self.commonPrefix(vbuf, p, from: offset, limit: min(rest, vn))
                if l == vn && l < rest { open.append((p, offset + vn)) }
                best = max(best, l)
            }
            if !open.isEmpty && !final { return (.input(0), 0) }
            let span = best > 0 ? arm.clear + rawIndexFromStart(best - 1) + 1 : 0
            let mask = best > 0 && (arm.confirmed || Self.mattersEnough(characters: arm.characters + best, span: span))
            if mask {
                ranges.append((0, best))
                start = best
            }
            armed = open.isEmpty ? nil : Continuation(candidates: open, characters: arm.characters + vn, confirmed: mask, clear: mask ? 0 : span)
            if !open.isEmpty { start = vn }  // all of it continues the secret (released, re-armed)
        }

        if start < vn {
            let (found, hold, release) = scan(vbuf, from: start, final: final)
            ranges += found
            holdV = hold
            if let r = release {
                // The stream paused (or ended) inside what may be a secret: release it, masked if it
                // is long enough to matter, and arm its continuation.
                let prefix = UnsafeBufferPointer(rebasing: vbuf[r...])
                let candidates = table.patterns.filter { p in
                    p.count > prefix.count && p[0] == prefix[0] && Self.commonPrefix(prefix, p, from: 0, limit: prefix.count) == prefix.count
                }.map { ($0, prefix.count) }
                let span = rawIndexFromEnd(vn - 1) + 1 - rawIndexFromEnd(r)
                let mask = Self.mattersEnough(characters: prefix.count, span: span)
                if mask { ranges.append((r, vn)) }
                if !candidates.isEmpty {
                    armed = Continuation(candidates: candidates, characters: prefix.count, confirmed: mask, clear: mask ? 0 : span)
                }
                holdV = vn
            }
        }
        if ranges.isEmpty && holdV == vn { return (.input(n), n) }

        // Back to raw positions: forward for the (rare) masked ranges, backward for the held tail.
        var rawHold = n
        if holdV < vn { rawHold = rawIndexFromEnd(holdV) }
        if ranges.isEmpty { return (.input(rawHold), rawHold) }
        var between: [Range<Int>] = [], masks: [Range<Int>] = [], replacements: [UInt8] = []
        between.reserveCapacity(ranges.count + 1)
        masks.reserveCapacity(ranges.count)
        do {
            // Ranges are few: find the block by binary search, then walk within it.
            let blocks = (n + blockSize - 1) / blockSize
            func rawIndex(_ target: Int) -> Int {
                var lo = 0, hi = blocks - 1
                while lo < hi {
                    let mid = (lo + hi + 1) / 2
                    if starts[mid] <= target { lo = mid } else { hi = mid - 1 }
                }
                var rk = lo * blockSize, vk = starts[lo]
                while true {
                    if kept(rk) { if vk == target { return rk }; vk += 1 }
                    rk += 1
                }
            }
            var emitFrom = 0
            for (a, b) in ranges {
                let ra = rawIndex(a)
                let rb = rawIndex(b - 1) + 1
                between.append(emitFrom..<ra)
                let from = replacements.count
                Self.appendMasked(raw, ra, rb, into: &replacements)
                masks.append(from..<replacements.count)
                emitFrom = rb
            }
            between.append(emitFrom..<rawHold)
        }
        return (.spliced(kept: between, masks: masks, replacements: replacements), rawHold)
    }

    /// Whether a piece of a secret released at a pause goes out as `[MASKED]`: 8 characters, or 6
    /// that whitespace spreads over 8 bytes (a typed secret's "pass phr"). Two characters spread by
    /// spaces are ordinary text far more often than a secret.
    private static func mattersEnough(characters: Int, span: Int) -> Bool {
        characters >= MaskPatterns.minimumLength || (characters >= 6 && span >= MaskPatterns.minimumLength)
    }

    /// `[MASKED]` for raw[from..<to], once per line it spans: the log keeps its line count.
    private static func appendMasked(_ raw: UnsafeBufferPointer<UInt8>, _ from: Int, _ to: Int, into out: inout [UInt8]) {
        out.append(contentsOf: replacement)
        var mark = false
        for k in from..<to {
            let b = raw[k]
            if b == 0x0a || b == 0x0d { out.append(b); mark = true }
            else if mark && b != 0x20 && b != 0x09 { out.append(contentsOf: replacement); mark = false }
        }
    }

    /// How many bytes of `buf` (from its start) equal `p` from `from`, looking at most at `limit`.
    private static func commonPrefix(_ buf: UnsafeBufferPointer<UInt8>, _ p: [UInt8], from: Int, limit: Int) -> Int {
        var l = 0
        while l < limit && buf[l] == p[from + l] { l += 1 }
        return l
    }

    /// Finds whole patterns in `buf` from `from`; returns them, where the undecided tail starts, and
    /// (with `final`) where a partial pattern that must be released starts.
    private func scan(_ buf: UnsafeBufferPointer<UInt8>, from: Int, final: Bool) -> ([(Int, Int)], Int, Int?) {
        var found: [(Int, Int)] = []
        var holdFrom = buf.count
        var release: Int? = nil
        let t = table
        let patterns = t.patterns
        let firstByte = t.firstByte
        t.pairFilter.withUnsafeBufferPointer { f1 in
        t.pairFilter2.withUnsafeBufferPointer { f2 in
        t.bucketOffsets.withUnsafeBufferPointer { offsets in
        t.bucketItems.withUnsafeBufferPointer { items in
        t.shift.withUnsafeBufferPointer { sh1 in
            let n = buf.count
            var i = from
            var partialAt: Int? = nil
            // Wu-Manber, four walks at once in C: a match (or a partial one at the end) starting at
            // j needs the 3-gram ending the window [j, j+m) to occur at the right place in some
            // pattern. Each start the filter lets through is checked here, in order.
            var resume = 0
            let candidates = self.candidates
            precondition(n <= Int(UInt32.max), "the masker takes reads under 4 GiB (the filter's positions are 32-bit)")
            let count = airlock_wm_candidates(buf.baseAddress!, n, from, t.window, sh1.baseAddress!, UInt32(Self.shiftBits), candidates, &resume)
            var c = 0
            scan: while c < count {
                let j = Int(candidates[c])
                c += 1
                if j < i { continue }  // inside a match already found
                i = j
                let key = Int(buf[i]) << 8 | Int(buf[i + 1])
                if f1[key >> 6] & (1 << UInt64(key & 63)) == 0 { continue }
                let key2 = Int(buf[i + 2]) << 8 | Int(buf[i + 3])
                if f2[key2 >> 6] & (1 << UInt64(key2 & 63)) == 0 { continue }
                var matched = 0
                var partial = false
                let avail = n - i
                for b in Int(offsets[key])..<Int(offsets[key + 1]) {
                    let p = patterns[Int(items[b])]
                    if avail >= p.count {
                        // A longer pattern still partially matching wins: hold rather than mask a prefix of it.
                        if Self.equal(buf, i, p, p.count) { if !partial { matched = p.count }; break }
                    } else if Self.equal(buf, i, p, avail) {
                        partial = true
                    }
                }
                if matched > 0 {
                    found.append((i, i + matched))
                    i += matched
                    continue
                }
                if partial { partialAt = i; break scan }
            }
            if partialAt == nil { i = max(i, resume, from) }
            // The last m-1 positions cannot hold a whole pattern; find the first one that could
            // still be the start of one.
            if partialAt == nil {
                tail: while i < n {
                    let avail = n - i
                    if avail >= 2 {
                        let key = Int(buf[i]) << 8 | Int(buf[i + 1])
                        for b in Int(offsets[key])..<Int(offsets[key + 1]) where Self.equal(buf, i, patterns[Int(items[b])], avail) {
                            partialAt = i
                            break tail
                        }
                    } else if firstByte[Int(buf[i])] {
                        partialAt = i
                        break tail
                    }
                    i += 1
                }
            }
            if let p = partialAt {
                if final { release = p } else { holdFrom = p }
            }
        }}}}}
        return (found, holdFrom, release)
    }

    /// The shift table has 2^18 entries (256 KiB, within L2): 100 secrets' forms put some 30,000
    /// 3-grams in it, which left a third of a 2^16 table without a full shift.
    static let shiftBits = 18

    @inline(__always)
    static func hash3(_ a: UInt8, _ b: UInt8, _ c: UInt8) -> Int {
        Int(truncatingIfNeeded: ((UInt32(a) << 16 | UInt32(b) << 8 | UInt32(c)) &* 0x9E37_79B1) >> UInt32(32 - shiftBits))
    }

    @inline(__always)
    private static func equal(_ buf: UnsafeBufferPointer<UInt8>, _ at: Int, _ p: [UInt8], _ len: Int) -> Bool {
        p.withUnsafeBufferPointer { pb in
            memcmp(buf.baseAddress! + at, pb.baseAddress!, len) == 0
        }
    }
}
