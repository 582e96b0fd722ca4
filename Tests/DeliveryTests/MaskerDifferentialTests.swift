import CSupport
import Delivery
import Foundation
import Testing

/// The masker's fast paths (the Wu-Manber filter in C, AVX-512 or SSSE3 compaction, scanning a
/// read in place after a held tail, output handed over without copying) against a plain reference
/// written here from the masker's contract: skip whitespace and line-continuing backslashes, mask
/// the leftmost occurrence of any pattern, the longest one where several start at the same place,
/// and put one `[MASKED]` per line the occurrence spans. Random secrets, random text with their
/// forms spaced out and broken into lines, random read sizes; the same seed gives the same case.
struct MaskerDifferentialTests {
    /// SplitMix64: reproducible without Foundation's generator.
    struct Random {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
        mutating func pick<T>(_ a: [T]) -> T { a[below(a.count)] }
    }

    static func skipped(_ raw: [UInt8], _ k: Int) -> Bool {
        let b = raw[k]
        if b == 0x20 || b == 0x09 || b == 0x0a || b == 0x0d { return true }
        return b == 0x5c && k + 1 < raw.count && (raw[k + 1] == 0x0a || raw[k + 1] == 0x0d)
    }

    /// The reference: the whole text at once, no pause.
    static func reference(_ raw: [UInt8], _ patterns: [[UInt8]]) -> [UInt8] {
        var view: [UInt8] = [], at: [Int] = []
        for k in raw.indices where !skipped(raw, k) { view.append(raw[k]); at.append(k) }
        var byStart: [Int: [[UInt8]]] = [:]
        for p in patterns { byStart[Int(p[0]) << 8 | Int(p[1]), default: []].append(p) }
        var out: [UInt8] = [], emitted = 0, i = 0
        while i < view.count {
            var best = 0
            let key = i + 1 < view.count ? Int(view[i]) << 8 | Int(view[i + 1]) : -1
            for p in byStart[key] ?? [] where p.count > best && i + p.count <= view.count && view[i..<(i + p.count)].elementsEqual(p) { best = p.count }
            guard best > 0 else { i += 1; continue }
            let from = at[i], to = at[i + best - 1] + 1
            out += raw[emitted..<from]
            out += StreamMasker.replacement
            var mark = false
            for b in raw[from..<to] {
                if b == 0x0a || b == 0x0d { out.append(b); mark = true }
                else if mark && b != 0x20 && b != 0x09 { out += StreamMasker.replacement; mark = false }
            }
            emitted = to
            i += best
        }
        return out + raw[emitted...]
    }

    /// Text of ordinary words, short runs of whitespace, line-continuing backslashes and forms of
    /// the secrets (some with whitespace inside), ending in a line no pattern can begin.
    static func text(_ rng: inout Random, patterns: [[UInt8]], bytes: Int) -> [UInt8] {
        let words = ["compiling", "ok", "warning:", "0.12s", "[build]", "src/main.swift:42", "a", "Zz", "\\", "%2F", "&#", "0x", "+/"].map { Array($0.utf8) }
        let spaces: [[UInt8]] = [[0x20], [0x0a], [0x09], [0x0d, 0x0a], [0x5c, 0x0a], [0x20, 0x20], [0x20, 0x20, 0x20]]
        var out: [UInt8] = []
        while out.count < bytes {
            switch rng.below(10) {
            case 0...5: out += rng.pick(words)
            case 6, 7: out += rng.pick(spaces)
            case 8:
                // A pattern, or a piece of one (held, then let go), with whitespace inside now and then.
                let p = rng.pick(patterns)
                let piece = rng.below(4) == 0 ? Array(p[..<max(1, rng.below(p.count))]) : p
                for b in piece {
                    out.append(b)
                    if rng.below(12) == 0 { out += rng.pick(spaces) }
                }
            default: out += [UInt8(0x21 + rng.below(94))]
            }
        }
        return out + Array("\n.\n".utf8)
    }

    static func secrets(_ rng: inout Random, count: Int) -> [String] {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
        return (0..<count).map { _ in
            String(decoding: (0..<(8 + rng.below(60))).map { _ in rng.pick(alphabet) }, as: UTF8.self)
        }
    }

    @Test(arguments: [1, 2, 3, 4, 5, 6, 7, 8])
    func theMaskerAgreesWithTheReference(seed: UInt64) {
        var rng = Random(state: seed)
        let secrets = Self.secrets(&rng, count: [1, 10, 100][Int(seed % 3)])
        let patterns = MaskPatterns(secrets: secrets).patterns
        let raw = Self.text(&rng, patterns: patterns, bytes: 150_000 + rng.below(150_000))
        let expected = Self.reference(raw, patterns)
        #expect(expected != raw, "the text holds secrets to mask")
        // Reads of one size, of random sizes (small ones hold tails, big ones scan in place).
        let plans: [(String, (inout Random) -> Int)] = [
            ("one read", { _ in raw.count }),
            ("64 KiB reads", { _ in 65536 }),
            ("random reads up to 100 KB", { $0.below(100_000) + 1 }),
            ("random reads up to 50 bytes", { $0.below(50) + 1 }),
        ]
        for (name, size) in plans {
            let masker = StreamMasker(MaskPatterns(secrets: secrets))
            var out: [UInt8] = [], i = 0
            while i < raw.count {
                let n = min(raw.count - i, size(&rng))
                raw[i..<(i + n)].withUnsafeBufferPointer { buf in masker.feed(buf) { for piece in $0 { out += piece } } }
                i += n
            }
            masker.flush { for piece in $0 { out += piece } }
            let same = out == expected
            #expect(same, "\(name), seed \(seed): output differs from the reference at byte \(zip(out, expected).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? min(out.count, expected.count))")
        }
    }

    /// Every compaction this CPU can run gives the same view and block starts as the scalar one.
    @Test func everyCompactionGivesTheSameView() {
        var rng = Random(state: 99)
        let alphabet = Array("ab \t\n\r\\\\xyz0+/".utf8)
        let best = airlock_compact_whitespace_best()
        // What the CPU has is what runs: a CPU with VBMI2 (this build machine) compares all three.
        let flags = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let expected: Int32 = flags.contains(" avx512_vbmi2") && flags.contains(" avx512bw") ? 2 : flags.contains(" ssse3") ? 1 : 0
        #if arch(x86_64)
        #expect(best == expected, "the CPU's flags name implementation \(expected)")
        #endif
        for round in 0..<300 {
            let n = round < 200 ? round : rng.below(5000)
            let input = (0..<n).map { _ in rng.pick(alphabet) }
            var results: [[Int]] = []
            for impl in 0...best {
                var out = [UInt8](repeating: 0, count: max(n, 1))
                var starts = [Int](repeating: -1, count: n / 64 + 2)
                let vn = input.withUnsafeBufferPointer { i in
                    out.withUnsafeMutableBufferPointer { o in
                        starts.withUnsafeMutableBufferPointer { s in
                            airlock_compact_whitespace_using(Int32(impl), i.baseAddress, n, o.baseAddress, s.baseAddress, 64)
                        }
                    }
                }
                results.append(out[..<vn].map(Int.init) + [-2] + starts)
            }
            let expected = input.indices.filter { !Self.skipped(input, $0) }.map { Int(input[$0]) }
            #expect(results[0].prefix(expected.count + 1).elementsEqual(expected + [-2]), "scalar compaction of \(n) bytes")
            for impl in 1..<results.count {
                let same = results[impl] == results[0]
                #expect(same, "implementation \(impl) differs from the scalar one on \(n) bytes: \(String(decoding: input, as: UTF8.self).debugDescription)")
            }
        }
    }
}
