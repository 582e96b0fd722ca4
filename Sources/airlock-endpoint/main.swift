import CredentialEndpoint
import Foundation
import HTTPClient
import NIOCore
import NIOPosix

// One job's credential server, started by airlock-prepare for profiles with deliver = "endpoint".
//
// One thread does it all: NIO's event loop accepts, reads and writes, and (installed as Swift
// concurrency's global executor) runs the handlers too. By default a request went from the event
// loop to a concurrency thread and back, twice (issue 19, goal 3: the latency botocore sees).
// A job's server answers one job, at most `endpoint_requests_per_second`. Both must happen
// before anything uses the event loop group or the global executor.
NIOSingletons.groupLoopCountSuggestion = 1
NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
exit(await EndpointMain.run(transport: { URLSessionTransport() }))
