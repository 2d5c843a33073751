#!/usr/bin/env bash
# Builds (once) a Debian-unstable chroot holding Debian's matrix-synapse, cached
# outside the repository, and prints its path. Later calls reuse the cache.
#
# Debian 12 has no matrix-synapse package; unstable does. The chroot shares the
# host's network, so Synapse inside it listens on the host's loopback.
#
# Environment:
#   THRESHOLD_SYNAPSE_ROOT  where the chroot lives (default /var/cache/threshold/synapse-sid)
set -euo pipefail

root=${THRESHOLD_SYNAPSE_ROOT:-/var/cache/threshold/synapse-sid}
stamp="$root/.threshold-ready"

if [ -f "$stamp" ]; then
  echo "$root"
  exit 0
fi

SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo

# The mirror comes from the host's own apt configuration; nothing is hard-coded.
mirror=
for f in /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] || continue
  mirror=$(awk '/^URIs:/ {print $2; exit}' "$f")
  case "$mirror" in *security*) mirror= ;; esac
  [ -n "$mirror" ] && break
done
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
  mirror=$(awk '$1=="deb" && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list)
fi
if [ -z "$mirror" ]; then
  echo "synapse-chroot: cannot find a Debian mirror in the host's apt configuration" >&2
  exit 1
fi

command -v debootstrap >/dev/null || { echo "synapse-chroot: debootstrap missing; run scripts/install-deps.sh" >&2; exit 1; }

tmp="$root.partial"
$SUDO rm -rf "$tmp"
$SUDO mkdir -p "$(dirname "$root")"
echo "synapse-chroot: debootstrap sid into $tmp (a few minutes, once)" >&2
$SUDO debootstrap --variant=minbase sid "$tmp" "$mirror" >&2
$SUDO cp /etc/resolv.conf "$tmp/etc/resolv.conf"
# unstable's Release file may be past its Valid-Until date on snapshot mirrors
echo 'Acquire::Check-Valid-Until "false";' | $SUDO tee "$tmp/etc/apt/apt.conf.d/99threshold" >/dev/null
$SUDO chroot "$tmp" /usr/bin/env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
$SUDO chroot "$tmp" /usr/bin/env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -q --no-install-recommends matrix-synapse >&2
$SUDO chroot "$tmp" /usr/bin/apt-get clean
$SUDO rm -rf "$root"
$SUDO mv "$tmp" "$root"
$SUDO touch "$stamp"
echo "$root"
