#!/usr/bin/env bash
# Installs every Debian package Threshold needs to build, run and test, then
# the browser tests' npm packages (tests/browser, from its lockfile).
# Idempotent: packages already present are left alone. Needs root (or sudo).
set -euo pipefail

pkgs=(
  # build
  build-essential cmake pkg-config clang libclang-rt-14-dev
  # libraries Threshold links
  libolm-dev liblmdb-dev lmdb-utils libjansson-dev libcurl4-openssl-dev libqrencode-dev zlib1g-dev
  libmicrohttpd-dev libyaml-dev libssl-dev
  # real-homeserver harness and independent client
  debootstrap python3 python3-matrix-nio python3-olm python3-pytest
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
here=$(cd "$(dirname "$0")/.." && pwd)
echo "install-deps: npm ci in tests/browser"
(cd "$here/tests/browser" && CI=true npm ci --no-audit --no-fund --loglevel=error </dev/null)
