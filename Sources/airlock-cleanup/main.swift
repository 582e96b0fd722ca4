import AirlockCore
import HTTPClient

// GitLab Runner's cleanup_exec: `airlock-cleanup [--config FILE]`. The only stage executables that talk to
// the network, so the only ones that link URLSession (libcurl).
await Executor.main(.cleanup, transport: { URLSessionTransport() })
