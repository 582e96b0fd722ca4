import AirlockCore
import HTTPClient

// `airlock-federate prepare|cleanup [--config FILE]`: prepare and cleanup for a job that has something
// to say to GitLab or a provider. airlock-prepare and airlock-cleanup become it (execv, same pid,
// arguments and environment); the runner never names it. The only stage executable that links
// URLSession (libcurl and its thirty shared libraries, about 7 ms to load).
let begun = Executor.federateBegin()
await Executor.main(begun, transport: { URLSessionTransport() })
