#!/usr/bin/env bash
# Bytes per minute each way of a guest's call, audio and video, on the
# guest's side, against the budgets in docs/calls.md: the browser test stack
# (real Synapse, coturn on loopback, the guest page and matrix-js-sdk's call
# code in two Chromiums with a fake microphone and camera playing
# speech-like input half the time).  Prints a table; exits 0 unless the
# set-up fails.  THRESHOLD_CALL_BENCH_SECONDS: how long each call is
# measured (default 60).
set -euo pipefail
cd "$(dirname "$0")/.."
export THRESHOLD_CALL_BENCH=1 THRESHOLD_SCREENSHOTS=off
export THRESHOLD_BIN=${THRESHOLD_BIN:-$PWD/build/threshold} THRESHOLD_SOURCE_DIR=$PWD
exec /usr/bin/python3 -m pytest -q -s -p no:cacheprovider tests/browser/test_calls.py -k bench_call_data
