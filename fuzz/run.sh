#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for SECONDS each over its seed
# corpus, one after another, and fails if any finds a crash, a sanitizer
# report, a leak, a hang or a broken invariant.  Needs build-fuzz/ built:
#
#   cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DTHRESHOLD_FUZZ=ON
#   cmake --build build-fuzz --target fuzz_targets
#   bash fuzz/run.sh 20                      # CI: 20 s each
#   bash fuzz/run.sh 1800                    # the documented long run
#   bash fuzz/run.sh 180 fuzz_txn fuzz_config
#
# New inputs go to build-fuzz/fuzz-work/<target>/ (kept between runs, so a
# longer run starts where the last one stopped), findings to
# build-fuzz/fuzz-artifacts/, each target's output to
# build-fuzz/fuzz-logs/<target>.log.  Prints one line per target:
# executions, executions per second, inputs added, and the result.
#
# Environment: FUZZ_RUNS caps the executions of each target (default: no
# cap beyond the time); FUZZ_BUILD names the build directory.
set -uo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-20}
shift || true
build=${FUZZ_BUILD:-build-fuzz}

# target  corpus-dir  max_len  dictionary (or -)
table=(
  "fuzz_transaction transaction  8192  transaction.dict"
  "fuzz_txn         txn          4096  txn.dict"
  "fuzz_config      config       4096  config.dict"
  "fuzz_registration registration 4096 registration.dict"
  "fuzz_command     command      1024  command.dict"
  "fuzz_audit_export audit_export 16384 -"
  "fuzz_audit_store audit_store  16384 -"
  "fuzz_gateway     gateway      65536 -"
  "fuzz_sdp         sdp          16384 -"
  "fuzz_witness     witness      16384 -"
  "fuzz_sms_form    sms_form     4096  -"
  "fuzz_sms_kannel  sms_kannel   4096  -"
  "fuzz_sms_twilio  sms_twilio   8192  -"
  "fuzz_whatsapp    whatsapp     65536 -"
  "fuzz_helper      helper       4096  -"
  "fuzz_stun        stun         2048  -"
)

want=("$@")
mkdir -p "$build/fuzz-work" "$build/fuzz-artifacts" "$build/fuzz-logs"
failed=()
for row in "${table[@]}"; do
  read -r target corpus maxlen dict <<<"$row"
  if [ ${#want[@]} -gt 0 ] && [[ " ${want[*]} " != *" $target "* ]]; then
    continue
  fi
  bin="$build/fuzz/$target"
  if [ ! -x "$bin" ]; then
    echo "fuzz: $target: not built ($bin)" >&2
    failed+=("$target")
    continue
  fi
  work="$build/fuzz-work/$target"
  log="$build/fuzz-logs/$target.log"
  mkdir -p "$work"
  args=(-max_total_time="$seconds" -max_len="$maxlen" -timeout=10 -print_final_stats=1
        -close_fd_mask=2 -artifact_prefix="$build/fuzz-artifacts/$target-")
  [ "$dict" != - ] && args+=(-dict="fuzz/$dict")
  [ -n "${FUZZ_RUNS:-}" ] && args+=(-runs="$FUZZ_RUNS")
  start=$(date +%s)
  "$bin" "${args[@]}" "$work" "fuzz/corpus/$corpus" >"$log" 2>&1
  rc=$?
  took=$(( $(date +%s) - start ))
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  added=$(sed -n 's/^stat::new_units_added: *//p' "$log")
  if [ $rc -eq 0 ]; then
    result=ok
  else
    result="FAILED (exit $rc; see $log)"
    failed+=("$target")
  fi
  printf 'fuzz: %-18s %5ss %10s runs %7s/s %5s new  %s\n' "$target" "$took" "${runs:-?}" \
    "${rate:-?}" "${added:-?}" "$result"
  if [ $rc -ne 0 ]; then
    grep -E 'invariant broken|ERROR: |SUMMARY|Test unit written' "$log" | head -n 8 | sed 's/^/    /'
  fi
done
if [ ${#failed[@]} -ne 0 ]; then
  echo "fuzz: FAILED: ${failed[*]}" >&2
  exit 1
fi
