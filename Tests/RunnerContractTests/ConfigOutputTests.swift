import Foundation
@testable import RunnerContract
import Testing

/// Issue 19: config_exec prints `ConfigOutput.json` instead of JSONEncoder's output; the runner must
/// get the same text, whatever the paths and the host name hold.
struct ConfigOutputTests {
    @Test(arguments: [["/var/lib/airlock/builds", "/var/lib/airlock/cache", "runner-1"],
                      ["/srv/a \"b\"\\c/é/😀", "/tmp/x\ny\t\u{1}", "host/name"],
                      ["", "", ""]])
    func theTextIsJSONEncodersWithSortedKeysAndSlashesKept(_ v: [String]) throws {
        var out = ConfigOutput(buildsDir: v[0], cacheDir: v[1], hostname: v[2], driver: .init(name: "airlock", version: "0.1.0"),
                               jobEnv: v[2].isEmpty ? [:] : ["A": v[1], "B/C": v[0]])
        out.buildsDirIsShared = v[2] == "host/name"
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let reference = String(decoding: try enc.encode(out), as: UTF8.self)
        #expect(out.json == reference)
        #expect(try JSONDecoder().decode(ConfigOutput.self, from: Data(out.json.utf8)) == out)
    }
}
