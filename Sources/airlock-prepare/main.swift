import AirlockCore
import HTTPClient

// GitLab Runner's prepare_exec: `airlock-prepare [--config FILE]`. The only stage executables that talk to
// the network, so the only ones that link URLSession (libcurl).
await Executor.main(.prepare, transport: { URLSessionTransport() })
