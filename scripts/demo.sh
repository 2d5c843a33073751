#!/usr/bin/env bash
# Threshold running next to a real Synapse on this machine.  From a fresh
# Debian 12 machine:
#
#   bash scripts/demo.sh
#
# Installs the packages Threshold needs, builds it (build/), builds or reuses a
# chroot holding Debian's Synapse (the first time takes a few minutes and needs
# the network), starts Synapse on 127.0.0.1, creates a staff login, and runs
# Threshold in the foreground.  Ctrl-C stops Threshold, then Synapse.
#
# Everything the demo writes lives in one directory (default ./demo-data, or
# THRESHOLD_DEMO_DIR, or the first argument): Threshold's config, registration
# and store, Synapse's state, and the staff password.  A second run reuses it.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
data=${1:-${THRESHOLD_DEMO_DIR:-$repo/demo-data}}
PY=/usr/bin/python3
harness=(env "$PY" "$repo/tests/harness/synapse.py")

say() { printf 'demo: %s\n' "$*" >&2; }

say "installing dependencies"
bash scripts/install-deps.sh </dev/null >&2

say "building"
cmake -S . -B build >/dev/null
cmake --build build -j"$(nproc)" >&2
bin=$repo/build/threshold

say "preparing Synapse (the first run builds its chroot: a few minutes)"
bash tests/harness/synapse-chroot.sh </dev/null >/dev/null

mkdir -p "$data"
chmod 700 "$data"
data=$(cd "$data" && pwd)
config=$data/threshold.yaml
reg=$data/registration.yaml
pwfile=$data/staff-password

if [ ! -f "$config" ]; then
  hs_port=$("${harness[@]}" free-port --prefer 8008)
  as_port=$("${harness[@]}" free-port --prefer 29333)
  if [ "$as_port" = "$hs_port" ]; then
    as_port=$("${harness[@]}" free-port)
  fi
  say "writing $config"
  umask 077
  cat >"$config" <<EOF
# Threshold demo configuration (written by scripts/demo.sh; edit freely, it is
# reused by the next run).  Every key is described in config.example.yaml.
homeserver:
  url: http://127.0.0.1:$hs_port
  server_name: localhost
appservice:
  id: threshold
  listen_address: 127.0.0.1
  listen_port: $as_port
  url: http://127.0.0.1:$as_port
  registration: $reg
  bot_localpart: threshold
  bot_displayname: Threshold
store:
  path: $data/store
roles:
  # the demo's staff login; add your colleagues' user ids here
  staff: ["@staff:localhost"]
log:
  level: info
EOF
  umask 022
fi

if [ ! -f "$reg" ]; then
  say "writing $reg"
  "$bin" -c "$config" generate-registration -o "$reg"
fi

hs_url=$("$PY" -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["homeserver"]["url"])' "$config")
hs_port=${hs_url##*:}
hs_port=${hs_port%%/*}
bot=$("$PY" -c 'import sys, yaml
c = yaml.safe_load(open(sys.argv[1]))
print("@%s:%s" % (c["appservice"].get("bot_localpart", "threshold"), c["homeserver"]["server_name"]))' "$config")

stop_synapse() {
  say "stopping Synapse"
  "${harness[@]}" stop --dir "$data/synapse" || true
}
trap stop_synapse EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "starting Synapse"
url=$("${harness[@]}" start --dir "$data/synapse" --registration "$reg" --port "$hs_port")
if [ "$url" != "${hs_url%/}" ]; then
  say "Synapse answers on $url but $config says $hs_url; fix one of them"
  exit 1
fi

if [ ! -s "$pwfile" ]; then
  (umask 077; "$PY" -c 'import secrets; print(secrets.token_urlsafe(12))' >"$pwfile")
fi
password=$(cat "$pwfile")

# A demo guest, made once and reused: what a service user is to staff.
guestfile=$data/demo-guest.json
if [ ! -s "$guestfile" ]; then
  "$bin" -c "$config" guest create --json >"$guestfile" 2>/dev/null
fi
guest_id=$(sed -n 's/.*"user_id": *"\([^"]*\)".*/\1/p' "$guestfile")
guest_name=$(sed -n 's/.*"pseudonym": *"\([^"]*\)".*/\1/p' "$guestfile")
"${harness[@]}" register --dir "$data/synapse" --user staff --password-file "$pwfile" \
  --exists-ok >/dev/null

cat <<EOF

================================================================================
 Threshold demo
================================================================================
 Homeserver:    $url   (server name "localhost"; listens on this machine only)
 Staff login:   user "staff", password "$password"
                (kept in $pwfile)

 What to try:
   1. Open a Matrix client on this machine (any client that lets you type a
      homeserver URL) and log in to $url as staff.
      From another machine, forward the port first:
        ssh -L $hs_port:127.0.0.1:$hs_port <this machine>
   2. Create a room and invite $bot. The bot joins within a second.
   3. Send:  !threshold ping
      The bot answers with a "pong" notice, as a reply to your message.
   4. A demo guest exists: "$guest_name" ($guest_id).
      Invite it to your room: Threshold declines the invite for the guest and
      tells you why (guests are reached only through rooms Threshold manages).
      See it recorded:  $bin -c $config audit list
   (The guest web page and its link come with the guest gateway.)

 Threshold's log follows.  Press Ctrl-C to stop Threshold and then Synapse.
 Data: $data and Synapse's database in the chroot.  To start from scratch:
   $PY tests/harness/synapse.py stop --dir "$data/synapse" --purge; rm -r "$data"
================================================================================

EOF

"$bin" -c "$config" serve
