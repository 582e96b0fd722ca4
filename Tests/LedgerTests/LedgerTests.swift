import Federation
import Foundation
import Identity
import Ledger
import RunnerContract
import Synchronization
import Testing

/// A scratch state directory, removed when the test ends.
final class Scratch {
    let dir: String
    init() throws {
        dir = NSTemporaryDirectory() + "airlock-ledger-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: dir) }
}

func credential(_ profile: String, provider: String = "stub", secret: String = "secret-value-\(UUID().uuidString)", expiresIn: Double = 900) -> IssuedCredential {
    IssuedCredential(profile: profile, provider: provider, providerType: "stub", secrets: ["token": secret], details: ["role": "r-\(profile)"],
                     expiresAt: Date().addingTimeInterval(expiresIn), revocationHandle: "h", delivery: DeliveryContract(), summary: "stub")
}

/// A provider whose revocation answers what the test says, counting calls.
final class StubProvider: CredentialProvider {
    let name: String
    let answer: @Sendable (IssuedCredential) throws -> RevokeOutcome
    init(name: String, answer: @escaping @Sendable (IssuedCredential) throws -> RevokeOutcome) {
        self.name = name
        self.answer = answer
    }
    let calls = Mutex<[String]>([])
    func issue(_ request: IssueRequest) async throws -> IssuedCredential { credential(request.profile) }
    func revoke(_ c: IssuedCredential, now: Date) async throws -> RevokeOutcome {
        calls.withLock { $0.append(c.profile) }
        return try answer(c)
    }
}

func mode(_ path: String) -> Int {
    ((try? FileManager.default.attributesOfItem(atPath: path)[.posixPermissions]) as? Int) ?? -1
}

struct JobLedgerTests {
    @Test func entriesAreRecordedSettledAndReadBackByAnotherInstance() throws {
        let s = try Scratch()
        let ledger = JobLedger(stateDirectory: s.dir)
        #expect(try ledger.entries().isEmpty)
        let a = credential("a"), b = credential("b")
        try ledger.record(a, at: Date())
        try ledger.record(b, at: Date())
        try ledger.settle(a.id, state: .settled, outcome: "revoked")
        let again = try JobLedger(stateDirectory: s.dir).entries()
        #expect(again.map(\.credential.profile) == ["a", "b"])
        #expect(again.map(\.state) == [.settled, .issued] && again[0].outcome == "revoked")
        let same = again[1].credential.id == b.id && again[1].credential.secrets == b.secrets && again[1].credential.details == b.details
            && abs(again[1].credential.expiresAt.timeIntervalSince(b.expiresAt)) < 0.001
        #expect(same)
        #expect(mode(ledger.path) == 0o600)
    }

    @Test func anUnreadableLedgerIsTheSystemsFailureAndSaysWhatToDo() throws {
        let s = try Scratch()
        let ledger = JobLedger(stateDirectory: s.dir)
        try Data("{not json".utf8).write(to: URL(fileURLWithPath: ledger.path))
        do {
            _ = try ledger.entries()
            Issue.record("a corrupt ledger was read")
        } catch {
            #expect(error.fault == .system && error.message.contains("unreadable") && error.message.contains("audit log"))
        }
    }

    /// A ledger written before the delivery contract (an upgrade while a job runs) still loads, so
    /// cleanup and sweep can revoke what it holds; it is marked, so the run stage refuses to deliver it.
    @Test func aLedgerFromBeforeTheDeliveryContractStillLoads() throws {
        let s = try Scratch()
        let old = """
        [{"credential":{"details":{"role_arn":"arn:aws:iam::123456789012:role/ci"},"expiresAt":1900000000,"id":"c1","profile":"deploy",
          "provider":"aws","providerType":"aws","secrets":{"AccessKeyId":"ASIAOLDLEDGER0000001"}},"issuedAt":1800000000,"state":"issued"}]
        """
        try Data(old.utf8).write(to: URL(fileURLWithPath: JobLedger(stateDirectory: s.dir).path))
        let e = try JobLedger(stateDirectory: s.dir).entries()
        #expect(e.count == 1 && e[0].credential.delivery.fromOlderLedger && e[0].credential.delivery.secrets.isEmpty && e[0].credential.summary == "aws")
    }
}

struct JobStateStoreTests {
    @Test func eachJobHasItsOwnPrivateDirectoryAndRemovalIsIdempotent() throws {
        let s = try Scratch()
        let store = JobStateStore(root: s.dir + "/state")
        let dir = try store.create(jobID: "42")
        #expect(dir == "\(s.dir)/state/jobs/42" && dir == JobStateStore.directory(stateDir: s.dir + "/state", jobID: "42"))
        #expect(mode(s.dir + "/state") == 0o700 && mode(s.dir + "/state/jobs") == 0o700 && mode(dir) == 0o700)
        try FileManager.default.createDirectory(atPath: s.dir + "/state/jobs/not-a-job", withIntermediateDirectories: true)
        try store.create(jobID: "7")
        #expect(store.jobIDs() == ["42", "7"])
        try store.remove(jobID: "42")
        try store.remove(jobID: "42")
        #expect(store.jobIDs() == ["7"])
    }
}

struct AuditLogTests {
    /// Concurrent writers (jobs on one host) never interleave: every line is one whole record.
    @Test func concurrentAppendsStayWholeLines() async throws {
        let s = try Scratch()
        let log = AuditLog(path: s.dir + "/log/audit.jsonl")
        await withTaskGroup(of: Void.self) { g in
            for i in 0..<200 {
                g.addTask { try? log.append(PrepareFailedRecord(subject: ["n": .int(i)], detail: String(repeating: "x", count: 3000))) }
            }
        }
        let lines = try String(contentsOfFile: log.path, encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 200)
        #expect(log.records().count == 200)
        #expect(Set(log.records().compactMap { if case .int(let n) = $0["n"] { n } else { nil } }).count == 200)
        #expect(mode(log.path) == 0o640)
    }

    @Test func aRecordWithAFingerprintNamesTheKeyThatMadeIt() throws {
        let s = try Scratch()
        let log = AuditLog(path: s.dir + "/audit.jsonl")
        let c = credential("deploy")
        try log.append(IssuedRecord(subject: ["job_id": .string("42")], credential: c, duration: 0.25))
        try log.append(DecisionRecord(subject: ["job_id": .string("42")], decision: .noGrant, rules: [], profiles: []))
        let r = log.records()
        #expect(r[0]["fingerprint_key"] != nil && r[0]["event"] == .string("issued") && r[0]["time"] != nil)
        #expect(r[0]["fingerprint"] == .string(c.fingerprint) && r[0]["duration_ms"] == .string("250") && r[0]["role"] == .string("r-deploy"))
        #expect(r[0]["profile"] == .string("deploy") && r[0]["provider_type"] == .string("stub") && r[0]["credential_id"] == .string(c.id))
        #expect(r[1]["fingerprint_key"] == nil && r[1]["decision"] == .string("no_grant") && r[1]["profiles"] == .array([]))
        #expect(r[1]["reason"] == nil && r[1]["token_fingerprint"] == nil)
        let leaked = (try String(contentsOfFile: log.path, encoding: .utf8)).contains(c.secrets["token"]!)
        #expect(!leaked)
    }
}

struct RevokerTests {
    /// Every outcome is audited with what it means, every entry settled; a provider that cannot be
    /// reached leaves its entry for the next try; a second pass revokes nothing again; no secret
    /// reaches the audit log or the runner's log lines.
    @Test func everyOutcomeIsAuditedAndAnotherPassIsANoOp() async throws {
        let s = try Scratch()
        let ledger = JobLedger(stateDirectory: s.dir)
        let audit = AuditLog(path: s.dir + "/audit.jsonl")
        let expiry = Date().addingTimeInterval(600)
        let creds = [credential("gone"), credential("expires"), credential("partly"), credential("down"), credential("orphan", provider: "removed")]
        for c in creds { try ledger.record(c, at: Date()) }
        let down = Mutex(true)
        let stub = StubProvider(name: "stub") { c in
            switch c.profile {
            case "gone": return .revoked
            case "expires": return .notRevocable(expiresAt: expiry)
            case "partly": return .partlyRevoked(revoked: "leases", remains: "the batch login token", expiresAt: expiry)
            default:
                if down.withLock({ $0 }) { throw FederationError(fault: .system, profile: c.profile, provider: "stub", code: "ConnectionFailed", message: "cannot reach it", transient: true) }
                return .alreadyGone
            }
        }
        let (failed, lines) = await Revoker.revokeAll(audit: audit, ledger: ledger, providers: ["stub": stub], identity: ["job_id": .string("42")],
                                                      reason: "cleanup", now: Date())
        #expect(failed == 2)  // the provider that is down, the one no longer configured
        let states = Dictionary(uniqueKeysWithValues: try ledger.entries().map { ($0.credential.profile, $0.state) })
        #expect(states == ["gone": .settled, "expires": .settled, "partly": .settled, "down": .revokeFailed, "orphan": .revokeFailed])
        let records = audit.records()
        func outcome(_ p: String) -> String? { records.last { $0["profile"] == .string(p) }?["outcome"]?.stringValue }
        #expect(outcome("gone") == "revoked" && outcome("expires") == "expires_at" && outcome("partly") == "partly_revoked")
        #expect(outcome("down") == "failed" && outcome("orphan") == "provider_missing")
        let partly = try #require(records.last { $0["profile"] == .string("partly") })
        #expect(partly["revoked_part"] == .string("leases") && partly["remains"] == .string("the batch login token") && partly["expires_at"] != nil)
        #expect(records.allSatisfy { $0["job_id"] == .string("42") && $0["reason"] == .string("cleanup") && $0["fingerprint"] != nil })
        let text = try String(contentsOfFile: audit.path, encoding: .utf8) + lines.joined(separator: "\n")
        let leaked = creds.contains { text.contains($0.secrets["token"]!) }
        #expect(!leaked)
        // The provider is back: the next pass (sweep) revokes only what is left, once.
        down.withLock { $0 = false }
        let before = stub.calls.withLock { $0 }
        let (failedAgain, _) = await Revoker.revokeAll(audit: audit, ledger: ledger, providers: ["stub": stub], identity: [:], reason: "sweep", now: Date())
        #expect(failedAgain == 1)  // the orphan's provider is still missing
        #expect(stub.calls.withLock { $0 }.dropFirst(before.count) == ["down"])
        let (_, _) = await Revoker.revokeAll(audit: audit, ledger: ledger, providers: ["stub": stub, "removed": stub], identity: [:], reason: "sweep", now: Date())
        #expect(try ledger.entries().allSatisfy { $0.state == .settled })
        #expect(stub.calls.withLock { $0 }.filter { $0 == "gone" }.count == 1)
    }
}
