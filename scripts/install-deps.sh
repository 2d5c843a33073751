#!/usr/bin/env bash
# Installs every Debian package Threshold needs to build, run and test, then
# the npm packages of the browser tests (tests/browser) and of the benchmark
# peer (bench/peer), each from its lockfile.
# Idempotent: packages already present are left alone. Needs root (or sudo).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)

# What builds Threshold: the compiler, cmake and the libraries it links, from
# scripts/packages/build.txt (the Ansible role installs the same list).
mapfile -t pkgs < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$here/scripts/packages/build.txt")
if [ ${#pkgs[@]} -eq 0 ]; then
  echo "install-deps: no packages read from $here/scripts/packages/build.txt" >&2
  exit 1
fi
pkgs+=(
  # clang builds and the libFuzzer targets; the LMDB tools
  clang libclang-rt-14-dev lmdb-utils
  # real-homeserver harness and independent client
  debootstrap python3-matrix-nio python3-olm python3-pytest
  python3-jsonschema python3-yaml python3-requests
  # reading the QR codes the tests make
  zbar-tools
  # memory checking
  valgrind
  # misc tools the scripts use
  curl ca-certificates procps iproute2
  # browser tests of the guest page: Debian's Chromium (/usr/bin/chromium),
  # driven by playwright-core from npm; a font with Arabic glyphs
  chromium fonts-dejavu-core
  # the TURN server that relays calls (docs/calls.md): the demo and the call
  # tests run one on loopback
  coturn
  # the Ansible role's test (tests/ansible) and its unit under a real
  # systemd in a container (tests/systemd)
  ansible-core systemd-container
  # the SMS channel's end-to-end test: Kannel's bearerbox and smsbox, and
  # its fake SMSC (fakesmsc) from kannel-extras
  kannel kannel-extras
)
# Node.js and npm from Debian only when the machine has no node of its own.
if ! command -v node >/dev/null 2>&1; then
  pkgs+=(nodejs npm)
fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#pkgs[@]} packages present"
else
  SUDO=
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The browser tests' packages, exactly as the lockfile says (no browser
# download: playwright-core drives the Chromium installed above).
echo "install-deps: npm ci in tests/browser"
(cd "$here/tests/browser" && CI=true npm ci --no-audit --no-fund --loglevel=error </dev/null)

# The Node peer bench/peer_compare.py measures Threshold against (a few
# seconds: matrix-appservice and express, from the lockfile).
echo "install-deps: npm ci in bench/peer"
(cd "$here/bench/peer" && CI=true npm ci --no-audit --no-fund --loglevel=error </dev/null)

# The call tests' staff side: matrix-js-sdk and esbuild from tests/calls's
# lockfile, bundled for a browser page (tests/calls/build/staff.js).
echo "install-deps: npm ci in tests/calls"
(cd "$here/tests/calls" && CI=true npm ci --no-audit --no-fund --loglevel=error </dev/null &&
  npm run --silent bundle </dev/null)
