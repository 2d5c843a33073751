#!/usr/bin/python3
"""A soak: the daemon under a steady mixed load for a long time, watching its
memory and file descriptors for growth.

Builds (unless --no-build) and starts the release binary with a scripted fake
homeserver (tests/integration/fakehs.py: the outbox succeeds, so conversations
open) and one service, "helpline", with a public entry.  The soak plays the
homeserver over the AS API and the guests over the gateway, at once:

  - AS transactions: messages and memberships in unmanaged rooms the bot was
    invited to, and in managed ones (the portal rooms the fake made: the
    guests' own messages echoed back, a local user who is not staff joining);
    a stranger from another server inviting a guest; staff commands
    (!threshold ping/help/version/note/invite/close); staff replies into the
    portal rooms; a lead's !audit question now and then;
  - guests: redeem the public entry, send messages with local ids (409 while
    the room is being made is expected), long-poll their feed, then leave,
    erase, or walk away (staff close those conversations later).

Every 10 s it reads VmRSS, RssAnon and RssFile from /proc/<pid>/status and
counts /proc/<pid>/fd.  After the warm-up it reports the growth (last minus
first sample after warm-up) and a least-squares slope per hour, the request
counts and error rate per kind, then stops the daemon with SIGTERM (exit 0,
"stopped cleanly") and runs `threshold audit verify`.

A measurement, not a test: it exits 0 unless the set-up fails.

    bench/soak.py [--minutes 30] [--quick] [--only KIND] [--guests N] [--keep]
"""

import argparse
import faulthandler
import http.client
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from fakehs import SEND_RE, FakeHomeserver  # noqa: E402
from standalone import REMOTE_SERVER, Standalone, free_port, member_event, message_event  # noqa: E402

API = "/_threshold/gateway/v1"
MiB = 1024 * 1024
SERVER = "localhost"
STAFF = "@staff:" + SERVER
LEAD = "@lead:" + SERVER
LOCAL_USERS = ["@member%d:%s" % (i, SERVER) for i in range(6)]
STRANGER = "@stranger:" + REMOTE_SERVER
STAFF_ROOM = "!staff:" + SERVER
SG_ROOM = "!safeguarding:" + SERVER
UNMANAGED = ["!ordinary%d:%s" % (i, SERVER) for i in range(8)]
CONSENT = {"version": "1", "language": "en", "agreed": True}
WAITING_RE = re.compile(r"^(.*) is waiting to talk to .*https://matrix\.to/#/(\S+)$")

# What the load is made of; --only picks some of them (for finding a leak).
KINDS = ["as_unmanaged", "as_managed", "as_stranger_invite", "as_staff_command", "as_staff_reply",
         "as_audit", "guest"]


# ---- measuring ---------------------------------------------------------------------


def proc_status(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                out[k] = int(v.split()[0]) * 1024
            elif k == "Threads":
                out[k] = int(v)
    out["fds"] = len(os.listdir("/proc/%d/fd" % pid))
    # How much of RssFile is the store's map (LMDB's data.mdb).
    out["StoreRss"] = 0
    try:
        with open("/proc/%d/smaps" % pid) as f:
            in_store = False
            for line in f:
                if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                    in_store = line.rstrip().endswith("/data.mdb")
                elif in_store and line.startswith("Rss:"):
                    out["StoreRss"] += int(line.split()[1]) * 1024
    except OSError:
        pass
    return out


def slope_per_hour(points):
    """Least-squares slope of (seconds, value) points, per hour."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    sxx = sum((p[0] - mx) ** 2 for p in points)
    if sxx == 0:
        return 0.0
    return sum((p[0] - mx) * (p[1] - my) for p in points) / sxx * 3600


class Counts:
    """Requests per kind: statuses, and which of them count as errors."""

    def __init__(self):
        self.lock = threading.Lock()
        self.kinds = {}

    def add(self, kind, status, ok):
        with self.lock:
            k = self.kinds.setdefault(kind, {"n": 0, "errors": 0, "statuses": {}})
            k["n"] += 1
            k["statuses"][status] = k["statuses"].get(status, 0) + 1
            if not ok:
                k["errors"] += 1

    def snapshot(self):
        with self.lock:
            return json.loads(json.dumps(self.kinds))


# ---- the fake homeserver, read as the load goes ------------------------------------


class SoakHomeserver(FakeHomeserver):
    """The fake homeserver, telling the soak as it answers: the portal rooms
    (pseudonym -> room, from the bot's "X is waiting" notice in the staff
    room; room -> guest user id, from the guest's join) and each guest
    message it accepted (to echo it back, as a homeserver does)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.soak_lock = threading.Lock()
        self.room_of_name = {}  # pseudonym -> room
        self.user_in = {}       # room -> guest user id
        self.echo = []          # (room, user, content) not yet echoed
        self.hs_requests = 0    # requests the outbox made, all told

    def _ok(self, method, path, user, body):
        status, answer = super()._ok(method, path, user, body)
        unq = urllib.parse.unquote
        with self.soak_lock:
            self.hs_requests += 1
            if method == "POST" and path.endswith("/join") and user and "@guest_" in user:
                self.user_in[unq(path.split("/rooms/", 1)[1].rsplit("/", 1)[0])] = user
            m = SEND_RE.match(path)
            if m and method == "PUT" and isinstance(body, dict):
                room = unq(m.group(1))
                w = WAITING_RE.match(str(body.get("body", "")))
                if room == STAFF_ROOM and w:
                    self.room_of_name[w.group(1)] = w.group(2)
                elif user and "@guest_" in user and body.get("msgtype"):
                    self.echo.append((room, user, body))
        return status, answer

    def take_echoes(self, n):
        with self.soak_lock:
            out, self.echo = self.echo[:n], self.echo[n:]
            return out

    def portal(self, pseudonym):
        with self.soak_lock:
            room = self.room_of_name.get(pseudonym)
            return room, self.user_in.get(room) if room else None


# ---- the guests ------------------------------------------------------------------------


class Http:
    """One keep-alive connection; reconnects after an error."""

    def __init__(self, port, timeout=30):
        self.port, self.timeout = port, timeout
        self.conn = None

    def call(self, method, path, body=None, token=None, timeout=None):
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = "Bearer " + token
        data = json.dumps(body).encode() if body is not None else None
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port,
                                                       timeout=timeout or self.timeout)
            else:
                self.conn.timeout = timeout or self.timeout
                if self.conn.sock:
                    self.conn.sock.settimeout(self.conn.timeout)
            try:
                self.conn.request(method, path, body=data, headers=headers)
                r = self.conn.getresponse()
                raw = r.read()
                if r.getheader("Connection", "").lower() == "close":
                    self.close()
                try:
                    return r.status, json.loads(raw) if raw else {}
                except ValueError:
                    return r.status, {}
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if attempt:
                    raise
            except Exception:
                self.close()
                raise

    def close(self):
        if self.conn:
            self.conn.close()
            self.conn = None


class Soak:
    def __init__(self, args, d, hs, gw_port):
        self.args = args
        self.d = d
        self.hs = hs
        self.gw_port = gw_port
        self.counts = Counts()
        self.portals = hs
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.active = {}        # pseudonym -> guest dict, conversation in progress
        self.abandoned = []     # pseudonyms whose guest walked away (staff close them)
        self.pseudonyms = []    # every guest so far (for !audit guest)
        self.guest_users = []   # guest user ids seen (for strangers' invites)
        self.seq = 0
        self.samples = []       # (t, proc_status)
        self.only = set(args.only.split(",")) if args.only else set(KINDS)

    def next_id(self, prefix):
        with self.lock:
            self.seq += 1
            return "%s%d" % (prefix, self.seq)

    def gw(self, http_, kind, method, path, body=None, token=None, timeout=None, expect=(200, 202)):
        try:
            status, j = http_.call(method, API + path, body, token, timeout)
        except Exception as e:  # refused, reset, timed out
            self.counts.add(kind, "exc:" + type(e).__name__, False)
            return None, {}
        return status, j

    # One guest's life: redeem, wait for the room, talk, then leave/erase/walk away.
    def guest_life(self, http_, rnd):
        status, j = self.gw(http_, "redeem", "POST", "/redeem", {"service": "helpline", "consent": CONSENT})
        self.counts.add("redeem", status, status == 200)
        if status != 200:
            time.sleep(1)
            return
        token, name = j["session"], j["pseudonym"]
        g = {"token": token, "since": 0}
        with self.lock:
            self.pseudonyms.append(name)
            self.active[name] = g
        messages = rnd.randint(3, 12)
        sent = 0
        deadline = time.monotonic() + 60
        try:
            while sent < messages and not self.stop.is_set():
                lid = self.next_id("s")
                status, _ = self.gw(http_, "send", "POST", "/send",
                                    {"local_id": lid, "body": "message %d from %s" % (sent, name)}, token)
                if status == 409 and sent == 0 and time.monotonic() < deadline:
                    self.counts.add("send_409_while_waiting", 409, True)
                    time.sleep(0.25)
                    continue
                self.counts.add("send", status, status == 202)
                sent += 1
                # The page's feed loop: a long poll, woken by staff replies.
                for _ in range(rnd.randint(1, 2)):
                    if self.stop.is_set():
                        break
                    t = rnd.choice((0, 1000, 3000, 5000))
                    status, fj = self.gw(http_, "feed", "GET", "/feed?since=%d&timeout_ms=%d"
                                         % (g["since"], t), None, token, timeout=t / 1000 + 30)
                    self.counts.add("feed", status, status == 200)
                    if status == 200:
                        g["since"] = fj.get("next", g["since"])
                if rnd.random() < 0.2:
                    status, _ = self.gw(http_, "session", "GET", "/session", None, token)
                    self.counts.add("session", status, status == 200)
        finally:
            with self.lock:
                self.active.pop(name, None)
        if self.stop.is_set():
            return
        end = rnd.random()
        if end < 0.4:
            status, _ = self.gw(http_, "leave", "POST", "/leave", {}, token)
            self.counts.add("leave", status, status == 200)
        elif end < 0.7:
            status, _ = self.gw(http_, "erase", "POST", "/erase", {"confirm": True}, token)
            self.counts.add("erase", status, status == 200)
        else:
            with self.lock:
                self.abandoned.append(name)

    def guest_worker(self, n):
        rnd = random.Random(self.args.seed * 1000 + n)
        http_ = Http(self.gw_port)
        while not self.stop.is_set():
            self.guest_life(http_, rnd)
            self.stop.wait(rnd.uniform(0.2, 1.0))
        http_.close()

    # ---- the homeserver's side: AS transactions ---------------------------------

    def put(self, conn_box, kind, events):
        txn = self.next_id("soak-")
        try:
            if conn_box[0] is None:
                conn_box[0] = self.d.connection(30)
            status, _ = self.d.put_txn(txn, {"events": events}, conn=conn_box[0], timeout=30)
        except Exception as e:
            if conn_box[0]:
                conn_box[0].close()
            conn_box[0] = None
            self.counts.add(kind, "exc:" + type(e).__name__, False)
            return None
        self.counts.add(kind, status, status == 200)
        return status

    def ev_id(self):
        return "$" + self.next_id("ev")

    def as_worker(self):
        rnd = random.Random(self.args.seed)
        box = [None]
        staff_in = set()     # portal rooms staff joined
        echoed_join = set()  # portal rooms whose guest join was echoed
        last_audit = time.monotonic()
        audit_every = 20 if self.args.quick else 60
        period = 1.0 / self.args.as_rate
        nxt = time.monotonic()
        while not self.stop.is_set():
            nxt += period
            delay = nxt - time.monotonic()
            if delay > 0:
                self.stop.wait(delay)
            else:
                nxt = time.monotonic()
            with self.lock:
                live = [(name, self.portals.portal(name)) for name in self.active]
                abandoned = list(self.abandoned)
                names = list(self.pseudonyms[-50:])
            live = [(name, room, user) for name, (room, user) in live if room and user]
            for _, _, user in live:
                if user not in self.guest_users:
                    self.guest_users.append(user)
                    del self.guest_users[:-200]

            # The guests' own messages, echoed as the homeserver does; their joins first.
            echoes = self.portals.take_echoes(10)
            if echoes and "as_managed" in self.only:
                evs = []
                for room, user, content in echoes:
                    if room not in echoed_join:
                        echoed_join.add(room)
                        evs.append(member_event(self.ev_id(), room, user, user, "join"))
                    if isinstance(content, dict) and content.get("msgtype"):
                        e = message_event(self.ev_id(), room, user, content.get("body", ""))
                        e["content"] = content
                        evs.append(e)
                if evs:
                    self.put(box, "as_managed", evs)

            if time.monotonic() - last_audit > audit_every and "as_audit" in self.only:
                last_audit = time.monotonic()
                q = rnd.choice(["!audit recent"] + ["!audit guest " + n for n in names[-5:]])
                self.put(box, "as_audit", [message_event(self.ev_id(), SG_ROOM, LEAD, q)])
                continue

            kind = rnd.choices(["as_unmanaged", "as_managed", "as_stranger_invite", "as_staff_command",
                                "as_staff_reply"], weights=[3, 1, 1, 1, 4])[0]
            if kind not in self.only:
                continue
            evs = []
            if kind == "as_unmanaged":
                room = rnd.choice(UNMANAGED)
                who = rnd.choice(LOCAL_USERS)
                r = rnd.random()
                if r < 0.6:
                    evs.append(message_event(self.ev_id(), room, who, "chatter %d" % rnd.randrange(10**6)))
                elif r < 0.9:
                    evs.append(member_event(self.ev_id(), room, who, who, rnd.choice(["join", "leave"])))
                elif self.guest_users:
                    g = rnd.choice(self.guest_users)  # a guest turns up in an ordinary room: an alert
                    evs.append(member_event(self.ev_id(), room, g, g, "join"))
                    evs.append(member_event(self.ev_id(), room, g, g, "leave"))
            elif kind == "as_managed":
                if live:
                    _, room, _ = rnd.choice(live)
                    who = rnd.choice(LOCAL_USERS)  # not staff: Threshold removes them
                    evs.append(member_event(self.ev_id(), room, who, who, "join"))
                    evs.append(message_event(self.ev_id(), room, who, "hello?"))
            elif kind == "as_stranger_invite":
                if self.guest_users:
                    g = rnd.choice(self.guest_users)
                    evs.append(member_event(self.ev_id(), "!dm%d:%s" % (rnd.randrange(10**6), REMOTE_SERVER),
                                            STRANGER, g, "invite"))
            elif kind == "as_staff_command":
                r = rnd.random()
                if abandoned and r < 0.3:
                    name = abandoned[0]
                    room, _ = self.portals.portal(name)
                    with self.lock:
                        if name in self.abandoned:
                            self.abandoned.remove(name)
                    if room:
                        evs.append(message_event(self.ev_id(), room, STAFF, "!threshold close"))
                elif live and r < 0.5:
                    _, room, _ = rnd.choice(live)
                    evs.append(message_event(self.ev_id(), room, STAFF, "!threshold note called back"))
                elif r < 0.6:
                    evs.append(message_event(self.ev_id(), STAFF_ROOM, STAFF, "!threshold invite --uses 2"))
                else:
                    room = rnd.choice([STAFF_ROOM] + UNMANAGED)
                    evs.append(message_event(self.ev_id(), room, STAFF,
                                             rnd.choice(["!threshold ping", "!threshold help",
                                                         "!threshold version", "!threshold nonsense"])))
            elif kind == "as_staff_reply":
                if live:
                    _, room, _ = rnd.choice(live)
                    if room not in staff_in:
                        staff_in.add(room)
                        e = member_event(self.ev_id(), room, STAFF, STAFF, "join")
                        e["content"]["displayname"] = "Sam"
                        evs.append(e)
                    evs.append(message_event(self.ev_id(), room, STAFF, "reply %d" % rnd.randrange(10**6)))
            if evs:
                self.put(box, kind, evs)
            if len(staff_in) > 5000:
                staff_in.clear()
                echoed_join.clear()
        if box[0]:
            box[0].close()

    def sampler(self, t0):
        while True:
            try:
                st = proc_status(self.d.proc.pid)
            except (OSError, AttributeError):
                return
            self.samples.append((time.monotonic() - t0, st))
            if self.stop.wait(self.args.sample_every):
                return


# ---- set-up and the run -----------------------------------------------------------------


def build(binary):
    for cmd in (["cmake", "-S", ROOT, "-B", os.path.join(ROOT, "build-release"),
                 "-DCMAKE_BUILD_TYPE=Release"],
                ["cmake", "--build", os.path.join(ROOT, "build-release"), "-j2", "--target", "threshold"]):
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            raise SystemExit("build failed: %s\n%s" % (" ".join(cmd), r.stdout[-3000:]))


def outbox_pending(d):
    r = d.run("status", "--json", check=False, timeout=30)
    try:
        return json.loads(r.stdout)["outbox_pending"]
    except (ValueError, KeyError):
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threshold", default=os.path.join(ROOT, "build-release", "threshold"))
    ap.add_argument("--no-build", action="store_true", help="use the binary as it is")
    ap.add_argument("--minutes", type=float, default=30.0, help="length of the load (default 30)")
    ap.add_argument("--warmup", type=float, help="minutes not counted in the growth (default 5)")
    ap.add_argument("--quick", action="store_true", help="2 minutes, 30 s warm-up")
    ap.add_argument("--guests", type=int, default=4, help="guests' browsers at once (default 4)")
    ap.add_argument("--as-rate", type=float, default=4.0, help="AS transactions per second (default 4)")
    ap.add_argument("--only", help="comma-separated load kinds, of: " + ",".join(KINDS))
    ap.add_argument("--sample-every", type=float, default=10.0, help="seconds between samples (10)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the work dir (store, log)")
    args = ap.parse_args()
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # a stack dump on demand
    if args.quick:
        args.minutes = 2.0
    warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 5.0)
    if args.only and set(args.only.split(",")) - set(KINDS):
        raise SystemExit("--only takes: " + ",".join(KINDS))
    if not args.no_build and os.path.abspath(args.threshold) == os.path.join(ROOT, "build-release", "threshold"):
        print("building build-release/threshold ...", file=sys.stderr)
        build(args.threshold)
    if not os.access(args.threshold, os.X_OK):
        raise SystemExit("no Threshold binary at %s" % args.threshold)

    work = tempfile.mkdtemp(prefix="threshold-soak-")
    hs = SoakHomeserver(SERVER).start()
    gw_port = free_port()
    d = Standalone(os.path.abspath(args.threshold), work, log_level="info", map_size_mb=1024, extra={
        "homeserver": {"url": hs.url, "server_name": SERVER},
        "client": {"timeout_ms": 5000, "connect_timeout_ms": 1000, "outbox_max_backoff_ms": 5000},
        "roles": {"staff": [STAFF]},
        "safeguarding": {"room": SG_ROOM, "leads": [LEAD]},
        "gateway": {"listen_address": "127.0.0.1", "listen_port": gw_port,
                    "public_url": "http://127.0.0.1:%d" % gw_port,
                    "session_rate_per_minute": 100000, "address_rate_per_minute": 100000,
                    "public_per_address_per_hour": 10000},
        "services": {"helpline": {"display_name": "Soak Helpline", "staff_room": STAFF_ROOM,
                                  "public_entry": True, "public_per_hour": 100000}},
    }).setup()
    soak = None
    t_start = time.monotonic()
    try:
        d.start()
        soak = Soak(args, d, hs, gw_port)
        # The bot is invited into the staff room, the safeguarding room and the ordinary rooms.
        box = [None]
        evs = [member_event(soak.ev_id(), STAFF_ROOM, STAFF, d.bot, "invite"),
               member_event(soak.ev_id(), STAFF_ROOM, d.bot, d.bot, "join"),
               member_event(soak.ev_id(), SG_ROOM, LEAD, d.bot, "invite"),
               member_event(soak.ev_id(), SG_ROOM, d.bot, d.bot, "join")]
        for room in UNMANAGED:
            evs += [member_event(soak.ev_id(), room, STAFF, d.bot, "invite"),
                    member_event(soak.ev_id(), room, d.bot, d.bot, "join")]
        if soak.put(box, "setup", evs) != 200:
            raise SystemExit("the set-up transaction failed")
        box[0].close()

        t0 = time.monotonic()
        mem_start = proc_status(d.proc.pid)
        threads = [threading.Thread(target=soak.sampler, args=(t0,), daemon=True),
                   threading.Thread(target=soak.as_worker, daemon=True)]
        if "guest" in soak.only:
            threads += [threading.Thread(target=soak.guest_worker, args=(i,), daemon=True)
                        for i in range(args.guests)]
        for t in threads:
            t.start()
        print("soak: %.1f minutes (warm-up %.1f), %d guests, %.0f AS txn/s; daemon pid %d, work %s"
              % (args.minutes, warmup, args.guests if "guest" in soak.only else 0, args.as_rate,
                 d.proc.pid, work), file=sys.stderr)
        end = t0 + args.minutes * 60
        last_print = t0
        while time.monotonic() < end:
            time.sleep(1)
            if not d.running():
                break
            if time.monotonic() - last_print >= 60 and soak.samples:
                last_print = time.monotonic()
                t, st = soak.samples[-1]
                c = soak.counts.snapshot()
                print("  %5.1f min  VmRSS %.2f MiB  RssAnon %.2f MiB  RssFile %.2f MiB  %d fds  %d requests"
                      % (t / 60, st["VmRSS"] / MiB, st["RssAnon"] / MiB, st["RssFile"] / MiB, st["fds"],
                         sum(k["n"] for k in c.values())), file=sys.stderr, flush=True)
        load_s = time.monotonic() - t0
        soak.stop.set()
        for t in threads:
            t.join(60)
        alive = d.running()
        # The outbox drains once the load stops.
        pending, drain_s = None, None
        t_drain = time.monotonic()
        while alive and time.monotonic() < t_drain + 60:
            pending = outbox_pending(d)
            if pending == 0:
                drain_s = time.monotonic() - t_drain
                break
            time.sleep(0.5)
        mem_end = proc_status(d.proc.pid) if alive else None
        status = d.run("status", "--json", check=False, timeout=30)
        try:
            store_used = json.loads(status.stdout).get("store_bytes_used")
        except ValueError:
            store_used = None
        # SIGTERM: a clean stop.
        t_term = time.monotonic()
        try:
            rc = d.stop(timeout=30)
        except AssertionError as e:
            rc = "no exit: %s" % e
        term_s = time.monotonic() - t_term
        clean = "stopped cleanly" in d.log_text()[-4000:]
        ver = d.verify()
        log = d.log_text()
        levels = {lv: len(re.findall(r"Z %s " % lv, log)) for lv in ("error", "warn")}
        report(args, warmup, soak, mem_start, mem_end, load_s, alive, pending, drain_s, rc, term_s,
               clean, ver, levels, time.monotonic() - t_start, store_used)
    finally:
        if d.running():
            d.kill()
        hs.stop()
        if args.keep:
            print("kept: %s (threshold.log, store)" % work, file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def report(args, warmup, soak, mem_start, mem_end, load_s, alive, pending, drain_s, rc, term_s,
           clean, ver, levels, total_s, store_used=None):
    rows = []

    def row(what, measured, budget="", ok=None):
        rows.append((what, measured, budget, "" if ok is None else ("ok" if ok else "OVER")))

    after = [(t, st) for t, st in soak.samples if t >= warmup * 60]
    row("load", "%.1f min (warm-up %.1f min), %d samples after it"
        % (load_s / 60, warmup, len(after)))
    if len(after) >= 2:
        (t1, a), (t2, b) = after[0], after[-1]
        for key, budget in (("VmRSS", True), ("RssAnon", True), ("RssFile", False), ("StoreRss", False)):
            growth = b[key] - a[key]
            sl = slope_per_hour([(t, st[key] / MiB) for t, st in after])
            row("%s growth after warm-up" % (key if key != "StoreRss" else "  of RssFile, the store's map"), "%+.2f MiB (%.2f -> %.2f MiB over %.1f min)"
                % (growth / MiB, a[key] / MiB, b[key] / MiB, (t2 - t1) / 60),
                "<= 1 MiB" if budget else "", (growth <= MiB) if budget else None)
            row("  %s slope, least squares" % key, "%+.2f MiB/h" % sl)
        fds = [st["fds"] for _, st in after]
        row("open fds after warm-up: first, last (min..max)",
            "%d, %d (%d..%d)" % (fds[0], fds[-1], min(fds), max(fds)), "no growth",
            fds[-1] <= fds[0] + 8)
        row("  fds slope, least squares", "%+.1f /h" % slope_per_hour([(t, st["fds"]) for t, st in after]))
    else:
        row("RSS growth after warm-up", "too few samples", "<= 1 MiB", False)
    if store_used is not None:
        row("store used at the end (status --json)", "%.2f MiB" % (store_used / MiB))
    peak = max(st["VmRSS"] for _, st in soak.samples) if soak.samples else 0
    row("VmRSS peak (any sample)", "%.2f MiB" % (peak / MiB))
    counts = soak.counts.snapshot()
    counts.pop("setup", None)
    total = sum(k["n"] for k in counts.values())
    errors = sum(k["errors"] for k in counts.values())
    row("requests, all kinds", "%d (%.1f/s), %d errors" % (total, total / max(load_s, 1), errors), "0 errors",
        errors == 0)
    order = ["redeem", "send", "send_409_while_waiting", "feed", "session", "leave", "erase"] + KINDS[:-1]
    for kind in order + sorted(set(counts) - set(order)):
        if kind not in counts:
            continue
        k = counts[kind]
        other = {s: n for s, n in k["statuses"].items() if s not in ("200", "202")}
        extra = "" if not other else " " + json.dumps(other)
        if kind == "send_409_while_waiting":
            row("  send: 409 while the room is made (expected)", "%d" % k["n"])
            continue
        row("  %s" % kind, "%d, %d errors (%.2f%%)%s" % (k["n"], k["errors"], 100.0 * k["errors"] / k["n"], extra),
            "0", k["errors"] == 0)
    row("homeserver requests by the outbox", "%d (%.1f/s)" % (soak.portals.hs_requests,
                                                             soak.portals.hs_requests / max(load_s, 1)))
    row("daemon alive through the load", "yes" if alive else "NO", "yes", alive)
    row("outbox drained after the load", ("0 pending after %.1f s" % drain_s) if drain_s is not None
        else "%s pending after 60 s" % pending, "0", drain_s is not None)
    row("log lines: error / warn", "%d / %d" % (levels["error"], levels["warn"]))
    row("SIGTERM: exit status, time", "%s, %.1f s%s" % (rc, term_s, ", stopped cleanly" if clean else ""),
        "0, clean", rc == 0 and clean)
    vline = (ver.stdout.strip().splitlines() or [""])[-1][:70]
    row("threshold audit verify", "exit %d%s" % (ver.returncode, (": " + vline) if vline else ""), "exit 0",
        ver.returncode == 0)

    w = [max(len(r[i]) for r in rows + [("what", "measured", "budget", "")]) for i in range(4)]
    print("\nSoak: a steady mixed load (fake homeserver, release build, %s)\n"
          % ("--quick" if args.quick else "%g minutes" % args.minutes))
    print("%-*s  %-*s  %-*s  %s" % (w[0], "what", w[1], "measured", w[2], "budget", ""))
    print("%s  %s  %s  %s" % ("-" * w[0], "-" * w[1], "-" * w[2], "-" * 4))
    for r in rows:
        print("%-*s  %-*s  %-*s  %s" % (w[0], r[0], w[1], r[1], w[2], r[2], r[3]))
    print("\nat the start: VmRSS %.2f MiB, RssAnon %.2f MiB, %d fds"
          % (mem_start["VmRSS"] / MiB, mem_start["RssAnon"] / MiB, mem_start["fds"]))
    if mem_end:
        print("at the end, load stopped, outbox drained: VmRSS %.2f MiB, RssAnon %.2f MiB, RssFile %.2f MiB, "
              "%d fds, %d threads" % (mem_end["VmRSS"] / MiB, mem_end["RssAnon"] / MiB,
                                      mem_end["RssFile"] / MiB, mem_end["fds"], mem_end.get("Threads", 0)))
    print("samples (min: VmRSS / RssAnon / RssFile MiB, fds):")
    step = max(1, len(soak.samples) // 20)
    for t, st in soak.samples[::step] + ([soak.samples[-1]] if soak.samples[::step][-1:] != soak.samples[-1:] else []):
        print("  %5.1f  %6.2f / %6.2f / %6.2f  %d" % (t / 60, st["VmRSS"] / MiB, st["RssAnon"] / MiB,
                                                     st["RssFile"] / MiB, st["fds"]))
    print("RssFile is the binary and the store's map (LMDB; StoreRss): the map's share follows the data,\n"
          "so a leak shows in RssAnon.")
    print("total %.0f s\n" % total_s)


if __name__ == "__main__":
    main()
