import Crypto
import Foundation
import Identity
import Testing

/// Issue 13: fingerprints are keyed (HMAC-SHA256, per-host key in state_dir, 128 bits shown), so a
/// log cannot be used to test guesses of a secret offline.
struct FingerprintTests {
    /// RFC 4231 test case 1: key 0x0b × 20, data "Hi There".
    @Test func isHMACSHA256TruncatedTo128Bits() {
        let key = Fingerprint.Key(bytes: Array(repeating: 0x0b, count: 20))
        #expect(Fingerprint.of("Hi There", key: key) == "hmac:b0344c61d8db38535ca8afceaf0bf12b")
    }

    /// A guess of a low-entropy secret cannot be checked against a fingerprint without the key: the
    /// fingerprint is neither the plain hash's prefix nor the same under another key.
    @Test func aGuessCannotBeTestedWithoutTheKey() {
        let guess = "Summer2026!"
        let a = Fingerprint.Key(bytes: (0..<32).map { UInt8($0) }), b = Fingerprint.Key(bytes: (0..<32).map { UInt8(255 - $0) })
        let plain = SHA256.hash(data: Data(guess.utf8)).prefix(16).map { String(format: "%02x", $0) }.joined()
        #expect(Fingerprint.of(guess, key: a) != "hmac:" + plain)
        #expect(Fingerprint.of(guess, key: a) != Fingerprint.of(guess, key: b))
        #expect(Fingerprint.of(guess, key: a) == Fingerprint.of(guess, key: a))
        #expect(a.id != b.id && a.id.count == 9 && a.id.hasPrefix("k"))
        // "k" and the first four bytes of SHA-256 over the key, in lowercase hex (SHA-256 of 32 zero bytes: 66687aad...).
        #expect(Fingerprint.Key(bytes: Array(repeating: 0, count: 32)).id == "k66687aad")
        #expect(Fingerprint.of(guess, key: a).count == "hmac:".count + 32)
    }

    /// The host key is made once (32 bytes, 0600) and every process after that reads the same one,
    /// also when many first jobs race to make it.
    @Test func theHostKeyIsMadeOnceAndShared() throws {
        let dir = "/var/tmp/airlock-fp-\(UUID().uuidString.prefix(8))/state"
        defer { try? FileManager.default.removeItem(atPath: (dir as NSString).deletingLastPathComponent) }
        final class Box: @unchecked Sendable { var ids: [String] = []; let lock = NSLock() }
        let box = Box()
        DispatchQueue.concurrentPerform(iterations: 8) { _ in
            if let k = try? Fingerprint.hostKey(directory: dir) { box.lock.withLock { box.ids.append(k.id) } }
        }
        #expect(box.ids.count == 8 && Set(box.ids).count == 1, "\(box.ids)")
        let path = "\(dir)/\(Fingerprint.keyFile)"
        let attrs = try FileManager.default.attributesOfItem(atPath: path)
        #expect((attrs[.posixPermissions] as? Int) == 0o600 && (attrs[.size] as? Int) == 32)
        #expect(try Fingerprint.hostKey(directory: dir).id == box.ids.first)
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []) == [Fingerprint.keyFile])
    }

    @Test func aDamagedKeyFileIsAnErrorNamingIt() throws {
        let dir = "/var/tmp/airlock-fp-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: "\(dir)/\(Fingerprint.keyFile)", contents: Data("short".utf8))
        #expect {
            _ = try Fingerprint.hostKey(directory: dir)
        } throws: { e in
            "\(e)".contains("\(dir)/fingerprint.key holds 5 bytes, not a 32-byte key; remove it")
        }
    }
}
