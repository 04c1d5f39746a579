#!/usr/bin/env python3
"""What the submit filter adds to sbatch (issue 20): paired, interleaved runs
of `sbatch --hold` on a running two-node rig (tests/setup/slurm2.sh started
with SLURM2_CLI_FILTER=<cli_filter.lua naming the release hpcc> and the
nodes published with packaging/slurm/hpcc-node-features), with
HPCC_CONFIG naming a policy whose [scheduling] fleet holds the nodes'
fingerprints. Usage: submit-cost.py OK_BUNDLE REFUSED_BUNDLE [N]."""
import os
import statistics
import subprocess
import sys
import tempfile
import time

ok, refused = sys.argv[1], sys.argv[2]
n = int(sys.argv[3]) if len(sys.argv) > 3 else 30
hold = ["sbatch", "--hold", "--parsable", "-N1", "-o", "/dev/null"]
xdg = tempfile.mkdtemp()
cases = {
    "no --container (filter returns at once)": (hold + ["--wrap", "true"], {}, True),
    "--container, bundle, no sinfo cache": (hold + [f"--container={ok}", "--wrap", "true"], {}, True),
    "--container, bundle, sinfo cache warm": (
        hold + [f"--container={ok}", "--wrap", "true"], {"XDG_RUNTIME_DIR": xdg}, True),
    "--container, refused image, no cache": (hold + [f"--container={refused}", "--wrap", "true"], {}, False),
}
res = {k: [] for k in cases}
for _ in range(n):
    for k, (args, extra, accepted) in cases.items():
        env = dict(os.environ, **extra)
        t0 = time.perf_counter()
        p = subprocess.run(args, capture_output=True, env=env, timeout=60)
        res[k].append((time.perf_counter() - t0) * 1000)
        assert (p.returncode == 0) == accepted, (k, p.stderr)
subprocess.run(["scancel", "-u", str(os.getuid())], timeout=30)
for k, v in res.items():
    v.sort()
    print(f"{k:<42} median {statistics.median(v):5.1f} ms  p10 {v[n // 10]:5.1f}  p90 {v[n * 9 // 10]:5.1f}")
