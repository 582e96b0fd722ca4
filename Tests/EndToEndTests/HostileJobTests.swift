import AirlockTesting
import Foundation
import Testing

/// A hostile job beside a normal one (issue 11; threat-model.md). Each row of the table is one attack,
/// run as a job through the runner simulator (as root, like a runner) while a victim job of another
/// project is running on the same runner with live AWS credentials (env and credential endpoint), a
/// checkout, a cache and a HOME. Every attack must fail, and the victim must still check out, build,
/// write its directories, reach the network and be revoked at cleanup.
///
/// Markers are computed in the job (`ATTACK[name]=blocked` is printed by a shell function from the
/// probe's outcome; the echoed command line never contains it), so a probe that did not run fails the test.
@Suite(.serialized)
struct HostileJobTests {
    static let audience = "https://airlock.hostile"
    static let victimProject = 42
    static let attackerProject = 666

    /// What every attacker script starts with: `probe NAME 'COMMAND'` prints `ATTACK[NAME]=blocked`
    /// when the command printed nothing (it failed or found nothing), else `=LEAKED:` and a prefix.
    static let probe = #"probe() { local out; out=$(eval "$2" 2>/dev/null || true); if [ -n "$out" ]; then echo "ATTACK[$1]=LEA""KED:$(printf %s "$out" | head -c 60 | tr -dc 'A-Za-z0-9 _.:-')"; else echo "ATTACK[$1]=block""ed"; fi; }"#

    struct Attack: Sendable, CustomTestStringConvertible {
        var name: String
        /// Needs a victim job running while it attacks.
        var victim = true
        var script: [String]
        var configure: @Sendable (inout SimulatedJob, Arena) -> Void = { _, _ in }
        /// Further checks; the default checks `ATTACK[name]=blocked` for every probe named in the script.
        var check: @Sendable (SimulationResult, Arena) -> Void = { _, _ in }
        var expectSuccess = true
        var testDescription: String { name }
    }

    /// One runner: a world with moto as STS, a victim job (project 42) and an attacker (project 666).
    final class Arena: @unchecked Sendable {
        let world: TestWorld
        let issuer: TestIssuer
        let moto: MotoServer
        /// The session keyring the "runner" (this test process) holds while the jobs run.
        let runnerKeyring: Int?
        let keyFile: String
        let runnerConfig: String
        /// A team's policy file (issue 18), readable by others as team files usually are: hidden all the same.
        let teamPolicy: String
        var victim: SimulatedJob
        var victimResult: SimulationResult?
        private var victimThread: Thread?
        private let done = DispatchSemaphore(value: 0)

        init() throws {
            issuer = try TestIssuer()
            // One moto per case: moto dies with the thread that started it (setpriv --pdeathsig is
            // per thread), so a suite-wide one vanished when its first test's thread ended.
            moto = try MotoServer()
            runnerKeyring = TestWorld.joinSessionKeyring()
            let base = "/var/tmp/airlock-hostile-\(UUID().uuidString.prefix(8))"
            // A careless operator: the OAuth key and a copy of the runner's config readable by others.
            // The sandbox must hide them anyway.
            keyFile = "\(base)-keys/client.pem"
            runnerConfig = "\(base)-gitlab-runner/config.toml"
            for f in [keyFile, runnerConfig] {
                try FileManager.default.createDirectory(atPath: (f as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            }
            _ = TestWorld.launch("/usr/bin/openssl", ["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", keyFile], environment: nil)
            chmod(keyFile, 0o644)
            // Airlock's own issuer key (issue 17): 0600 as the configuration demands, hidden all the same.
            let issuerKey = "\(base)-keys/issuer.pem"
            _ = TestWorld.launch("/usr/bin/openssl", ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", issuerKey], environment: nil)
            chmod(issuerKey, 0o600)
            FileManager.default.createFile(atPath: runnerConfig, contents: Data("[[runners]]\ntoken = \"glrt-runner-secret-token\"\n".utf8),
                                           attributes: [.posixPermissions: 0o644])
            teamPolicy = "\(base)-policy/victims.toml"
            try FileManager.default.createDirectory(atPath: (teamPolicy as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            FileManager.default.createFile(atPath: teamPolicy, contents: Data("""
            team = "victims"

            [[rules]]
            name = "the victims' own rule"
            project_id = \(HostileJobTests.victimProject)
            grant = ["victim-env"]
            """.utf8), attributes: [.posixPermissions: 0o644])
            world = try TestWorld(runnerExtra: "hide = [\"\((runnerConfig as NSString).deletingLastPathComponent)\"]", extra: """
            [gitlab]
            issuer = "\(issuer.issuer)"
            audience = "\(HostileJobTests.audience)"

            [issuer]
            url = "http://127.0.0.1:9"
            signing_key_file = "\(issuerKey)"

            [policy]
            include = ["\((teamPolicy as NSString).deletingLastPathComponent)/*.toml"]

            [[delegations]]
            team = "victims"
            namespace_id = 7
            profiles = ["victim-env"]

            \(PeerTables.aws(moto: moto, region: "eu-west-1"))
            [providers.azure]
            type = "azure"

            [providers.auth0]
            type = "oauth2"
            token_endpoint = "http://127.0.0.1:9/oauth/token"
            client_id = "airlock"
            private_key_file = "\(keyFile)"

            [profiles.victim-env]
            provider = "aws"
            role_arn = "arn:aws:iam::123456789012:role/victim"
            session_name = "victim-{job_id}"

            [profiles.victim-endpoint]
            provider = "aws"
            role_arn = "arn:aws:iam::123456789012:role/victim"
            session_name = "victim-ep-{job_id}"
            deliver = "endpoint"

            [profiles.attacker]
            provider = "aws"
            role_arn = "arn:aws:iam::123456789012:role/attacker"
            session_name = "attacker-{job_id}"
            max_duration = "12h"

            [[rules]]
            name = "the victim's project"
            project_id = \(HostileJobTests.victimProject)
            grant = ["victim-env", "victim-endpoint"]

            [[rules]]
            name = "the attacker's project, its own grant"
            project_id = \(HostileJobTests.attackerProject)
            grant = ["attacker"]
            """)
            victim = SimulatedJob(script: [
                #"echo canary-builds > "$CI_PROJECT_DIR/canary.txt""#,
                #"echo canary-cache > "$CACHE_VIEW/canary.txt""#,
                #"echo canary-home > "$HOME/canary.txt""#,
                #"echo "victim-arn=$(aws sts get-caller-identity --query Arn --output text)""#,
                #"touch "$CI_PROJECT_DIR/ready""#,
                #"for i in $(seq 1 900); do [ -e "$CI_PROJECT_DIR/stop" ] && break; sleep 0.1; done"#,
                #"echo "victim-endpoint=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: $(cat "$AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")" "$AWS_CONTAINER_CREDENTIALS_FULL_URI")""#,
                #"echo "victim-canary=$(cat "$CI_PROJECT_DIR/canary.txt")-$(cat "$HOME/canary.txt")""#,
            ])
            victim.projectID = HostileJobTests.victimProject
            victim.projectPath = "platform/api"
            victim.variables = ["AWS_ENDPOINT_URL_STS": moto.url, "CACHE_VIEW": "\(world.root)/cache"]
            victim.idTokens = ["AIRLOCK_ID_TOKEN": issuer.mint(issuer.claims(for: victim, audience: HostileJobTests.audience))]
        }

        deinit {
            for d in [keyFile, runnerConfig, teamPolicy] { try? FileManager.default.removeItem(atPath: (d as NSString).deletingLastPathComponent) }
        }

        /// The victim's host builds dir, found once it is ready (later jobs of project 42 have their own).
        private(set) var victimBuilds: String?

        /// Starts the victim and returns once it has written its directories and holds credentials.
        func startVictim() throws {
            let job = victim, world = world
            let t = Thread { [self] in
                victimResult = world.simulate(job) { $0.runnerMasking = false }
                done.signal()
            }
            victimThread = t
            t.start()
            let until = Date().addingTimeInterval(60)
            while Date() < until {
                if let b = world.hostBuildsDir(projectID: HostileJobTests.victimProject),
                   FileManager.default.fileExists(atPath: "\(b)/platform/api/ready") {
                    victimBuilds = b
                    return
                }
                if done.wait(timeout: .now()) == .success { done.signal(); break }
                Thread.sleep(forTimeInterval: 0.05)
            }
            throw SimulatorError("the victim job did not get ready: \(victimResult?.log ?? "(still running)")")
        }

        /// Lets the victim finish and returns its result.
        func finishVictim() -> SimulationResult? {
            guard victimThread != nil else { return nil }
            if let b = victimBuilds { FileManager.default.createFile(atPath: "\(b)/platform/api/stop", contents: Data()) }
            done.wait()
            // The thread's closure holds the arena: let go of it, or neither the arena nor its world
            // (directories, nft rules) is ever released.
            victimThread = nil
            return victimResult
        }

        /// What a well-informed attacker knows about the victim (as if it had read the host's state).
        var victimFacts: [String: String] {
            let id = "\(victim.jobID)"
            let state = "\(world.stateDir)/jobs/\(id)"
            var f = ["VICTIM_JOB": id, "STATE": world.stateDir, "CFG": world.configPath, "AUDIT": world.auditLog,
                     "RUNNER_TMP": world.runnerTemp, "KEY": keyFile, "TEAM_POLICY": teamPolicy, "ISSUER_KEY": (keyFile as NSString).deletingLastPathComponent + "/issuer.pem", "RUNNER_CONF": runnerConfig,
                     "BUILDS_ROOT": "\(world.root)/builds", "CACHE_ROOT": "\(world.root)/cache",
                     "VICTIM_BUILDS_HOST": victimBuilds ?? "/nonexistent", "SECRETS_ROOT": secretsRoot,
                     "VICTIM_HOME_HOST": "\(world.root)/homes/job-\(id)", "HOMES_ROOT": "\(world.root)/homes"]
            if let d = FileManager.default.contents(atPath: "\(state)/endpoint-server.json"),
               let j = try? JSONSerialization.jsonObject(with: d) as? [String: Any], let port = j["port"] as? Int {
                f["VICTIM_PORT"] = "\(port)"
            }
            if let uid = victimBuilds.map({ ($0 as NSString).lastPathComponent }) {
                f["VICTIM_UID"] = uid
                f["VICTIM_PID"] = Self.pid(ofUID: uid).map(String.init) ?? "1"
            }
            return f
        }

        /// The world's `[runner] secrets_root`.
        var secretsRoot: String { world.secretsRoot }

        static func pid(ofUID uid: String) -> Int32? {
            for e in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
                guard let pid = Int32(e), let s = try? String(contentsOfFile: "/proc/\(e)/status", encoding: .utf8) else { continue }
                if s.split(separator: "\n").contains(where: { $0.hasPrefix("Uid:") && $0.split(separator: "\t").dropFirst().first.map(String.init) == uid }) {
                    return pid
                }
            }
            return nil
        }

        /// The attacker's job: project 666, its own valid ID token, the victim's facts as variables.
        func attacker(_ script: [String]) -> SimulatedJob {
            var j = SimulatedJob(script: [HostileJobTests.probe] + script)
            j.projectID = HostileJobTests.attackerProject
            j.projectPath = "evil/tool"
            j.idTokens = ["AIRLOCK_ID_TOKEN": issuer.mint(issuer.claims(for: j, audience: HostileJobTests.audience, protected: false))]
            j.variables = victimFacts.merging(["AWS_ENDPOINT_URL_STS": moto.url]) { $1 }
            return j
        }

        func token(for job: SimulatedJob, audience: String = HostileJobTests.audience) -> String {
            issuer.mint(issuer.claims(for: job, audience: audience))
        }
    }

    /// The digits that follow the first output (not echoed command) occurrence of `marker`.
    static func number(after marker: String, in log: String) -> String? {
        log.components(separatedBy: marker).dropFirst().map { String($0.prefix { $0.isNumber }) }.first { !$0.isEmpty }
    }

    static func blocked(_ name: String, _ r: SimulationResult, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(r.log.contains("ATTACK[\(name)]=blocked"), "\(name): \(r.log)", sourceLocation: sourceLocation)
    }

    // MARK: the table

    static let attacks: [Attack] = [
        // -- root, capabilities, mounts
        Attack(name: "runs-as-root", victim: false, script: [#"echo "ATTACK[uid]=$(id -u)""#], check: { r, a in
            let uid = number(after: "ATTACK[uid]=", in: r.log)
            #expect(uid.flatMap { UInt32($0) }.map { a.world.jobUIDs.contains($0) } == true, "\(TestWorld.redacted(r.log))")
        }),
        // Every capability set empty, the bounding set included (no capability can come back on an
        // exec), no_new_privs, no supplementary group (root's would show as the overflow gid), and
        // no signal blocked or caught from Airlock's process.
        Attack(name: "capabilities", victim: false, script: [#"echo "ATTACK[capeff]=$(awk '/^CapEff/{print $2}' /proc/self/status)-nnp$(awk '/^NoNewPrivs/{print $2}' /proc/self/status)""#,
                                                             #"echo "ATTACK[capsets]=$(awk '/^Cap(Inh|Prm|Bnd|Amb)/{printf "%s%s", $1, $2}' /proc/self/status)-groups[$(awk '/^Groups/{$1=""; print}' /proc/self/status | tr -d ' ')]-sigblk$(awk '/^SigBlk/{print $2}' /proc/self/status)""#],
               check: { r, _ in
                   #expect(r.log.contains("ATTACK[capeff]=0000000000000000-nnp1"), "\(TestWorld.redacted(r.log))")
                   #expect(r.log.contains("ATTACK[capsets]=CapInh:0000000000000000CapPrm:0000000000000000CapBnd:0000000000000000CapAmb:0000000000000000-groups[]-sigblk0000000000000000"), "\(TestWorld.redacted(r.log))")
               }),
        Attack(name: "umount-state", script: [#"umount "$STATE" 2>/dev/null || true"#, #"probe umount-state 'cat "$STATE/jobs/$VICTIM_JOB/ledger.json"'"#]),
        Attack(name: "remount-rw", victim: false, script: [#"mount -o remount,rw / 2>/dev/null || true"#, #"probe remount-rw 'touch /var/tmp/airlock-pwned-$$ && echo wrote'"#],
               check: { _, _ in
                   let left = (try? FileManager.default.contentsOfDirectory(atPath: "/var/tmp"))?.filter { $0.hasPrefix("airlock-pwned-") } ?? []
                   #expect(left.isEmpty)
               }),
        // The runner's session keyring (gitlab-runner under systemd has one): a job holding it could
        // read, add and revoke keys in it, and so could every other job.
        Attack(name: "runner-keyring", victim: false, script: [
            #"echo "ATTACK[keyring]=$(python3 -c 'import ctypes, platform; n = {"x86_64": 250, "aarch64": 219}[platform.machine()]; print(ctypes.CDLL(None).syscall(n, 0, -3, 0))')""#,
        ], check: { r, a in
            #expect(a.runnerKeyring != nil)
            let seen = number(after: "ATTACK[keyring]=", in: r.log)
            #expect(seen != nil && seen != a.runnerKeyring.map(String.init), "runner's keyring \(String(describing: a.runnerKeyring)): \(r.log)")
        }),
        Attack(name: "nested-userns", victim: false, script: [#"probe nested-userns 'unshare -r -m sh -c "echo inside"'"#]),
        Attack(name: "tiocsti", victim: false, script: [#"probe tiocsti 'exec 3<>/dev/tty && echo has-a-terminal'"#]),
        // -- another job's credentials and files
        Attack(name: "victim-ledger", script: [#"probe victim-ledger 'cat "$STATE/jobs/$VICTIM_JOB/ledger.json"'"#]),
        Attack(name: "victim-secret-files", script: [#"probe victim-secret-files 'ls -A "$SECRETS_ROOT"; ls -A "$SECRETS_ROOT/$VICTIM_JOB"'"#]),
        Attack(name: "victim-builds", script: [#"probe victim-builds 'cat "$VICTIM_BUILDS_HOST/platform/api/canary.txt"; ls "$BUILDS_ROOT"/project-*'"#]),
        Attack(name: "victim-cache", script: [#"probe victim-cache 'cat "$CACHE_ROOT"/project-42/*/*/canary.txt; ls "$CACHE_ROOT"/project-42'"#]),
        Attack(name: "victim-home", script: [#"probe victim-home 'cat "$VICTIM_HOME_HOST/canary.txt"; ls -A "$HOMES_ROOT"'"#]),
        Attack(name: "victim-process", script: [#"probe victim-process 'kill -0 "$VICTIM_PID" && echo alive; cat /proc/$VICTIM_PID/environ'"#]),
        Attack(name: "signal-everything", script: [#"kill -HUP "$VICTIM_PID" 2>/dev/null || true; kill -CONT -1 2>/dev/null || true"#, #"probe signal-everything 'ps -eo uid= | tr -d " " | grep -v "^$(id -u)$"'"#]),
        Attack(name: "other-response-json", script: [#"probe other-response-json 'cat "$RUNNER_TMP"/custom-executor*/response.json; ls -A "$RUNNER_TMP"'"#]),
        // -- Airlock's own files and the runner's
        Attack(name: "airlock-config", script: [#"probe airlock-config 'cat "$CFG"'"#]),
        // Issue 13: the key that makes fingerprints unguessable (state_dir, made by the victim's prepare).
        Attack(name: "fingerprint-key", script: [#"probe fingerprint-key 'od -An -tx1 "$STATE/fingerprint.key"; ls -A "$STATE"'"#],
               check: { _, a in
                   #expect(FileManager.default.fileExists(atPath: "\(a.world.stateDir)/fingerprint.key"), "no key to attack: the probe proved nothing")
               }),
        Attack(name: "audit-log", script: [#"probe audit-log 'cat "$AUDIT"; ls -A "$(dirname "$AUDIT")"'"#]),
        Attack(name: "oauth-private-key", script: [#"probe oauth-private-key 'cat "$KEY"'"#]),
        Attack(name: "issuer-signing-key", script: [#"probe issuer-signing-key 'cat "$ISSUER_KEY"'"#]),
        Attack(name: "team-policy-file", script: [#"probe team-policy-file 'cat "$TEAM_POLICY"'"#]),
        Attack(name: "runner-config", script: [#"probe runner-config 'cat "$RUNNER_CONF"'"#]),
        Attack(name: "shadow-and-root", victim: false, script: [#"probe shadow-and-root 'cat /etc/shadow; ls -A /root'"#]),
        // -- the host's cloud identity (a stand-in metadata service on lo; see MetadataService)
        Attack(name: "metadata-aws-gcp-azure", victim: false, script: [#"probe metadata-aws-gcp-azure 'curl -s -m 3 http://169.254.169.254/latest/meta-data/'"#]),
        Attack(name: "metadata-ecs", victim: false, script: [#"probe metadata-ecs 'curl -s -m 3 http://169.254.170.2/v2/credentials/x'"#]),
        Attack(name: "metadata-alibaba", victim: false, script: [#"probe metadata-alibaba 'curl -s -m 3 http://100.100.100.200/latest/meta-data/'"#]),
        Attack(name: "metadata-ipv6", victim: false, script: [#"probe metadata-ipv6 'curl -s -m 3 "http://[fd00:ec2::254]/latest/meta-data/"'"#]),
        // -- job identity from variables
        Attack(name: "spoofed-job-id", script: [#"probe spoofed-job-id 'env | grep -E "^AWS_(ACCESS_KEY_ID|SESSION_TOKEN|CONTAINER)"'"#],
               configure: { j, a in
                   j.idTokens = [:]
                   j.variables["CI_JOB_ID"] = "\(a.victim.jobID)"
                   j.afterScript = [HostileJobTests.probe, #"probe spoofed-job-id-after 'env | grep -E "^AWS_(ACCESS_KEY_ID|SECRET_ACCESS_KEY|SESSION_TOKEN|CONTAINER|SHARED)"'"#]
               },
               check: { r, _ in blocked("spoofed-job-id-after", r) }),
        Attack(name: "replayed-token-with-spoofed-ids", script: ["echo never-runs"], configure: { j, a in
            j.idTokens = ["AIRLOCK_ID_TOKEN": a.victim.idTokens["AIRLOCK_ID_TOKEN"]!]
            j.variables["CI_JOB_ID"] = "\(a.victim.jobID)"
            j.variables["CI_PROJECT_ID"] = "\(a.victim.projectID)"
        }, check: { r, a in
            #expect(r.failureReason == "script_failure", "\(TestWorld.redacted(r.log))")
            #expect(r.log.contains("not to this job"), "\(TestWorld.redacted(r.log))")
            let present1 = r.output.contains("never-runs\n")
            #expect(!present1)
            #expect(!a.world.auditRecords().contains { $0["event"] as? String == "issued" && $0["job_id"] as? String != "\(a.victim.jobID)" })
        }, expectSuccess: false),
        Attack(name: "spoofed-project-id", script: [#"echo poison > "$CI_PROJECT_DIR/poison.txt""#, #"probe spoofed-project-id 'cat "$CI_BUILDS_DIR/platform/api/canary.txt"'"#],
               configure: { j, a in j.variables["CI_PROJECT_ID"] = "\(a.victim.projectID)" },
               check: { _, a in
                   // The attacker's file lands in its own project's directory, never in the victim's.
                   #expect(a.world.hostBuildsDir(projectID: HostileJobTests.attackerProject).map { FileManager.default.fileExists(atPath: "\($0)/evil/tool/poison.txt") } == true)
                   #expect(a.victimBuilds.map { FileManager.default.fileExists(atPath: "\($0)/evil/tool/poison.txt") } == false)
               }),
        Attack(name: "spoofed-timeout", victim: false, script: [#"echo "ATTACK[spoofed-timeout]=ran""#],
               configure: { j, _ in j.variables["CI_JOB_TIMEOUT"] = "43200"; j.timeout = 900 },
               check: { r, a in
                   #expect(r.log.contains("ATTACK[spoofed-timeout]=ran"))
                   // The credential lives as long as the runner's timeout says (900 s), not the job's 12 h.
                   let issued = a.world.auditRecords().first { $0["event"] as? String == "issued" && $0["profile"] as? String == "attacker" }
                   let expires = (issued?["expires_at"] as? String).flatMap { ISO8601DateFormatter().date(from: $0) }
                   #expect(expires.map { $0.timeIntervalSinceNow < 1000 } == true, "\(String(describing: issued))")
               }),
        Attack(name: "spoofed-concurrency-slot", script: [#"probe spoofed-concurrency-slot 'cat "$CI_PROJECT_DIR/../../platform/api/canary.txt"; ls "$CI_BUILDS_DIR"/platform'"#],
               configure: { j, a in
                   j.variables["CI_CONCURRENT_ID"] = "0"; j.variables["CI_CONCURRENT_PROJECT_ID"] = "0"
                   j.variables["CI_RUNNER_SHORT_TOKEN"] = a.victim.runnerShortToken
               }),
        // -- tokens with Airlock's audience under other names
        Attack(name: "second-token-same-audience", victim: false, script: [#"echo "ATTACK[second-token]=${#MY_TOKEN}-$(grep -c "e""yJ" /tmp/.airlock-stage.sh)""#],
               configure: { j, a in j.idTokens["MY_TOKEN"] = a.token(for: j) },
               check: { r, _ in #expect(r.log.contains("ATTACK[second-token]=0-0"), "\(TestWorld.redacted(r.log))") }),
        Attack(name: "variable-named-like-the-token", victim: false, script: [#"echo "ATTACK[dup-token]=$(grep -c "e""yJ" /tmp/.airlock-stage.sh)""#],
               configure: { j, a in j.variables["AIRLOCK_ID_TOKEN"] = a.token(for: j) },
               check: { r, _ in #expect(r.log.contains("ATTACK[dup-token]=0"), "\(TestWorld.redacted(r.log))") }),
        Attack(name: "provider-audience-token", victim: false, script: [#"echo "ATTACK[azure-token]=${#STOLEN}""#],
               configure: { j, a in j.idTokens["STOLEN"] = a.token(for: j, audience: "api://AzureADTokenExchange") },
               check: { r, _ in #expect(r.log.contains("ATTACK[azure-token]=0"), "\(TestWorld.redacted(r.log))") }),
        // -- the victim's credential endpoint
        Attack(name: "flood-victim-endpoint", script: [
            #"ok=0; for i in $(seq 1 200); do c=$(curl -s -m 1 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$VICTIM_PORT/aws/victim-endpoint" || true); [ "$c" = 000 ] || ok=$((ok+1)); done; echo "ATTACK[flood]=answered-$ok""#,
            #"n=0; for i in $(seq 1 40); do if (exec 3<>"/dev/tcp/127.0.0.1/$VICTIM_PORT") 2>/dev/null; then n=$((n+1)); fi; done; echo "ATTACK[half-open]=connected-$n-port-$VICTIM_PORT""#,
        ], check: { r, a in
            #expect(r.log.contains("ATTACK[flood]=answered-0"), "\(TestWorld.redacted(r.log))")
            #expect(r.log.range(of: #"ATTACK\[half-open\]=connected-0-port-[0-9]+"#, options: .regularExpression) != nil, "\(TestWorld.redacted(r.log))")
            // Not one refusal line per request: the attacker never reached the server at all.
            let refused = a.world.auditRecords().filter { $0["event"] as? String == "endpoint_refused" }
            #expect(refused.compactMap { $0["count"] as? Int }.reduce(0, +) == 0, "\(refused)")
        }),
        // -- ref protection: an unprotected ref cannot plant files for a protected one
        Attack(name: "poison-protected-dirs", victim: false, script: [#"probe poison-protected-dirs 'cat "$CI_PROJECT_DIR/poison.txt" "$CACHE_VIEW/poison.txt"'"#],
               configure: { j, a in
                   // First an unprotected job of the same project writes poison into its builds and cache dirs.
                   var u = SimulatedJob(script: [#"echo poison > "$CI_PROJECT_DIR/poison.txt""#, #"echo poison > "$CACHE_VIEW/poison.txt""#])
                   u.projectID = HostileJobTests.attackerProject
                   u.projectPath = j.projectPath
                   u.refProtected = false
                   u.variables = ["CACHE_VIEW": "\(a.world.root)/cache"]
                   let first = a.world.simulate(u)
                   #expect(first.status == "success", "\(first.log)")
                   j.refProtected = true
                   j.variables["CACHE_VIEW"] = "\(a.world.root)/cache"
               }),
    ]

    @Test(arguments: attacks)
    func attackFails(_ attack: Attack) throws {
        let metadata = try MetadataService.acquire()
        defer { MetadataService.release() }
        _ = metadata
        // Control: the stand-in metadata service answers a host process (so a blocked job proves the rule).
        if attack.name.hasPrefix("metadata") {
            #expect(MetadataService.fetchAsHost("169.254.169.254").contains(MetadataService.answer))
        }
        let arena = try Arena()
        if attack.victim { try arena.startVictim() }
        var job = arena.attacker(attack.script)
        attack.configure(&job, arena)
        let r = arena.world.simulate(job) { $0.runnerMasking = false }
        let victim = arena.finishVictim()

        if attack.expectSuccess { #expect(r.status == "success", "\(TestWorld.redacted(r.log))") }
        let probes = attack.script.joined(separator: "\n").components(separatedBy: "probe ").dropFirst()
            .compactMap { $0.split(separator: " ").first.map(String.init) }
        for name in probes { Self.blocked(name, r) }
        let present2 = r.log.contains("=LEAKED")
        #expect(!present2, "\(TestWorld.redacted(r.log))")
        let present3 = r.log.contains(MetadataService.answer)
        #expect(!present3)
        let present4 = r.log.contains("glrt-runner-secret-token")
        #expect(!present4)
        let present5 = r.log.contains("PRIVATE KEY")
        #expect(!present5)
        attack.check(r, arena)

        if let v = victim {
            // The normal job beside it: checked out, built, wrote its dirs, reached the network, kept
            // its endpoint, and its credentials were settled at cleanup.
            #expect(v.status == "success", "\(v.log)")
            #expect(v.log.contains("victim-arn=arn:aws:sts::123456789012:assumed-role/victim/victim-\(arena.victim.jobID)"), "\(v.log)")
            #expect(v.log.contains("victim-endpoint=200"), "\(v.log)")
            #expect(v.log.contains("victim-canary=canary-builds-canary-home"), "\(v.log)")
            let audit = arena.world.auditRecords().filter { $0["job_id"] as? String == "\(arena.victim.jobID)" }
            let issued = Set(audit.filter { $0["event"] as? String == "issued" }.compactMap { $0["credential_id"] as? String })
            let settled = Set(audit.filter { $0["event"] as? String == "revoked" }.compactMap { $0["credential_id"] as? String })
            #expect(!issued.isEmpty && issued == settled, "\(audit)")
            #expect(!FileManager.default.fileExists(atPath: "\(arena.world.stateDir)/jobs/\(arena.victim.jobID)"))
        }
    }

    /// Two running jobs never share a uid or a writable directory, and a uid is free again after cleanup.
    @Test func concurrentJobsGetDistinctUIDsAndDirectories() throws {
        let arena = try Arena()
        try arena.startVictim()
        let facts = arena.victimFacts
        var job = arena.attacker([#"echo "ATTACK[uid]=$(id -u)""#])
        job.projectID = HostileJobTests.victimProject  // the same project: still its own directories
        job.projectPath = "platform/api"
        job.idTokens = [:]
        let r = arena.world.simulate(job)
        _ = arena.finishVictim()
        let attackerUID = Self.number(after: "ATTACK[uid]=", in: r.log) ?? ""
        let victimUID: String = facts["VICTIM_UID"] ?? ""
        #expect(!attackerUID.isEmpty && !victimUID.isEmpty && attackerUID != victimUID, "\(TestWorld.redacted(r.log))")
        let top = "\(arena.world.root)/builds/project-42"
        let dirs = ((try? FileManager.default.contentsOfDirectory(atPath: top)) ?? []).flatMap { cls in
            ((try? FileManager.default.contentsOfDirectory(atPath: "\(top)/\(cls)")) ?? []).map { "\(cls)/\($0)" }
        }
        #expect(Set(dirs).count == 2, "\(dirs)")
        let slots = (try? FileManager.default.contentsOfDirectory(atPath: "\(arena.world.stateDir)/uids"))?.filter { !$0.hasPrefix(".") } ?? []
        #expect(slots.isEmpty, "uids still held after cleanup: \(slots)")
    }
}
