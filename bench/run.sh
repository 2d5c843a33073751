#!/usr/bin/env bash
# Builds Threshold (release) and prints the benchmark table against the
# budgets in DESIGN.md.  Usage: bench/run.sh [--quick] [--dir DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-release -j"$(nproc)" --target threshold threshold-bench >/dev/null
exec build-release/bench/threshold-bench --threshold build-release/threshold "$@"
