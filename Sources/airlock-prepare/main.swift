import AirlockCore

// GitLab Runner's prepare_exec: `airlock-prepare [--config FILE]`. It links no libcurl: a job that
// presents an ID token (or has credentials left from an earlier attempt) is handed over to
// airlock-federate before anything is done, and every other job is prepared here in milliseconds.
let begun = Executor.begin(.prepare)
await Executor.main(begun)
