#!/usr/bin/env bash
# Builds (once) a Debian 12 root that boots systemd under systemd-nspawn, with
# Ansible and Threshold's run-time packages, cached outside the repository, and
# prints its path. tests/systemd boots it to run the role's unit under a real
# systemd. Debian 12's systemd is used on purpose: it is what the role targets,
# and it still boots on hosts whose cgroup tree is v1 or hybrid.
#
# Environment:
#   THRESHOLD_SYSTEMD_ROOT  where the image lives (default /var/cache/threshold/systemd-bookworm)
set -euo pipefail

here=$(cd "$(dirname "$0")/../.." && pwd)
root=${THRESHOLD_SYSTEMD_ROOT:-/var/cache/threshold/systemd-bookworm}
stamp="$root/.threshold-ready"

if [ -f "$stamp" ]; then
  echo "$root"
  exit 0
fi
[ "$(id -u)" -eq 0 ] || { echo "systemd-image: needs root (debootstrap)" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "systemd-image: debootstrap missing; run scripts/install-deps.sh" >&2; exit 1; }

# The mirror comes from the host's own apt configuration, as synapse-chroot.sh does.
mirror=
for f in /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] || continue
  mirror=$(awk '/^URIs:/ && $2 ~ /debian/ {print $2; exit}' "$f")
  case "$mirror" in *security*) mirror= ;; esac
  [ -n "$mirror" ] && break
done
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
  mirror=$(awk '$1=="deb" && $2 ~ /debian/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list)
fi
[ -n "$mirror" ] || { echo "systemd-image: cannot find a Debian mirror in the host's apt configuration" >&2; exit 1; }

runtime=$(sed 's/#.*//' "$here/scripts/packages/runtime.txt" | xargs)
tmp="$root.partial"
rm -rf "$tmp"
mkdir -p "$(dirname "$root")"
echo "systemd-image: debootstrap bookworm into $tmp (about a minute, once)" >&2
debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus bookworm "$tmp" "$mirror" >&2
cp /etc/resolv.conf "$tmp/etc/resolv.conf"
chroot "$tmp" /usr/bin/env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
# shellcheck disable=SC2086 # one package name a word
chroot "$tmp" /usr/bin/env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -q --no-install-recommends ansible-core python3-yaml $runtime >&2
# Synapse from the unstable chroot is bind-mounted here by the test.
mkdir -p "$tmp/opt/synapse-root"
chroot "$tmp" groupadd --system matrix-synapse
# no getty or journal persistence needed in a throwaway boot
chroot "$tmp" systemctl mask console-getty.service getty@.service systemd-networkd-wait-online.service >/dev/null 2>&1 || true
chroot "$tmp" /usr/bin/apt-get clean
rm -rf "$root"
mv "$tmp" "$root"
touch "$stamp"
echo "$root"
