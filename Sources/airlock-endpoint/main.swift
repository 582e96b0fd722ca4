import CredentialEndpoint
import Foundation
import HTTPClient

// One job's credential server, started by airlock-prepare for profiles with deliver = "endpoint".
exit(await EndpointMain.run(transport: { URLSessionTransport() }))
