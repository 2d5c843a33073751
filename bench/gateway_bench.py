#!/usr/bin/python3
"""The guest gateway under load, against a real Synapse and a real Threshold.

Starts Synapse (the test harness's chroot) and `threshold serve` with one
service, "helpline", whose staff room holds a staff user and the bot, then
measures:

1. Idle feed polls held: N connections (default 5000), each a long poll
   GET /feed?timeout_ms=60000 spread over a few guest sessions, written by
   hand over raw sockets so the client stays light.  After 10 s it counts the
   ones still open and unanswered, and reads the daemon's VmRSS and RssAnon
   (/proc/<pid>/status) before and while they are held.  Then staff write in
   half of the conversations: every poll of those guests must answer 200 with
   the message; the other half must answer 200 with no events at their
   timeout.
2. Guest -> staff -> guest round trips through Synapse: the guest POSTs
   /send, a staff client long-polling /sync sees it and replies, the guest's
   feed long poll returns the reply.  p50/p99 of each leg and of the whole.
3. POST /send requests per second, one client and a few concurrent ones.
   Each accepted send is a durable store commit; the messages then go on to
   Synapse, which shares the machine.

Prints a table (what, measured, budget, ok/OVER) against DESIGN.md's budgets.
A measurement, not a test: it exits 0 unless the set-up itself fails.

    bench/gateway_bench.py [--threshold build-release/threshold] [--quick]
                           [--connections N] [--round-trips N]
"""

import argparse
import asyncio
import json
import os
import re
import resource
import secrets
import shutil
import sys
import tempfile
import threading
import time
import urllib.parse

import requests
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
sys.path.insert(0, os.path.join(ROOT, "tests", "harness"))
import conftest  # noqa: E402  (Env: Synapse, config, the daemon)
from gateway import wait_gateway  # noqa: E402

API = "/_threshold/gateway/v1"
MiB = 1024 * 1024
CONNS_PER_SESSION = 250
FEED_TIMEOUT_MS = 60000


def q(s):
    return urllib.parse.quote(s, safe="")


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def proc_status(pid):
    """VmRSS, RssAnon (bytes), threads and open fds of a process."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon", "VmHWM"):
                out[k] = int(v.split()[0]) * 1024
            elif k == "Threads":
                out[k] = int(v)
    out["fds"] = len(os.listdir("/proc/%d/fd" % pid))
    return out


def fmt_mem(st):
    return "VmRSS %.1f MiB, RssAnon %.1f MiB, %d fds" % (st["VmRSS"] / MiB, st["RssAnon"] / MiB, st["fds"])


# ---- set-up ---------------------------------------------------------------------


class BenchEnv(conftest.Env):
    """The integration tests' Env with the limits a load test needs."""

    max_connections = 8192

    def write_config(self):
        super().write_config()
        with open(self.config_path) as f:
            cfg = yaml.safe_load(f)
        cfg["log"]["level"] = "info"  # start-up waits for an info line
        if "gateway" in cfg:
            cfg["gateway"].update({"address_rate_per_minute": 100000,
                                   "session_rate_per_minute": 100000,
                                   "public_per_address_per_hour": 10000,
                                   "max_connections": self.max_connections})
        with open(self.config_path, "w") as f:
            yaml.safe_dump(cfg, f, sort_keys=False)


def bearer(token):
    return {"Authorization": "Bearer " + token}


def staff_room_with_bot(env):
    """A room made by staff with the bot invited and joined (plain CS API)."""
    hs, tok = env.hs_url, env.token("staff")
    r = requests.post(hs + "/_matrix/client/v3/createRoom", headers=bearer(tok),
                      json={"name": "Helpline staff", "preset": "private_chat"}, timeout=30)
    r.raise_for_status()
    room = r.json()["room_id"]
    r = requests.post("%s/_matrix/client/v3/rooms/%s/invite" % (hs, q(room)), headers=bearer(tok),
                      json={"user_id": env.bot}, timeout=30)
    r.raise_for_status()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        r = requests.get("%s/_matrix/client/v3/rooms/%s/state/m.room.member/%s" % (hs, q(room), q(env.bot)),
                         headers=bearer(tok), timeout=30)
        if r.status_code == 200 and r.json().get("membership") == "join":
            return room
        time.sleep(0.2)
    raise SystemExit("the bot never joined the staff room")




class Guest:
    def __init__(self, env, consent_version):
        self.base = env.gw_url + API
        self.http = requests.Session()
        r = self.http.post(self.base + "/redeem", json={
            "service": "helpline",
            "consent": {"version": consent_version, "language": "en", "agreed": True}}, timeout=30)
        if r.status_code != 200:
            raise SystemExit("redeem: %d %s" % (r.status_code, r.text))
        j = r.json()
        self.token, self.pseudonym = j["session"], j["pseudonym"]
        self.headers = bearer(self.token)
        self.portal = None
        self.since = 0
        self.seen = []

    def feed(self, timeout_ms):
        r = self.http.get(self.base + "/feed", params={"since": self.since, "timeout_ms": timeout_ms},
                          headers=self.headers, timeout=timeout_ms / 1000 + 30)
        r.raise_for_status()
        j = r.json()
        self.seen.extend(j["events"])
        self.since = j["next"]
        return j

    def state(self):
        r = self.http.get(self.base + "/session", headers=self.headers, timeout=30)
        r.raise_for_status()
        return r.json()["state"]

    def send(self, body, local_id=None):
        return self.http.post(self.base + "/send", json={"local_id": local_id or secrets.token_hex(8),
                                                         "body": body},
                              headers=self.headers, timeout=30)


def find_portals(env, staff_room, guests, timeout=120):
    """Read the bot's "X is waiting ... /#/<room>" notices; set guest.portal."""
    want = {g.pseudonym: g for g in guests if g.portal is None}
    pat = re.compile(r"^(.*) is waiting to talk to .*https://matrix\.to/#/(\S+)$")
    deadline = time.monotonic() + timeout
    while want and time.monotonic() < deadline:
        frm = None
        for _ in range(20):
            params = {"dir": "b", "limit": 100}
            if frm:
                params["from"] = frm
            r = requests.get("%s/_matrix/client/v3/rooms/%s/messages" % (env.hs_url, q(staff_room)),
                             headers=bearer(env.token("staff")), params=params, timeout=30)
            r.raise_for_status()
            j = r.json()
            for ev in j.get("chunk", []):
                m = pat.match(ev.get("content", {}).get("body", ""))
                if ev.get("sender") == env.bot and m and m.group(1) in want:
                    want.pop(m.group(1)).portal = m.group(2)
            frm = j.get("end")
            if not want or not frm or not j.get("chunk"):
                break
        if want:
            time.sleep(0.5)
    if want:
        raise SystemExit("no staff room notice for %d guests" % len(want))


def staff_join(env, room):
    r = requests.post("%s/_matrix/client/v3/join/%s" % (env.hs_url, q(room)),
                      headers=bearer(env.token("staff")), json={}, timeout=30)
    r.raise_for_status()


def staff_say(env, room, body):
    r = requests.put("%s/_matrix/client/v3/rooms/%s/send/m.room.message/%s"
                     % (env.hs_url, q(room), secrets.token_hex(8)),
                     headers=bearer(env.token("staff")), json={"msgtype": "m.text", "body": body},
                     timeout=30)
    r.raise_for_status()


def settle(guest, pred, timeout=120, what="the conversation"):
    """Read the guest's feed until pred(guest) holds, then until it is quiet
    for a second; the position after the last entry."""
    deadline = time.monotonic() + timeout
    while not pred(guest):
        if time.monotonic() > deadline:
            raise SystemExit("%s was never ready: %s" % (what, json.dumps(guest.seen)[:2000]))
        guest.feed(2000)
    while guest.feed(1000)["events"]:
        pass
    return guest.since


# ---- raw HTTP/1.1 -----------------------------------------------------------------


async def read_response(reader):
    """(status, body bytes) of one HTTP/1.1 response with a Content-Length."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        if k.strip().lower() == "content-length":
            length = int(v.strip())
    body = await reader.readexactly(length) if length else b""
    return status, body


def http_request(method, path, host, token, body=None):
    lines = ["%s %s HTTP/1.1" % (method, path), "Host: " + host, "Authorization: Bearer " + token]
    if body is not None:
        data = json.dumps(body).encode()
        lines += ["Content-Type: application/json", "Content-Length: %d" % len(data)]
    else:
        data = b""
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


# ---- 1: idle feed polls --------------------------------------------------------------


class Poll:
    __slots__ = ("guest", "sent", "answered", "status", "body", "error", "again")

    def __init__(self, guest):
        self.guest = guest
        self.sent = self.answered = None
        self.status = None
        self.body = b""
        self.error = None
        self.again = None


async def hold_polls(env, polls, daemon_pid, wake, mem_before_fds, settle_s=10.0):
    """Open every poll, wait settle_s, then call wake() (in a thread) and wait
    for every answer.  Returns measurements."""
    host = "127.0.0.1:%d" % env.gw_port
    gate = asyncio.Semaphore(256)
    writers = []

    second = asyncio.Event()

    async def one(p):
        try:
            async with gate:
                reader, writer = await asyncio.open_connection("127.0.0.1", env.gw_port, limit=1 << 20)
                writers.append(writer)
                writer.write(http_request("GET", "%s/feed?since=%d&timeout_ms=%d"
                                          % (API, p.guest.since, FEED_TIMEOUT_MS), host, p.guest.token))
                await writer.drain()
                p.sent = time.monotonic()
            p.status, p.body = await read_response(reader)
            p.answered = time.monotonic()
        except Exception as e:  # refused, reset, closed without an answer
            p.error = "%s: %s" % (type(e).__name__, e)
            p.answered = time.monotonic()
            return
        # As the page does: poll again at once on the same connection.
        await second.wait()
        try:
            since = json.loads(p.body)["next"] if p.status == 200 else p.guest.since
            writer.write(http_request("GET", "%s/feed?since=%d&timeout_ms=%d"
                                      % (API, since, FEED_TIMEOUT_MS), host, p.guest.token))
            await writer.drain()
            p.again = await read_response(reader)
        except Exception as e:
            p.again = e

    t_open = time.monotonic()
    tasks = [asyncio.ensure_future(one(p)) for p in polls]
    while any(p.sent is None and p.error is None for p in polls):
        await asyncio.sleep(0.05)
    opened_s = time.monotonic() - t_open
    await asyncio.sleep(settle_s)
    held = sum(1 for p in polls if p.answered is None)
    early = [p for p in polls if p.answered is not None]
    mem_held = proc_status(daemon_pid)
    loop = asyncio.get_running_loop()
    t_wake = time.monotonic()
    await loop.run_in_executor(None, wake)
    t_wake_done = time.monotonic()
    while time.monotonic() < t_wake + FEED_TIMEOUT_MS / 1000 + 40 and any(p.answered is None for p in polls):
        await asyncio.sleep(0.2)
    mem_after = proc_status(daemon_pid)
    # Second round: every connection polls again at once, as the page does.
    second.set()
    await asyncio.sleep(settle_s)
    held2 = sum(1 for p in polls if p.error is None and p.again is None)
    mem_held2 = proc_status(daemon_pid)
    again_other = {}
    for p in polls:
        if p.again is not None:
            k = repr(p.again)[:120] if isinstance(p.again, Exception) else "status %d" % p.again[0]
            again_other[k] = again_other.get(k, 0) + 1
    for w in writers:
        w.close()
    await asyncio.wait(tasks, timeout=10)
    await asyncio.sleep(2)
    mem_closed = proc_status(daemon_pid)
    # A parked poll whose client went away: how long the daemon keeps its socket.
    t_close = time.monotonic()
    fds_base = mem_before_fds
    released_s = None
    while time.monotonic() < t_close + FEED_TIMEOUT_MS / 1000 + 20:
        if proc_status(daemon_pid)["fds"] <= fds_base + 5:
            released_s = time.monotonic() - t_close
            break
        await asyncio.sleep(1)
    return {"opened_s": opened_s, "held": held, "early": early, "mem_held": mem_held,
            "mem_after": mem_after, "t_wake": t_wake, "t_wake_done": t_wake_done, "held2": held2,
            "mem_held2": mem_held2, "mem_closed": mem_closed, "again_other": again_other,
            "released_s": released_s}


def bench_idle(env, daemon, guests_a, guests_b, n, wake_text):
    polls = []
    per = {}
    all_guests = guests_a + guests_b
    for i in range(n):
        g = all_guests[i % len(all_guests)]
        p = Poll(g)
        polls.append(p)
        per.setdefault(id(g), []).append(p)
    mem_before = proc_status(daemon.proc.pid)

    said = {}

    def wake():
        for g in guests_a:
            said[id(g)] = time.monotonic()
            staff_say(env, g.portal, wake_text)

    res = asyncio.run(hold_polls(env, polls, daemon.proc.pid, wake, mem_before["fds"]))
    a_ids = {id(g) for g in guests_a}
    woken = [p for p in polls if id(p.guest) in a_ids]
    timed = [p for p in polls if id(p.guest) not in a_ids]

    def got_text(p):
        if p.status != 200:
            return False
        try:
            return any(e.get("body") == wake_text for e in json.loads(p.body)["events"])
        except ValueError:
            return False

    def empty(p):
        if p.status != 200:
            return False
        try:
            return json.loads(p.body)["events"] == []
        except ValueError:
            return False

    woken_ok = [p for p in woken if got_text(p)]
    timed_ok = [p for p in timed if empty(p)]
    fine = set(woken_ok) | set(timed_ok)
    wake_lat = [p.answered - said[id(p.guest)] for p in woken_ok]
    timeout_at = [p.answered - p.sent for p in timed_ok]
    problems = {}
    for p in polls:
        if p in fine:
            continue
        key = p.error or ("%s %s" % (p.status, p.body[:160].decode("utf-8", "replace")))
        problems[key] = problems.get(key, 0) + 1
    return {"n": n, "mem_before": mem_before, **res, "woken": len(woken), "woken_ok": len(woken_ok),
            "timed": len(timed), "timed_ok": len(timed_ok), "wake_lat": wake_lat,
            "timeout_at": timeout_at, "problems": problems}


# ---- 2: round trips ----------------------------------------------------------------


class StaffSync(threading.Thread):
    """Staff's /sync long poll on one room; when each body from someone else arrived."""

    def __init__(self, env, room):
        super().__init__(daemon=True)
        self.env, self.room = env, room
        self.http = requests.Session()
        self.seen = {}
        self.cv = threading.Condition()
        self.stop = False
        filt = {"room": {"rooms": [room], "timeline": {"types": ["m.room.message"], "limit": 50},
                         "state": {"types": []}, "ephemeral": {"types": []},
                         "account_data": {"types": []}},
                "presence": {"types": []}, "account_data": {"types": []}}
        self.params = {"filter": json.dumps(filt), "timeout": 30000}
        r = self.http.get(env.hs_url + "/_matrix/client/v3/sync", headers=bearer(env.token("staff")),
                          params={"filter": self.params["filter"], "timeout": 0}, timeout=60)
        r.raise_for_status()
        self.next_batch = r.json()["next_batch"]
        self.staff_id = env.users["staff"][0]

    def run(self):
        while not self.stop:
            try:
                r = self.http.get(self.env.hs_url + "/_matrix/client/v3/sync",
                                  headers=bearer(self.env.token("staff")),
                                  params=dict(self.params, since=self.next_batch), timeout=60)
                now = time.monotonic()
                r.raise_for_status()
                j = r.json()
            except Exception:
                time.sleep(0.2)
                continue
            self.next_batch = j["next_batch"]
            room = j.get("rooms", {}).get("join", {}).get(self.room, {})
            with self.cv:
                for ev in room.get("timeline", {}).get("events", []):
                    body = ev.get("content", {}).get("body")
                    if ev.get("sender") != self.staff_id and body:
                        self.seen.setdefault(body, now)
                self.cv.notify_all()

    def wait(self, body, timeout=30):
        with self.cv:
            self.cv.wait_for(lambda: body in self.seen, timeout)
            return self.seen.get(body)


class GuestFeed(threading.Thread):
    """The guest page's feed loop; when each staff body arrived."""

    def __init__(self, guest):
        super().__init__(daemon=True)
        self.guest = guest
        self.seen = {}
        self.cv = threading.Condition()
        self.stop = False

    def run(self):
        while not self.stop:
            try:
                j = self.guest.feed(25000)
            except Exception:
                time.sleep(0.2)
                continue
            now = time.monotonic()
            with self.cv:
                for e in j["events"]:
                    if e.get("from", {}).get("role") == "staff":
                        self.seen.setdefault(e.get("body"), now)
                self.cv.notify_all()

    def wait(self, body, timeout=30):
        with self.cv:
            self.cv.wait_for(lambda: body in self.seen, timeout)
            return self.seen.get(body)


def bench_round_trips(env, guest, n):
    sync = StaffSync(env, guest.portal)
    feed = GuestFeed(guest)
    sync.start()
    feed.start()
    time.sleep(0.5)
    up, down, rt, lost = [], [], [], 0
    for i in range(n):
        tag = secrets.token_hex(4)
        ping, pong = "ping %d %s" % (i, tag), "pong %d %s" % (i, tag)
        t0 = time.monotonic()
        r = guest.send(ping)
        if r.status_code != 202:
            raise SystemExit("send: %d %s" % (r.status_code, r.text))
        t1 = sync.wait(ping)
        if t1 is None:
            lost += 1
            continue
        t2 = time.monotonic()
        staff_say(env, guest.portal, pong)
        t3 = feed.wait(pong)
        if t3 is None:
            lost += 1
            continue
        up.append(t1 - t0)
        down.append(t3 - t2)
        rt.append(t3 - t0)
    sync.stop = feed.stop = True
    return {"n": n, "up": up, "down": down, "rt": rt, "lost": lost}


# ---- 3: send throughput --------------------------------------------------------------


async def send_loop(env, guest, count, statuses):
    host = "127.0.0.1:%d" % env.gw_port
    reader, writer = await asyncio.open_connection("127.0.0.1", env.gw_port)
    tag = secrets.token_hex(3)
    lat = []
    for i in range(count):
        t = time.monotonic()
        writer.write(http_request("POST", API + "/send", host, guest.token,
                                  {"local_id": "b%s%d" % (tag, i), "body": "throughput %d" % i}))
        await writer.drain()
        status, _ = await read_response(reader)
        lat.append(time.monotonic() - t)
        statuses[status] = statuses.get(status, 0) + 1
    writer.close()
    return lat


def bench_sends(env, guests, count):
    out = []
    for clients in (1, len(guests)):
        statuses = {}
        per = max(1, count // clients)

        async def go():
            return await asyncio.gather(*[send_loop(env, g, per, statuses) for g in guests[:clients]])

        t0 = time.monotonic()
        lats = asyncio.run(go())
        dt = time.monotonic() - t0
        lat = [x for lt in lats for x in lt]
        out.append({"clients": clients, "n": len(lat), "secs": dt, "rps": len(lat) / dt,
                    "p50": pct(lat, 50), "p99": pct(lat, 99), "statuses": statuses})
    return out


# ---- main -----------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threshold", default=os.path.join(ROOT, "build-release", "threshold"))
    ap.add_argument("--quick", action="store_true", help="500 connections, 20 round trips, fewer sends")
    ap.add_argument("--connections", type=int)
    ap.add_argument("--round-trips", type=int)
    ap.add_argument("--sends", type=int, help="POST /send per configuration (default 2000, quick 300)")
    ap.add_argument("--clients", type=int, default=4, help="concurrent senders (default 4)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir and the logs")
    args = ap.parse_args()
    n_conn = args.connections or (500 if args.quick else 5000)
    n_rt = args.round_trips or (20 if args.quick else 100)
    n_send = args.sends or (300 if args.quick else 2000)
    if not os.access(args.threshold, os.X_OK):
        raise SystemExit("no Threshold binary at %s (cmake -S . -B build-release "
                         "-DCMAKE_BUILD_TYPE=Release && cmake --build build-release --target threshold)"
                         % args.threshold)

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n_conn + 512
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard) if hard != resource.RLIM_INFINITY
                                                    else want, hard))

    work = tempfile.mkdtemp(prefix="threshold-gateway-bench-")
    env = BenchEnv(work)
    env.max_connections = max(8192, n_conn + 1024)
    env.threshold.bin = os.path.abspath(args.threshold)
    n_sessions = max(2, -(-n_conn // CONNS_PER_SESSION))
    n_sessions += n_sessions % 2
    t_start = time.monotonic()
    try:
        env.write_config()
        env.threshold.run("generate-registration", "-o", env.registration_path)
        env.load_registration()
        env.hs.start()
        env.add_user("staff")
        env.threshold.start()
        staff_room = staff_room_with_bot(env)
        env.services = {"helpline": {
            "display_name": "Bench Helpline", "staff_room": staff_room,
            "greeting": "Hello, you are through to the bench helpline.",
            "notice_version": "1", "notice": {"en": "A benchmark."},
            "public_entry": True, "public_per_hour": 100000}}
        env.write_config()
        env.threshold.stop()
        env.threshold.start()
        wait_gateway(env)
        daemon = env.threshold
        mem_idle = proc_status(daemon.proc.pid)

        r = requests.post(env.gw_url + API + "/invitation", json={"service": "helpline"}, timeout=30)
        r.raise_for_status()
        version = r.json()["notice"]["version"]
        print("set-up: %d guest sessions for %d polls, 1 for round trips ..." % (n_sessions, n_conn),
              file=sys.stderr)
        guests = [Guest(env, version) for _ in range(n_sessions + 1)]
        rt_guest, guests = guests[0], guests[1:]
        guests_a, guests_b = guests[: n_sessions // 2], guests[n_sessions // 2:]
        find_portals(env, staff_room, [rt_guest] + guests_a)
        for g in [rt_guest] + guests_a:
            staff_join(env, g.portal)
        for g in [rt_guest] + guests_a:
            settle(g, lambda g: any("has joined" in e.get("body", "") for e in g.seen))
        for g in guests_b:
            settle(g, lambda g: g.state() == "open")

        print("1: holding %d feed polls ..." % n_conn, file=sys.stderr)
        idle = bench_idle(env, daemon, guests_a, guests_b, n_conn, "wake up " + secrets.token_hex(4))
        print("2: %d round trips ..." % n_rt, file=sys.stderr)
        settle(rt_guest, lambda g: True)
        rts = bench_round_trips(env, rt_guest, n_rt)
        print("3: sends ...", file=sys.stderr)
        senders = guests_b[: max(1, args.clients)]
        while len(senders) < args.clients:
            senders.append(Guest(env, version))
            settle(senders[-1], lambda g: g.state() == "open")
        sends = bench_sends(env, senders, n_send)
        mem_end = proc_status(daemon.proc.pid)
        alive = daemon.running()
        report(args, idle, rts, sends, mem_idle, mem_end, alive, time.monotonic() - t_start)
    finally:
        try:
            env.threshold.stop()
        finally:
            if args.keep:
                print("kept: %s (threshold.log), Synapse data %s" % (work, env.hs.host_dir), file=sys.stderr)
                env.hs.stop()
            else:
                env.hs.cleanup()
                shutil.rmtree(work, ignore_errors=True)


def report(args, idle, rts, sends, mem_idle, mem_end, alive, total_s):
    rows = []

    def row(what, measured, budget="", ok=None):
        rows.append((what, measured, budget, "" if ok is None else ("ok" if ok else "OVER")))

    n = idle["n"]
    mh = idle["mem_held"]
    row("idle feed polls held after 10 s", "%d of %d" % (idle["held"], n), ">= 5,000",
        idle["held"] >= 5000 if n >= 5000 else None)
    row("daemon RSS, before the polls", "%.1f MiB (anon %.1f)" % (idle["mem_before"]["VmRSS"] / MiB,
                                                                  idle["mem_before"]["RssAnon"] / MiB))
    row("daemon RSS, holding them", "%.1f MiB (anon %.1f)" % (mh["VmRSS"] / MiB, mh["RssAnon"] / MiB),
        "<= 64 MiB", mh["VmRSS"] <= 64 * MiB)
    per_conn = (mh["RssAnon"] - idle["mem_before"]["RssAnon"]) / max(1, idle["held"])
    row("  anon RSS per held poll", "%.1f KiB" % (per_conn / 1024))
    row("polls answered 200 with the new message", "%d of %d" % (idle["woken_ok"], idle["woken"]), "all",
        idle["woken_ok"] == idle["woken"])
    if idle["wake_lat"]:
        row("  wake, staff PUT -> poll answered, p50/max", "%.0f / %.0f ms"
            % (pct(idle["wake_lat"], 50) * 1000, max(idle["wake_lat"]) * 1000))
    row("polls answered 200, empty, at timeout", "%d of %d" % (idle["timed_ok"], idle["timed"]), "all",
        idle["timed_ok"] == idle["timed"])
    if idle["timeout_at"]:
        row("  answered after (asked 60 s), min/max", "%.2f / %.2f s"
            % (min(idle["timeout_at"]), max(idle["timeout_at"])))
    m2 = idle["mem_held2"]
    row("polls held again after answering (same conns)", "%d of %d" % (idle["held2"], n), ">= 5,000",
        idle["held2"] >= 5000 if n >= 5000 else None)
    row("daemon RSS, holding the second round", "%.1f MiB (anon %.1f)" % (m2["VmRSS"] / MiB, m2["RssAnon"] / MiB),
        "<= 64 MiB", m2["VmRSS"] <= 64 * MiB)
    row("daemon RSS, clients gone", "%.1f MiB (anon %.1f)" % (idle["mem_closed"]["VmRSS"] / MiB,
                                                              idle["mem_closed"]["RssAnon"] / MiB))
    rel = idle["released_s"]
    row("  sockets of polls whose client left, freed after", "%.0f s" % rel if rel is not None else "not in 80 s")
    for what, key in (("guest send -> staff /sync", "up"), ("staff send -> guest feed", "down"),
                      ("round trip guest -> staff -> guest", "rt")):
        v = rts[key]
        if v:
            row(what + " p50/p99", "%.0f / %.0f ms" % (pct(v, 50) * 1000, pct(v, 99) * 1000))
    row("  round trips completed", "%d of %d" % (len(rts["rt"]), rts["n"]), "all", rts["lost"] == 0)
    for s in sends:
        row("POST /send, %d client%s" % (s["clients"], "" if s["clients"] == 1 else "s"),
            "%.0f req/s (p50 %.2f ms, p99 %.2f ms)" % (s["rps"], s["p50"] * 1000, s["p99"] * 1000))
        bad = {k: v for k, v in s["statuses"].items() if k != 202}
        if bad:
            row("  answers other than 202", json.dumps(bad), "none", False)
    row("daemon RSS at the end, no polls open", "%.1f MiB (anon %.1f, %d fds)"
        % (mem_end["VmRSS"] / MiB, mem_end["RssAnon"] / MiB, mem_end["fds"]))
    row("daemon still running", "yes" if alive else "NO", "yes", alive)

    w = [max(len(r[i]) for r in rows + [("what", "measured", "budget", "")]) for i in range(4)]
    print("\nThe guest gateway (real Synapse, release build, %s)\n" % ("--quick" if args.quick else "full"))
    print("%-*s  %-*s  %-*s  %s" % (w[0], "what", w[1], "measured", w[2], "budget", ""))
    print("%s  %s  %s  %s" % ("-" * w[0], "-" * w[1], "-" * w[2], "-" * 4))
    for r in rows:
        print("%-*s  %-*s  %-*s  %s" % (w[0], r[0], w[1], r[1], w[2], r[2], r[3]))
    print("\nidle daemon before any guest: %s" % fmt_mem(mem_idle))
    print("holding polls: %s, %d threads; %d polls opened in %.1f s"
          % (fmt_mem(mh), mh.get("Threads", 0), n, idle["opened_s"]))
    print("after they were answered (connections still open): %s" % fmt_mem(idle["mem_after"]))
    print("second round held: %s; clients gone: %s" % (fmt_mem(idle["mem_held2"]), fmt_mem(idle["mem_closed"])))
    for k, v in sorted(idle["again_other"].items(), key=lambda kv: -kv[1]):
        print("second round answered early: %d polls: %s" % (v, k))
    if idle["early"]:
        print("answered before the 10 s mark: %d (see problems)" % len(idle["early"]))
    for k, v in sorted(idle["problems"].items(), key=lambda kv: -kv[1]):
        print("problem: %d polls: %s" % (v, k))
    print("sends include a durable store commit each; the messages then go on to Synapse on the same cores")
    print("total %.0f s\n" % total_s)


if __name__ == "__main__":
    main()
