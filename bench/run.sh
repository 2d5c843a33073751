#!/usr/bin/env bash
# Builds Threshold (release) and prints the benchmark table against the
# budgets in DESIGN.md.  Usage: bench/run.sh [--quick] [--table-only] [--dir DIR]
# [--members N] [--guests N] [--audit N] [--backlog N] (the scale table: docs/performance.md)
# Against a real Synapse (see bench/README.md): bench/invite_latency.py and
# bench/gateway_bench.py [--quick] (guest connections held, round trips, sends).
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-release -j"$(nproc)" --target threshold threshold-bench >/dev/null
exec build-release/bench/threshold-bench --threshold build-release/threshold "$@"
