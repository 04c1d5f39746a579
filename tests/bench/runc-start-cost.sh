#!/usr/bin/env bash
# runc-start-cost.sh [N]   (default N=10; root)
#
# The runc rows of tests/bench/run-all.sh (a-d, and Sarus's MPI hook when
# SARUS_MPI_HOOK names one): `runc run` through hpcc-runtime and with
# hpcc-hook, each against a baseline that runs the same program on the same
# library (the host MPICH and its closure copied into the image), runs
# interleaved. See BENCHMARKS.md.
exec env SECTIONS=runc bash "$(dirname "$0")/run-all.sh" "${1:-10}"
