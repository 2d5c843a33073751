#!/usr/bin/env bash
# Runs every test, as CI does.  From a fresh Debian 12 machine:
#
#   bash scripts/test.sh
#
# 1. installs the Debian packages Threshold needs (scripts/install-deps.sh);
# 2. builds normally (build/) and with AddressSanitizer + UndefinedBehaviorSanitizer
#    (build-asan/);
# 3. builds, or reuses, the chroot holding a real Synapse (the first time takes a
#    few minutes and needs the network);
# 4. runs ctest on both builds: unit, policy and integration tests.
#
# Exits non-zero if anything fails.  Needs no terminal (CI=true, no stdin).
#
# Environment:
#   THRESHOLD_ASAN_INTEGRATION=0  skip the integration tests on the sanitizer build
#   THRESHOLD_JOBS=N              parallel build jobs (default: number of CPUs)
set -euo pipefail
cd "$(dirname "$0")/.."

jobs=${THRESHOLD_JOBS:-$(nproc)}

step() { printf '\n== %s\n' "$*"; }

step "dependencies"
bash scripts/install-deps.sh </dev/null

step "build (build/)"
cmake -S . -B build
cmake --build build -j"$jobs"

step "build with ASan + UBSan (build-asan/)"
cmake -S . -B build-asan -DTHRESHOLD_SANITIZE=ON
cmake --build build-asan -j"$jobs"

step "Synapse chroot"
bash tests/harness/synapse-chroot.sh </dev/null

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

failed=()

step "tests: build/"
ctest --test-dir build --output-on-failure </dev/null || failed+=("build")

step "tests: build-asan/"
asan_args=()
if [ "${THRESHOLD_ASAN_INTEGRATION:-1}" = 0 ]; then
  asan_args=(-LE integration)
fi
ctest --test-dir build-asan --output-on-failure "${asan_args[@]}" </dev/null || failed+=("build-asan")

if [ ${#failed[@]} -ne 0 ]; then
  printf '\ntest.sh: FAILED in: %s\n' "${failed[*]}" >&2
  exit 1
fi
printf '\ntest.sh: all tests passed\n'
