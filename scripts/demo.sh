#!/usr/bin/env bash
# Threshold running next to a real Synapse on this machine.  From a fresh
# Debian 12 machine:
#
#   bash scripts/demo.sh
#
# Installs the packages Threshold needs, builds it (build/), builds or reuses a
# chroot holding Debian's Synapse (the first time takes a few minutes and needs
# the network), starts Synapse on 127.0.0.1, creates a staff login, starts
# what the demo's calls and texts need (coturn; Kannel's bearerbox and smsbox
# with a fake SMSC), and runs Threshold in the foreground.  However it ends
# (Ctrl-C, SIGTERM or SIGHUP, Threshold stopping by itself, a step that fails)
# it stops what it started, by pid: Threshold, Kannel, coturn, then Synapse.
# A Synapse or Threshold left running by an earlier run that could not clean
# up (kill -9) is found by its pid file and stopped, and the demo says so;
# coturn and Kannel likewise, before they are started again.
#
# Everything the demo writes lives in one directory (default ./demo-data, or
# THRESHOLD_DEMO_DIR, or the first argument): Threshold's config, registration
# and store, Synapse's state, and the staff password.  A second run reuses it.
# THRESHOLD_DEMO_SKIP_SETUP=1 skips installing, building and preparing the
# chroot (when build/threshold and the chroot are there already).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
data=${1:-${THRESHOLD_DEMO_DIR:-$repo/demo-data}}
PY=/usr/bin/python3
harness=(env "$PY" "$repo/tests/harness/synapse.py")
coturn=(env "$PY" "$repo/tests/harness/coturn.py")
kannel=(env "$PY" "$repo/tests/harness/kannel.py")

say() { printf 'demo: %s\n' "$*" >&2; }

bin=$repo/build/threshold
if [ "${THRESHOLD_DEMO_SKIP_SETUP:-}" != 1 ]; then
  say "installing dependencies"
  bash scripts/install-deps.sh </dev/null >&2

  say "building"
  cmake -S . -B build >/dev/null
  cmake --build build -j"$(nproc)" >&2

  say "preparing Synapse (the first run builds its chroot: a few minutes)"
  bash tests/harness/synapse-chroot.sh </dev/null >/dev/null
fi

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

# What this run started, stopped by pid whatever way it ends.  The EXIT trap
# runs with errexit off: a step of the clean-up that fails (Threshold gone
# already) must not skip the next.
serve_pid=
synapse_up=
turn_up=
sms_up=
pidfile=$data/threshold.pid
stop_threshold() { # PID: SIGTERM, wait up to 20 s, then SIGKILL
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 200); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  say "Threshold (pid $pid) did not stop within 20 s of SIGTERM; killing it"
  kill -KILL "$pid" 2>/dev/null || true
}
stop_synapse() {
  say "stopping Synapse"
  "${harness[@]}" stop --dir "$data/synapse" || say "stopping Synapse failed; see $data/synapse"
}
cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM HUP
  if [ -n "$serve_pid" ]; then
    if kill -0 "$serve_pid" 2>/dev/null; then
      say "stopping Threshold (pid $serve_pid)"
      stop_threshold "$serve_pid"
    fi
    wait "$serve_pid" 2>/dev/null
    rm -f "$pidfile"
  fi
  [ -n "$sms_up" ] && { say "stopping Kannel"; "${kannel[@]}" stop --dir "$data/kannel"; }
  [ -n "$turn_up" ] && { say "stopping coturn"; "${coturn[@]}" stop --dir "$data/coturn"; }
  [ -n "$synapse_up" ] && stop_synapse
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# Left by an earlier run that could not clean up (kill -9, a power cut):
# never reused unknowingly.
if [ -s "$pidfile" ]; then
  old=$(cat "$pidfile")
  if [ -r "/proc/$old/cmdline" ] && tr '\0' ' ' <"/proc/$old/cmdline" | grep -qF -- "$config"; then
    say "a Threshold from an earlier run (pid $old) is still running; stopping it"
    stop_threshold "$old"
  fi
  rm -f "$pidfile"
fi
if old=$("${harness[@]}" pid --dir "$data/synapse" 2>/dev/null); then
  say "a Synapse from an earlier run (pid $old) is still running; stopping it"
  stop_synapse
fi

say "starting Synapse"
synapse_up=1
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
"${harness[@]}" register --dir "$data/synapse" --user staff --password-file "$pwfile" \
  --exists-ok >/dev/null

# The demo service's staff room: made once by the staff user, kept in the
# data directory; the service in the config points at it.
roomfile=$data/demo-staff-room
staff_api() { # METHOD PATH [JSON]: a Client-Server call as staff; prints the answer
  "$PY" - "$hs_url" "$password" "$@" <<'PYEOF'
import json, sys, requests
hs, password, method, path = sys.argv[1:5]
body = json.loads(sys.argv[5]) if len(sys.argv) > 5 else None
s = requests.Session()
r = s.post(hs + "/_matrix/client/v3/login", json={"type": "m.login.password",
           "identifier": {"type": "m.id.user", "user": "staff"}, "password": password}, timeout=30)
r.raise_for_status()
s.headers["Authorization"] = "Bearer " + r.json()["access_token"]
r = s.request(method, hs + path, json=body, timeout=30)
print(r.text)
sys.exit(0 if r.status_code < 400 else 1)
PYEOF
}
if [ ! -s "$roomfile" ]; then
  say "making the demo service's staff room"
  staff_api POST /_matrix/client/v3/createRoom '{"name": "Demo helpline staff", "preset": "private_chat"}' |
    "$PY" -c 'import json, sys; print(json.load(sys.stdin)["room_id"])' >"$roomfile"
fi
staff_room=$(cat "$roomfile")
if ! grep -q '^services:' "$config"; then
  gw_port=$("${harness[@]}" free-port --prefer 8080)
  cat >>"$config" <<CFG
gateway:
  listen_address: 127.0.0.1
  listen_port: $gw_port
  public_url: http://127.0.0.1:$gw_port
  page_title: Notes
services:
  demo:
    display_name: Demo helpline
    staff_room: "$staff_room"
    greeting: Hello, you are through to the demo helpline. Someone will be with you soon.
    notice_version: "1"
    public_entry: true
CFG
fi
gw_url=$("$PY" -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["gateway"]["public_url"])' "$config")

# Calls (docs/calls.md): a coturn on loopback, relay only, whose shared
# secret Threshold mints the guests' TURN credentials with.  One left by an
# earlier run is stopped first (by its pid file).
"${coturn[@]}" stop --dir "$data/coturn"
if [ ! -s "$data/turn-secret" ]; then
  (umask 077; "$PY" -c 'import secrets; print(secrets.token_hex(32))' >"$data/turn-secret")
fi
say "starting coturn on 127.0.0.1 (relay only)"
turn_up=1
turn_port=$("$PY" -c 'import sys, yaml; c = yaml.safe_load(open(sys.argv[1])).get("calls") or {}
u = (c.get("turn_uris") or [""])[0]; print(u.split(":")[2].split("?")[0] if u.count(":") == 2 else "")' "$config")
turn_uri=$("${coturn[@]}" start --dir "$data/coturn" --secret-file "$data/turn-secret" ${turn_port:+--port "$turn_port"})
if ! grep -q '^calls:' "$config"; then
  cat >>"$config" <<CFG
calls:
  enabled: true
  turn_uris: ["$turn_uri"]
  turn_shared_secret: "$(cat "$data/turn-secret")"
CFG
elif ! grep -qF "$turn_uri" "$config"; then
  say "coturn listens at $turn_uri but $config names another; fix calls.turn_uris"
  exit 1
fi

# Texts (docs/channels.md): Kannel's bearerbox with a fake SMSC and smsbox,
# on loopback, calling Threshold's SMS listener; scripts/text.py is the
# person's phone (Kannel's fakesmsc).  The demo service takes texts at a
# number kept for drama.  One left by an earlier run is stopped first.
sms_number=+447700900000
if [ ! -s "$data/sms-secret" ]; then
  (umask 077; "$PY" -c 'import secrets; print(secrets.token_hex(16))' >"$data/sms-secret")
fi
if ! grep -q '^sms:' "$config"; then
  sms_port=$("${harness[@]}" free-port --prefer 29336)
  sendsms_port=$("${harness[@]}" free-port --prefer 13013)
else
  read -r sms_port sendsms_port < <("$PY" -c 'import sys, urllib.parse, yaml
c = yaml.safe_load(open(sys.argv[1]))["sms"]
print(c["listen_port"], urllib.parse.urlsplit(c["kannel_sendsms_url"]).port)' "$config")
fi
"${kannel[@]}" stop --dir "$data/kannel"
say "starting Kannel on 127.0.0.1 (bearerbox with a fake SMSC, smsbox)"
sms_up=1
sendsms_url=$("${kannel[@]}" start --dir "$data/kannel" --threshold-port "$sms_port" \
  --secret-file "$data/sms-secret" --service-number "$sms_number" --sendsms-port "$sendsms_port")
if ! grep -q '^sms:' "$config"; then
  sed -i "s/^  demo:\$/  demo:\n    sms_number: \"$sms_number\"/" "$config"
  cat >>"$config" <<CFG
sms:
  enabled: true
  driver: kannel
  listen_address: 127.0.0.1
  listen_port: $sms_port
  secret: "$(cat "$data/sms-secret")"
  kannel_sendsms_url: $sendsms_url
  kannel_username: threshold
  kannel_password: sendsms-pass
CFG
elif ! grep -qF "$sendsms_url" "$config"; then
  say "Kannel's sendsms listens at $sendsms_url but $config names another; fix sms.kannel_sendsms_url"
  exit 1
fi

"$bin" -c "$config" serve &
serve_pid=$!
echo "$serve_pid" >"$pidfile"
for _ in $(seq 1 100); do
  kill -0 "$serve_pid" 2>/dev/null || break
  "$PY" -c 'import sys, requests; requests.get(sys.argv[1], timeout=1).raise_for_status()' \
    "$gw_url/_threshold/gateway/v1/page" >/dev/null 2>&1 && break
  sleep 0.2
done
# The bot joins the staff room when staff invite it (inviting it again, when
# it is in already, is refused harmlessly).
staff_api POST "/_matrix/client/v3/rooms/$staff_room/invite" "{\"user_id\": \"$bot\"}" >/dev/null 2>&1 || true
link=$("$bin" -c "$config" invite create --service demo --expires 7d 2>/dev/null)

cat <<EOF

================================================================================
 Threshold demo
================================================================================
 Homeserver:    $url   (server name "localhost"; listens on this machine only)
 Staff login:   user "staff", password "$password"
                (kept in $pwfile)

 A guest's link (open it in a phone-sized browser window; one use, 7 days):
   $link
 The service's public entry link (anyone with it may start a conversation):
   $gw_url/#service=demo

 What to try:
   1. Open the guest link, agree to the notice and write something.
   2. Play the staff member, either
      - in a terminal on this machine (no Matrix client needed):
          $repo/scripts/staff.py --data $data waiting
          $repo/scripts/staff.py --data $data join PSEUDONYM
          $repo/scripts/staff.py --data $data chat ROOM     (Ctrl-D leaves)
          $repo/scripts/staff.py --data $data close ROOM
      - or in Element (any client that lets you type a homeserver URL): log
        in to $url as staff.  From a laptop, forward both ports first:
          ssh -L $hs_port:127.0.0.1:$hs_port -L ${gw_url##*:}:127.0.0.1:${gw_url##*:} <this machine>
        then open "Demo helpline staff": the bot posts "... is waiting"
        there with a link; join the conversation and reply.
   3. Text the helpline as a person would (no phone needed: Kannel with a
      fake SMSC runs on this machine); it prints what comes back:
          $repo/scripts/text.py --data $data "Hello"
      The language menu comes first, then the notice; YES opens the
      conversation, and staff see "... (by SMS) is waiting".
   4. Calls: the guest page's call button rings staff's Element (Element
      Web or Desktop; a call button shows in the conversation room) through
      the coturn on $turn_uri, relay only.
   5. In the conversation room: !threshold note TEXT (the guest never sees
      it), !threshold close.  In the staff room: !threshold invite.
   6. See what was recorded:  $bin -c $config audit list
      Check the set-up:        $bin -c $config doctor

 Threshold's log follows.  Press Ctrl-C to stop Threshold, Kannel, coturn
 and Synapse.
 Data: $data and Synapse's database in the chroot.  To start from scratch:
   $PY tests/harness/synapse.py stop --dir "$data/synapse" --purge; rm -r "$data"
================================================================================

EOF

# Until Threshold ends.  A signal to this script runs its trap (exit, then
# cleanup) as soon as it arrives, so coming back here means Threshold
# stopped by itself: say so, and let cleanup stop Synapse.
set +e
wait "$serve_pid"
status=$?
set -e
serve_pid=
rm -f "$pidfile"
say "Threshold exited by itself (status $status); see its log above"
exit "$status"
