#!/usr/bin/env bash
# Installs every Debian package Threshold needs to build, run and test.
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
)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#pkgs[@]} packages present"
  exit 0
fi

SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
