#!/usr/bin/env bash
# slurm-step-cost.sh [N]   (default N=10; root; one-node Slurm, started if down)
#
# The Slurm rows of tests/bench/run-all.sh (f, f2): `srun --container` steps
# with the SPANK plugin and `hpcc-runtime --hpcc-slurm` against steps without
# hpcc, check-only and mpi_replace (baseline: the same program on the same
# library), interleaved; and the plugin's own decision time from slurmd's
# log. See BENCHMARKS.md.
exec env SECTIONS=slurm bash "$(dirname "$0")/run-all.sh" "${1:-10}"
