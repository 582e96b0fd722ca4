package import AirlockConfiguration
import CSupport
import Delivery
import Foundation
import Ledger
package import RunnerContract
#if canImport(Glibc)
import Glibc
#endif

/// nftables rules on the job uid range, in Airlock's own table `inet airlock`:
/// - jobs cannot reach the host's cloud metadata services (the host's own cloud identity);
/// - a job's credential endpoint port accepts connections from that job's uid alone.
///
/// Installed idempotently by prepare (one set of rules per uid range, found by its comment), checked
/// by `airlock check`. Everything else about the network is the host's, as with the shell executor.
package enum NetworkGuard {
    package static let table = "airlock"
    /// AWS, GCP, Azure and OCI instance metadata; ECS task credentials; EKS Pod Identity; Tencent
    /// Cloud; Alibaba Cloud. Not all of 169.254.0.0/16: AWS's DNS (169.254.169.253) and NTP
    /// (169.254.169.123) live there and jobs need them.
    package static let metadataIPv4 = ["169.254.169.254", "169.254.170.2", "169.254.170.23", "169.254.0.23", "100.100.100.200"]
    /// IPv6: AWS instance metadata, EKS Pod Identity, GCE, OCI.
    package static let metadataIPv6 = ["fd00:ec2::254", "fd00:ec2::23", "fd20:ce::254", "fd00:c1::a9fe:a9fe"]

    package static func marker(_ runner: RunnerSettings) -> String {
        "airlock uids \(runner.jobUIDs.lowerBound)-\(runner.jobUIDs.upperBound)"
    }

    /// The rules for one uid range, each tagged with the range's marker.
    package static func rules(_ runner: RunnerSettings) -> [String] {
        let uids = "\(runner.jobUIDs.lowerBound)-\(runner.jobUIDs.upperBound)"
        let m = marker(runner)
        return [
            "meta skuid \(uids) ip daddr { \(metadataIPv4.joined(separator: ", ")) } reject comment \"\(m): metadata\"",
            "meta skuid \(uids) ip6 daddr { \(metadataIPv6.joined(separator: ", ")) } reject comment \"\(m): metadata6\"",
            "meta skuid \(uids) tcp dport @endpoint_ports tcp dport . meta skuid != @endpoint_owner reject with tcp reset comment \"\(m): endpoint\"",
        ]
    }

    package static let skeleton = """
    table inet airlock {
      set endpoint_ports { type inet_service; }
      set endpoint_owner { type inet_service . uid; }
      set ranges { type uid . uid; }
      chain output { type filter hook output priority 0; policy accept; }
    }
    """

    /// The element of set `ranges` that says this range's rules are in: added in the same nft
    /// transaction as the rules, so it exists exactly when they were installed (and both go when
    /// the table is deleted or the ruleset flushed).
    package static func rangeElement(_ runner: RunnerSettings) -> String { "\(runner.jobUIDs.lowerBound) . \(runner.jobUIDs.upperBound)" }

    /// Makes sure the rules for this range are in place. Listing a set costs nft about 4 ms, listing
    /// the chain 15 ms (it parses the whole ruleset), so every prepare checks the set; `airlock check`
    /// reads the rules themselves (`verify`). Cheaper still, when nothing in the ruleset has changed
    /// since this state_dir last saw the set hold this range (the kernel's ruleset generation, read
    /// over netlink in microseconds, is what it was then, in the same boot and network namespace),
    /// the rules are still there: any change to any table, a flush or a deleted rule included, moves
    /// the generation on.
    /// - Throws: `AirlockFailure` (system) when nft is missing or refuses.
    package static func install(_ runner: RunnerSettings) throws(AirlockFailure) {
        // Read before the check: a change after this read, even during the check, leaves the stamp behind.
        let stamp = generationStamp(runner)
        let stampFile = "\(runner.stateDir)/\(verifiedFile)"
        if let stamp, FileContents.read(stampFile) == Array(stamp.utf8) { return }
        if noteIfInPlace(runner, stamp: stamp, file: stampFile) { return }
        try withLock(runner) { () throws(AirlockFailure) in
            try nft(runner, ["-f", "-"], input: skeleton)
            let listing = try nft(runner, ["list", "chain", "inet", table, "output"])
            var script = missing(runner, in: listing).map { "add rule inet \(table) output \($0)" }
            script.append("add element inet \(table) ranges { \(rangeElement(runner)) }")
            try nft(runner, ["-f", "-"], input: script.joined(separator: "\n") + "\n")
        }
        // Installing moved the generation on: seen in place again, at a generation read first.
        _ = noteIfInPlace(runner, stamp: generationStamp(runner), file: stampFile)
    }

    /// Whether the set holds this range (so its rules are in, see `rangeElement`); if so, notes
    /// `stamp`, read before this looked.
    private static func noteIfInPlace(_ runner: RunnerSettings, stamp: String?, file: String) -> Bool {
        guard let set = try? nft(runner, ["list", "set", "inet", table, "ranges"]), set.contains(rangeElement(runner)) else { return false }
        if let stamp { try? Files.writeAtomically(Data(stamp.utf8), to: file, durable: false) }
        return true
    }

    /// Where prepare notes the ruleset generation at which it last saw this range's rules in place.
    package static let verifiedFile = "nft-verified"

    /// This boot, this network namespace, the ruleset's generation and this range: equal stamps mean
    /// an unchanged ruleset. Nil when they cannot be read (then every prepare asks nft).
    static func generationStamp(_ runner: RunnerSettings) -> String? {
        var generation: UInt32 = 0
        var netns: UInt64 = 0
        guard airlock_nft_generation(&generation, &netns) == 0,
              let boot = FileContents.read("/proc/sys/kernel/random/boot_id").map({ String(decoding: $0, as: UTF8.self) }) else { return nil }
        // A UUID and a newline; trimmingCharacters (NSString) cost every prepare a third of a ms.
        return "boot \(boot.filter { !$0.isWhitespace }) netns \(netns) generation \(generation) \(marker(runner))\n"
    }

    /// What `airlock check` reports: empty when every rule is in place.
    package static func verify(_ runner: RunnerSettings) -> [String] {
        do {
            let listing = try nft(runner, ["list", "chain", "inet", table, "output"])
            return missing(runner, in: listing).map { "nftables rule missing from table inet \(table): \($0)" }
        } catch {
            return ["nftables table inet \(table) is not installed (prepare installs it on the first job): \(error)"]
        }
    }

    package static func missing(_ runner: RunnerSettings, in listing: String) -> [String] {
        rules(runner).filter { rule in
            let comment = rule.components(separatedBy: "comment ").last ?? rule
            return !listing.contains(comment)
        }
    }

    /// Lets only `uid` (of the job range) connect to `port` on this host.
    package static func allowEndpoint(_ runner: RunnerSettings, port: Int, uid: UInt32) throws(AirlockFailure) {
        try nft(runner, ["-f", "-"], input: """
        add element inet \(table) endpoint_owner { \(port) . \(uid) }
        add element inet \(table) endpoint_ports { \(port) }

        """)
    }

    /// Removes a job's endpoint rule (cleanup, sweep); absent elements are fine.
    package static func removeEndpoint(_ runner: RunnerSettings, port: Int, uid: UInt32) {
        _ = try? nft(runner, ["delete", "element", "inet", table, "endpoint_ports", "{ \(port) }"])
        _ = try? nft(runner, ["delete", "element", "inet", table, "endpoint_owner", "{ \(port) . \(uid) }"])
    }

    /// Runs nft (posix_spawn: Foundation's Process costs several ms more). `input` goes through a
    /// root-only temp file in state_dir, read with `nft -f FILE`.
    @discardableResult
    package static func nft(_ runner: RunnerSettings, _ args: [String], input: String? = nil) throws(AirlockFailure) -> String {
        var argv = [executable(runner.nft)] + args
        var inputFile: String?
        if let input {
            let f = "\(runner.stateDir)/.nft-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).nft"
            try Files.makeDirectories(runner.stateDir, mode: 0o700)
            try Files.writeAtomically(Data(input.utf8), to: f, durable: false)
            inputFile = f
            argv = argv.map { $0 == "-" ? f : $0 }
        }
        defer { if let inputFile { unlink(inputFile) } }
        let child: ChildProcess
        do {
            child = try ChildProcess(argv: argv, environment: ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"], directory: nil)
        } catch {
            throw AirlockFailure(.system, "cannot run \(runner.nft): \(error); `apt-get install nftables`, or set [runner] nft to its path")
        }
        child.startReaper {}
        let errText = ChildProcess.Drain(child.stderrFD)
        let out = ChildProcess.readAll(child.stdoutFD)
        let code = child.wait()
        let err = errText.finish()
        guard code == 0 else {
            let msg = String(decoding: err, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            throw AirlockFailure(.system, "nft \(args.prefix(2).joined(separator: " ")) failed: \(msg.prefix(300))")
        }
        return String(decoding: out, as: UTF8.self)
    }

    package static func executable(_ name: String) -> String {
        if name.hasPrefix("/") { return name }
        for dir in ["/usr/sbin", "/sbin", "/usr/bin", "/bin", "/usr/local/sbin"] where FileManager.default.isExecutableFile(atPath: "\(dir)/\(name)") {
            return "\(dir)/\(name)"
        }
        return "/usr/sbin/\(name)"
    }

    private static func withLock(_ runner: RunnerSettings, _ body: () throws(AirlockFailure) -> Void) throws(AirlockFailure) {
        // One lock for the whole host: several configs (uid ranges) share the table.
        let path = FileManager.default.fileExists(atPath: "/run/lock") ? "/run/lock/airlock-nft.lock" : "\(runner.stateDir)/nft.lock"
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw AirlockFailure(.system, "cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        while flock(fd, LOCK_EX) != 0 && errno == EINTR {}
        try body()
    }
}
