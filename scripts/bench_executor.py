#!/usr/bin/env python3
"""The executor benchmark of scripts/bench (issue 19, goal 1), as ratios against baselines run side by
side on this machine, interleaved job by job:

  - this build's executables (bubblewrap, tenant uids, nftables guard: the trivial job's four stages,
    no ID token), driven by the runner simulator (`airlock-dev simulate --summary`, which times each
    executable it starts);
  - BASELINE_BIN (optional): an earlier build's executables, driven by the same simulator;
  - a bare `exec bash "$1"` run_exec (scripts/bare-driver.sh), driven by the same simulator;
  - bubblewrap's own start: the same bash stage script run directly and inside a bubblewrap with
    Airlock's namespaces and a read-only system, to set the run stage's overhead against.

  - EXAMPLE_CONFIG (optional): this build again, with a configuration that has providers, profiles
    and rules besides the runner (every stage reads the whole configuration).

Usage: bench_executor.py SIMULATOR CONFIG WORKDIR RUNS BIN [BASELINE_BIN [EXAMPLE_CONFIG]]
"""
import json
import os
import statistics
import subprocess
import sys
import time

sim, config, work, runs, binary = sys.argv[1:6]
runs = int(runs)
baseline = sys.argv[6] if len(sys.argv) > 6 and sys.argv[6] else None
example = sys.argv[7] if len(sys.argv) > 7 and sys.argv[7] else None
bare_driver = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bare-driver.sh")
drivers = [("airlock", ["--config", config, "--bin-dir", binary])]
if baseline:
    drivers.append(("baseline", ["--config", config, "--bin-dir", baseline]))
if example:
    drivers.append(("example", ["--config", example, "--bin-dir", binary]))
    if baseline:
        drivers.append(("base-example", ["--config", example, "--bin-dir", baseline]))
drivers.append(("bare", ["--bare-run-exec", bare_driver]))
times = {name: {} for name, _ in drivers}
job_file = os.path.join(work, "job.json")
summary = os.path.join(work, "summary.json")
for i in range(runs):
    for n, (name, args) in enumerate(drivers):
        with open(job_file, "w") as f:
            json.dump({"script": ["true"], "job_id": 1000 + i * len(drivers) + n}, f)
        r = subprocess.run([sim, "simulate", "--quiet", "--summary", summary] + args + [job_file])
        if r.returncode != 0:
            sys.exit(f"bench: the {name} job failed (exit {r.returncode})")
        stages = json.load(open(summary))["timings"]
        for t in stages:
            times[name].setdefault(t["exec"], []).append(t["milliseconds"])
        times[name].setdefault("job", []).append(sum(t["milliseconds"] for t in stages))

# bubblewrap's own start: one stage script of the bare job, with and without a bubblewrap around it.
script = os.path.join(work, "stage.sh")
with open(script, "w") as f:
    f.write("set -eo pipefail\nset +o noclobber\necho stage\n")
bwrap = ["bwrap", "--unshare-all", "--share-net", "--die-with-parent", "--unshare-user", "--disable-userns",
         "--hostname", "airlock", "--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc",
         "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
         "--symlink", "usr/sbin", "/sbin", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
         "--bind", work, work, "--chdir", work, "--new-session", "--"]
direct, wrapped = [], []
for _ in range(max(runs, 20)):
    for cmd, out in ((["bash", "--noprofile", "--norc", script], direct), (bwrap + ["bash", "--noprofile", "--norc", script], wrapped)):
        t = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
        out.append((time.perf_counter() - t) * 1000)
bwrap_start = statistics.median(wrapped) - statistics.median(direct)

med = {name: {k: statistics.median(v) for k, v in t.items()} for name, t in times.items()}
run_stages = [k for k in med["bare"] if k != "job"]
cols = [name for name, _ in drivers]
print(f"executor: {runs} trivial jobs per driver, interleaved (config, prepare, {', '.join(run_stages)}, cleanup); medians in ms")
print(f"  {'':24s}" + "".join(f"{c:>10s}" for c in cols))
for k in ["config", "prepare"] + run_stages + ["cleanup", "job"]:
    print(f"  {k:24s}" + "".join(f"{med[c][k]:10.1f}" if k in med[c] else f"{'-':>10s}" for c in cols))
a, b = med["airlock"]["job"], med["bare"]["job"]
print(f"  per-job overhead over the bare driver: {a - b:.1f} ms (ratio {a / b:.2f}x; goal <= 50 ms)")
print(f"  bubblewrap's own start (bash stage script in bubblewrap vs direct): {bwrap_start:.1f} ms")
for k in run_stages:
    extra = med["airlock"][k] - med["bare"][k] - bwrap_start
    print(f"  {k}: {extra:+.1f} ms over the bare stage plus bubblewrap's start (goal <= 5 ms)")
if baseline:
    c = med["baseline"]["job"]
    print(f"  this build vs baseline: {a - c:+.1f} ms per job (ratio {a / c:.2f}x)")
if example:
    e = med["example"]["job"]
    print(f"  with the example configuration: {e - b:.1f} ms over the bare driver (ratio {e / b:.2f}x); {e - a:+.1f} ms against the five-line one")
    for k in run_stages:
        print(f"    {k}: {med['example'][k] - med['bare'][k] - bwrap_start:+.1f} ms over the bare stage plus bubblewrap's start")
    if baseline:
        c = med["base-example"]["job"]
        print(f"    this build vs baseline, example configuration: {e - c:+.1f} ms per job (ratio {e / c:.2f}x)")
