#!/usr/bin/env python3
"""spawn-cost.py N NAME=COMMAND... -- the start cost of single programs.

Runs every COMMAND once per round, N rounds, in a fresh random order each
round, and prints for each its mean CPU time (user + sys of the process and
every child it waited for, from wait4) and its median wall time, in ms.
Used in BENCHMARKS.md for what hpcc-runtime itself costs in front of a
runtime: give it `--hpcc-runtime=/bin/true` and compare with /bin/true.

A COMMAND is split on spaces; leading VAR=VALUE words go into its
environment; `{i}` is replaced by the round number (a fresh container id
per run). RESTORE=SRC:DST (environment) copies SRC over DST (a new file,
renamed into place) before every run, outside the timed region: Slurm
mode edits the spooled config.json it is given.

Example (as root, after `WITH_RUNTIME=1 packaging/build-static-hook.sh`):
  python3 tests/bench/spawn-cost.py 500 true=/bin/true \\
    "rt=target/static/hpcc-runtime --hpcc-config=P --hpcc-runtime=/bin/true run --bundle B c{i}"
"""
import os
import random
import statistics
import sys
import time


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    rounds = int(sys.argv[1])
    cmds = {}
    for arg in sys.argv[2:]:
        name, cmd = arg.split("=", 1)
        cmds[name] = cmd.split()
    restore = os.environ.get("RESTORE")
    cpu = {k: [] for k in cmds}
    wall = {k: [] for k in cmds}
    null = os.open("/dev/null", os.O_WRONLY)
    for i in range(rounds):
        names = list(cmds)
        random.shuffle(names)
        for k in names:
            words = [w.replace("{i}", str(i)) for w in cmds[k]]
            env = dict(os.environ)
            while words and "=" in words[0] and not words[0].startswith("/"):
                var, val = words.pop(0).split("=", 1)
                env[var] = val
            if restore:
                src, dst = restore.split(":", 1)
                with open(src, "rb") as f:
                    body = f.read()
                with open(dst + ".spawn-cost", "wb") as f:
                    f.write(body)
                os.rename(dst + ".spawn-cost", dst)
            t = time.perf_counter()
            pid = os.posix_spawn(words[0], words, env,
                                 file_actions=[(os.POSIX_SPAWN_DUP2, null, 1),
                                               (os.POSIX_SPAWN_DUP2, null, 2)])
            _, status, ru = os.wait4(pid, 0)
            wall[k].append((time.perf_counter() - t) * 1e3)
            cpu[k].append((ru.ru_utime + ru.ru_stime) * 1e3)
            if os.waitstatus_to_exitcode(status) != 0:
                print(f"{k}: exit {os.waitstatus_to_exitcode(status)}: {' '.join(words)}",
                      file=sys.stderr)
                return 1
    for k in cmds:
        print(f"{k:14s} cpu mean {statistics.mean(cpu[k]):7.3f} ms  "
              f"wall median {statistics.median(wall[k]):7.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
