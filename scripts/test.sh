#!/usr/bin/env bash
# Runs every test, as CI does.  From a fresh Debian 12 machine:
#
#   bash scripts/test.sh
#
# 1. installs the Debian packages Threshold needs (scripts/install-deps.sh);
# 2. checks the sources (scripts/checksrc.py: banned calls, policy/ pure, layers);
#    builds normally (build/), with AddressSanitizer + UndefinedBehaviorSanitizer
#    (build-asan/), and with clang (build-clang/: its warnings differ; every
#    target, -Werror, not run), and the releases before store schemas 2, 3 and 4
#    from the repository's history (build-old/, build-v2/, build-v3/: the store
#    upgrade test opens stores they wrote);
# 3. builds, or reuses, the chroot holding a real Synapse (the first time takes a
#    few minutes and needs the network);
# 4. runs ctest on build/ (every test: unit, policy, integration, browser,
#    Ansible and systemd, valgrind) and on build-asan/ (unit, policy and
#    integration: every test of the daemon's C);
# 5. builds the libFuzzer targets (build-fuzz/, clang) and runs each one
#    briefly over its seed corpus (fuzz/run.sh); any finding fails the run.
#
# Exits non-zero if anything fails.  Needs no terminal (CI=true, no stdin).
#
# Environment:
#   THRESHOLD_ASAN_INTEGRATION=0  skip the integration tests on the sanitizer build
#   THRESHOLD_JOBS=N              parallel build jobs (default: number of CPUs)
#   THRESHOLD_FUZZ_SECONDS=N      seconds per fuzz target (default 12; 0 skips the step)
set -euo pipefail
cd "$(dirname "$0")/.."

jobs=${THRESHOLD_JOBS:-$(nproc)}

step() { printf '\n== %s\n' "$*"; }

# Can clang link a libFuzzer target with the sanitizers (libclang-rt-14-dev)?
fuzz_toolchain() {
  command -v clang >/dev/null 2>&1 || return 1
  local d rc
  d=$(mktemp -d)
  printf '%s\n' '#include <stddef.h>' '#include <stdint.h>' \
    'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);' \
    'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }' >"$d/t.c"
  clang -fsanitize=fuzzer,address,undefined "$d/t.c" -o "$d/t" >/dev/null 2>&1
  rc=$?
  rm -rf "$d"
  return $rc
}

step "dependencies"
bash scripts/install-deps.sh </dev/null

step "source check (scripts/checksrc.py)"
/usr/bin/python3 scripts/checksrc.py

step "build (build/)"
cmake -S . -B build
cmake --build build -j"$jobs"

step "build with ASan + UBSan (build-asan/)"
cmake -S . -B build-asan -DTHRESHOLD_SANITIZE=ON
cmake --build build-asan -j"$jobs"

# tests/integration/test_store_upgrade.py opens a store written by the last
# release with store schema version 1: that release is built from this
# repository's own history (the commit before schema 2's).
old_release=5ca0e4e^
if git rev-parse --verify -q "$old_release^{commit}" >/dev/null 2>&1; then
  step "the release before store schema 2 (build-old/), for the upgrade test"
  rm -rf build-old
  mkdir -p build-old/src
  git archive "$old_release" | tar -x -C build-old/src
  cmake -S build-old/src -B build-old/build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build build-old/build -j"$jobs" --target threshold >/dev/null
  export THRESHOLD_OLD_BIN=$PWD/build-old/build/threshold
else
  echo "test.sh: no git history here: the store upgrade test is skipped"
fi
# ... and one written by the last release with schema version 2 (the commit
# before schema 3's: a key per transaction in txns).
v2_release=19baba2
if git rev-parse --verify -q "$v2_release^{commit}" >/dev/null 2>&1; then
  step "the release before store schema 3 (build-v2/), for the upgrade test"
  rm -rf build-v2
  mkdir -p build-v2/src
  git archive "$v2_release" | tar -x -C build-v2/src
  cmake -S build-v2/src -B build-v2/build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build build-v2/build -j"$jobs" --target threshold >/dev/null
  export THRESHOLD_V2_BIN=$PWD/build-v2/build/threshold
fi
# ... and one written by the last release with schema version 3 (the commit
# before schema 4's: every audit record straight into audit_index).
v3_release=bedc28b
if git rev-parse --verify -q "$v3_release^{commit}" >/dev/null 2>&1; then
  step "the release before store schema 4 (build-v3/), for the upgrade test"
  rm -rf build-v3
  mkdir -p build-v3/src
  git archive "$v3_release" | tar -x -C build-v3/src
  cmake -S build-v3/src -B build-v3/build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build build-v3/build -j"$jobs" --target threshold >/dev/null
  export THRESHOLD_V3_BIN=$PWD/build-v3/build/threshold
fi

step "build with clang (build-clang/, warnings only)"
cmake -S . -B build-clang -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-clang -j"$jobs"

step "Synapse chroot"
bash tests/harness/synapse-chroot.sh </dev/null
if [ "$(id -u)" -eq 0 ] && command -v systemd-nspawn >/dev/null; then
  step "Debian 12 systemd image (tests/systemd)"
  bash tests/harness/systemd-image.sh </dev/null
fi

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

failed=()

step "tests: build/"
ctest --test-dir build --output-on-failure </dev/null || failed+=("build")

# Under ASan/UBSan every test of the daemon's C runs: unit, policy and the
# integration suite (the daemon against real Synapse, Kannel and coturn,
# the gateway's every endpoint included).  The browser suite (the page in
# Chromium, against build/'s daemon above) and the Ansible role's check are
# left to build/: they drive the same gateway code the integration suite
# does, and doubling them would take the run past its time.
step "tests: build-asan/"
asan_args=(-LE "^(browser|ansible)$")
if [ "${THRESHOLD_ASAN_INTEGRATION:-1}" = 0 ]; then
  asan_args=(-LE "^(browser|ansible|integration)$")
fi
ctest --test-dir build-asan --output-on-failure "${asan_args[@]}" </dev/null || failed+=("build-asan")

fuzz_seconds=${THRESHOLD_FUZZ_SECONDS:-12}
step "fuzz targets, ${fuzz_seconds} s each (build-fuzz/)"
if [ "$fuzz_seconds" = 0 ]; then
  echo "skipped (THRESHOLD_FUZZ_SECONDS=0)"
elif ! fuzz_toolchain; then
  # scripts/install-deps.sh installs both, so this is a machine set up otherwise
  echo "SKIPPED: clang cannot link a libFuzzer target here (clang and libclang-rt-14-dev needed)" >&2
elif cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DTHRESHOLD_FUZZ=ON >/dev/null &&
     cmake --build build-fuzz -j"$jobs" --target fuzz_targets; then
  bash fuzz/run.sh "$fuzz_seconds" </dev/null || failed+=("fuzz")
else
  failed+=("build-fuzz")
fi

if [ ${#failed[@]} -ne 0 ]; then
  printf '\ntest.sh: FAILED in: %s\n' "${failed[*]}" >&2
  exit 1
fi
printf '\ntest.sh: all tests passed\n'
