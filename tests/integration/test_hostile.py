"""Hostile input against the guest gateway and the AS listener: slow
clients, odd paths, header injection, bad bytes, other conversations' ids,
invitation and resume-code guessing, huge declared bodies and running out of
file descriptors.  No Synapse: a scripted homeserver (fakehs.py) answers
Threshold's Client-Server requests, so conversations open and messages are
seen leaving.  docs/reliability.md records the figures."""

import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time

import pytest

from fakehs import FakeHomeserver
from gateway import API, api
from hostile_env import SERVICE, STAFF, gateway_daemon, pid_fds, raw, request_bytes
from standalone import member_event, message_event

BIN = os.environ.get("THRESHOLD_BIN")
pytestmark = pytest.mark.skipif(not BIN, reason="THRESHOLD_BIN is not set")

ADDR_RATE = 6
SESSION_RATE = 40
MAX_MESSAGE = 100
CONSENT = {"version": "1", "language": "en", "agreed": True}
JSON = ("Content-Type", "application/json")
_addr = [0]


def addr():
    """A client address of its own (the daemon trusts X-Forwarded-For, as
    behind its proxy), so one test's tries do not count against another's."""
    _addr[0] += 1
    return "198.51.%d.%d" % (_addr[0] // 250, _addr[0] % 250 + 1)


def away_from_minute_edge():
    """Kept from when the limits counted in fixed one-minute windows; they
    are token buckets now (refilling steadily), so this only costs a wait."""
    left = 60 - time.time() % 60
    if left < 4:
        time.sleep(left + 0.2)


@pytest.fixture(scope="module")
def hs():
    h = FakeHomeserver().start()
    yield h
    h.stop()


@pytest.fixture(scope="module")
def gw(hs):
    work = tempfile.mkdtemp(prefix="th-hostile-")
    d = gateway_daemon(BIN, work, hs.url, trust_forwarded_for=True,
                       address_rate_per_minute=ADDR_RATE, session_rate_per_minute=SESSION_RATE,
                       max_message_bytes=MAX_MESSAGE, max_body_bytes=1024,
                       max_polls_per_guest=5)  # test_vanished_polls_let_go parks 5 a guest
    d.start()
    wait_gateway(d)
    yield d
    rc = d.stop()
    assert rc == 0, d.log_text()[-3000:]
    shutil.rmtree(work, ignore_errors=True)


def wait_gateway(d, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if raw(d.gw_port, request_bytes("GET", API + "/page"), timeout=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.02)
    raise AssertionError("the gateway did not answer")


def post(d, path, body, token=None, ip=None, **kw):
    h = {}
    if token:
        h["Authorization"] = "Bearer " + token
    if ip:
        h["X-Forwarded-For"] = ip
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    h["Content-Type"] = "application/json"
    return api.post(d.gw_url + API + path, data=data, headers=h, timeout=10, **kw)


def get(d, path, token=None, **kw):
    h = {"Authorization": "Bearer " + token} if token else {}
    return api.get(d.gw_url + API + path, headers=h, timeout=10, **kw)


def new_guest(d, hs):
    """Redeem the public entry; wait until the conversation is open.
    (session token, guest user id, room id)."""
    r = post(d, "/redeem", {"service": SERVICE, "consent": CONSENT}, ip=addr())
    assert r.status_code == 200, r.text
    tok = r.json()["session"]
    deadline = time.monotonic() + 15
    while get(d, "/session", tok).json()["state"] != "open":
        assert time.monotonic() < deadline, "the conversation never opened"
        time.sleep(0.05)
    room = hs.rooms()[-1]  # the newest room: guests are made one at a time here
    # The guest makes its own room (docs/architecture.md): the newest
    # createRoom was sent as the guest.
    guest = hs.wait(lambda q: q[0] == "POST" and q[1] == "/_matrix/client/v3/createRoom",
                    what="the guest's createRoom")[-1][2]["user_id"]
    return tok, guest, room, r.json()


def send_and_see(d, hs, tok, room, text):
    """Send @text and wait until the homeserver gets it; the sends before it."""
    lid = secrets.token_hex(6)
    r = post(d, "/send", {"local_id": lid, "body": text}, tok)
    assert r.status_code == 202, r.text
    hs.wait(lambda q: isinstance(q[3], dict) and q[3].get("org.threshold.local_id") == lid,
            what="message %s" % lid)
    return lid


# ---- slow clients --------------------------------------------------------------

class Trickle:
    """@n connections that send a request's head one byte every @every s."""

    def __init__(self, port, n, every=2.0, head=None):
        self.socks = []
        self.refused = 0
        for _ in range(n):
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=2)
                self.socks.append(s)
            except OSError:
                self.refused += 1
        self.head = head or (b"GET " + API.encode() + b"/page HTTP/1.1\r\nHost: x\r\nX-Slow: "
                             + b"a" * 4000)
        self.every = every
        self.stop = threading.Event()
        self.pos = 0
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop.is_set():
            b = self.head[self.pos:self.pos + 1]
            self.pos += 1
            for s in self.socks:
                try:
                    s.send(b)
                except OSError:
                    pass
            self.stop.wait(self.every)

    def alive(self):
        """How many the server has not closed."""
        n = 0
        for s in self.socks:
            s.setblocking(False)
            try:
                n += s.recv(1, socket.MSG_PEEK) != b""
            except BlockingIOError:
                n += 1
            except OSError:
                pass
            s.setblocking(True)
        return n

    def close(self):
        self.stop.set()
        self.t.join()
        for s in self.socks:
            s.close()


def timed(fn):
    t0 = time.monotonic()
    out = fn()
    return out, time.monotonic() - t0


def test_slow_loris_gateway_and_as_api(gw):
    """200 connections trickling a header byte every 2 s: normal requests on
    the gateway and the AS API are answered at once, and the slow ones are
    still held (libmicrohttpd's 90 s timeout is an idle one)."""
    slow = Trickle(gw.gw_port, 200, every=2.0)
    try:
        time.sleep(0.5)
        worst_gw = worst_as = 0
        for _ in range(3):
            for _ in range(5):
                (st, *_), dt = timed(lambda: raw(gw.gw_port, request_bytes("GET", API + "/page")))
                assert st == 200
                worst_gw = max(worst_gw, dt)
                (st, _), dt = timed(lambda: gw.ping(timeout=5))
                assert st == 200
                worst_as = max(worst_as, dt)
            time.sleep(1.5)
        held = slow.alive()
        print("slow-loris: 200 trickling, %d still held after %.0f s; worst /page %.0f ms, "
              "worst AS ping %.0f ms" % (held, slow.pos * slow.every, worst_gw * 1000, worst_as * 1000))
        assert slow.refused == 0 and held == 200
        assert worst_gw < 1.0 and worst_as < 1.0
    finally:
        slow.close()
    assert gw.running()


def test_vanished_polls_let_go(gw, hs):
    """Pages that go away while their feed polls are parked (quick exit, a
    closed tab) do not keep their sockets until the poll's 60 s timeout:
    libmicrohttpd does not watch suspended connections, so the gateway looks
    at them itself, once a second."""
    sessions = [new_guest(gw, hs)[0] for _ in range(4)]
    since = [get(gw, "/feed?timeout_ms=0", tok).json()["next"] for tok in sessions]
    base = pid_fds(gw.proc.pid)
    socks = []
    for tok, n in zip(sessions, since):
        for _ in range(5):
            s = socket.create_connection(("127.0.0.1", gw.gw_port), timeout=5)
            s.sendall(request_bytes("GET", "%s/feed?since=%d&timeout_ms=60000" % (API, n),
                                    [("Authorization", "Bearer " + tok)]))
            socks.append(s)
    deadline = time.monotonic() + 10
    while pid_fds(gw.proc.pid) < base + len(socks) and time.monotonic() < deadline:
        time.sleep(0.1)
    parked = pid_fds(gw.proc.pid)
    assert parked >= base + len(socks), (base, parked)
    for s in socks:
        s.setblocking(False)
        try:
            assert s.recv(1) == b"", "a parked poll was answered early"
        except BlockingIOError:
            pass  # nothing yet: still parked, as it should be
        s.close()
    closed = time.monotonic()
    while pid_fds(gw.proc.pid) > base and time.monotonic() - closed < 30:
        time.sleep(0.1)
    took = time.monotonic() - closed
    after = pid_fds(gw.proc.pid)
    print("vanished polls: %d parked, fds %d -> %d -> %d, let go in %.1f s"
          % (len(socks), base, parked, after, took))
    # Well before the polls' own 60 s timeout (a second or two in practice).
    assert after <= base, (base, parked, after)
    assert get(gw, "/session", sessions[0]).status_code == 200


def test_gateway_max_connections_caps_slow_clients(hs):
    """gateway.max_connections 16: of 40 slow connections the daemon takes
    16 and leaves the rest in the listen queue; a normal client waits while
    they are held (no per-address cap: behind the proxy every guest has its
    address), the AS API still answers, and once they go a normal request is
    answered."""
    work = tempfile.mkdtemp(prefix="th-hostile-cap-")
    d = gateway_daemon(BIN, work, hs.url, max_connections=16)
    d.start()
    try:
        wait_gateway(d)
        base = pid_fds(d.proc.pid)
        slow = Trickle(d.gw_port, 40, every=1.0)
        try:
            time.sleep(1.5)
            held = pid_fds(d.proc.pid) - base  # the rest wait in the listen queue
            assert 14 <= held <= 18, held  # 16, give or take the daemon's own homeserver sockets
            try:
                st = raw(d.gw_port, request_bytes("GET", API + "/page"), timeout=2)[0]
            except OSError:
                st = None
            assert st is None  # not answered while full
            assert d.ping(timeout=5)[0] == 200
        finally:
            slow.close()
        (st, *_), dt = timed(lambda: (wait_gateway(d), raw(d.gw_port, request_bytes("GET", API + "/page")))[1])
        assert st == 200
        print("max_connections 16: 40 slow -> %d held by the daemon; served again %.0f ms after they went"
              % (held, dt * 1000))
        assert d.running()
    finally:
        assert d.stop() == 0
        shutil.rmtree(work, ignore_errors=True)


def test_slow_loris_on_the_as_listener(gw):
    """The AS listener (reached only by the homeserver) allows 32 connections
    per address: 31 slow ones from the homeserver's address still leave it
    room; 32 can shut the homeserver out until they go idle for 90 s, so the
    AS port must not be reachable by anyone but the homeserver."""
    slow = Trickle(gw.port, 31, every=1.0,
                   head=b"PUT /_matrix/app/v1/transactions/x HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 4000)
    try:
        time.sleep(0.5)
        (st, _), dt = timed(lambda: gw.ping(timeout=5))
        assert st == 200 and dt < 1.0
        extra = Trickle(gw.port, 1, every=1.0, head=slow.head)
        try:
            time.sleep(0.5)
            try:
                st = gw.ping(timeout=3)[0]
            except OSError:
                st = None
            # not asserted: whether the 32nd slot is taken depends on timing
            print("AS listener: 31 slow -> ping %.0f ms; 32 slow -> ping %s" % (dt * 1000, st))
        finally:
            extra.close()
    finally:
        slow.close()
    time.sleep(0.3)
    assert gw.ping(timeout=5)[0] == 200


# ---- paths ---------------------------------------------------------------------

ODD_PATHS = [
    "/../etc/passwd", "/../../../../etc/passwd", "/%2e%2e/etc/passwd", "/%2e%2e/%2e%2e/etc/passwd",
    "/..%2fetc%2fpasswd", "/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "//etc/passwd", "///etc/passwd",
    "/index.html%00", "/index.html%00.js", "/index.html/", "/index.html/..", "/./index.html",
    "/%c0%ae%c0%ae/etc/passwd", "/..\\etc\\passwd",
    "/etc/passwd", "/proc/self/environ", "/.git/config", "/threshold.yaml", "/store/data.mdb",
    "/" + "a" * 6000, "/" + "../" * 2000 + "etc/passwd", API + "/page%00x", API + "/../../index.html",
    API + "/erase%00.png",
]


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_odd_paths_never_leave_the_embedded_files(gw, method):
    index = raw(gw.gw_port, request_bytes("GET", "/"))
    assert index[0] == 200
    page = index[2]
    answers = {}
    for p in ODD_PATHS:
        st, headers, body, _ = raw(gw.gw_port, request_bytes(method, p))
        answers[p[:40]] = st
        assert st in (400, 404, 414, 431), (p[:80], st, body[:200])
        assert b"root:" not in body and b"hs_token" not in body and body != page
        if method == "HEAD":
            assert body == b""
    print(method, json.dumps(answers))
    # a query string is only a query string
    assert raw(gw.gw_port, request_bytes(method, "/index.html?../../etc/passwd=1"))[0] == 200
    # HEAD on the real page: the headers of GET, no body
    st, headers, body, _ = raw(gw.gw_port, request_bytes("HEAD", "/"))
    hd = dict(headers)
    assert st == 200 and body == b"" and hd["content-type"].startswith("text/html")
    assert hd["cache-control"] == "no-store" and "content-security-policy" in hd


# ---- header injection ------------------------------------------------------------

EXPECTED_HEADERS = {"date", "connection", "content-type", "content-length", "content-security-policy",
                    "referrer-policy", "x-content-type-options", "x-frame-options",
                    "cross-origin-opener-policy", "cross-origin-resource-policy", "permissions-policy",
                    "cache-control", "vary", "etag", "content-encoding", "transfer-encoding"}


def test_header_injection(gw, hs):
    tok, _, _, _ = new_guest(gw, hs)
    evil = "X-Evil: 1\r\nSet-Cookie: evil=1"
    tries = [
        request_bytes("GET", API + "/session", [("Authorization", "Bearer " + tok + "\r\n" + evil)]),
        request_bytes("GET", API + "/session", [("Authorization", "Bearer " + tok + "\nSet-Cookie: evil=1")]),
        request_bytes("GET", API + "/session", [("Authorization", b"Bearer \xff\r\n" + evil.encode())]),
        request_bytes("GET", API + "/feed?since=0%0d%0aSet-Cookie:%20evil=1&timeout_ms=0",
                      [("Authorization", "Bearer " + tok)]),
        request_bytes("GET", API + "/feed?since=0&timeout_ms=0%0d%0aSet-Cookie:%20evil=1",
                      [("Authorization", "Bearer " + tok)]),
        request_bytes("POST", API + "/send", [("Authorization", "Bearer " + tok), JSON],
                      json.dumps({"local_id": "a\r\nSet-Cookie: evil=1", "body": "hi"}).encode()),
        request_bytes("POST", API + "/send", [("Authorization", "Bearer " + tok), JSON],
                      json.dumps({"local_id": "ok1", "body": "hi\r\nSet-Cookie: evil=1"}).encode()),
        request_bytes("GET", "/", [("If-None-Match", '"stub"\r\nSet-Cookie: evil=1')]),
        request_bytes("GET", "/", [("Accept-Encoding", "gzip\r\nSet-Cookie: evil=1")]),
        request_bytes("GET", "/%0d%0aSet-Cookie:%20evil=1"),
        request_bytes("POST", API + "/invitation", [("X-Forwarded-For", addr() + "\r\nSet-Cookie: evil=1"), JSON],
                      json.dumps({"invite": "A" * 31 + "\r\nSet-Cookie: evil=1"}).encode()),
    ]
    statuses = []
    for data in tries:
        st, headers, body, head = raw(gw.gw_port, data)
        statuses.append(st)
        assert st is not None
        names = {n for n, _ in headers}
        assert names <= EXPECTED_HEADERS, (data[:120], names - EXPECTED_HEADERS)
        assert b"evil" not in head.lower(), head
    print("header injection answers:", statuses)
    # the one body with CR LF in the text is a message like any other, sent as JSON
    hs.wait(lambda q: isinstance(q[3], dict) and q[3].get("body") == "hi\r\nSet-Cookie: evil=1",
            what="the message with CR LF in its text")


# ---- bytes ---------------------------------------------------------------------------

def test_invalid_utf8_and_nul_are_refused_and_nothing_is_kept(gw, hs):
    tok, guest, room, _ = new_guest(gw, hs)
    before = len(hs.sends())
    bad = [
        b'{"local_id": "u1", "body": "caf\xc3"}',          # truncated sequence
        b'{"local_id": "u2", "body": "\xff\xfe"}',          # not UTF-8 at all
        b'{"local_id": "u3", "body": "\xed\xa0\x80"}',      # a surrogate in UTF-8
        b'{"local_id": "u4", "body": "\xc0\xaf"}',          # overlong "/"
        b'{"local_id": "u5", "body": "a\\u0000b"}',         # escaped NUL
        b'{"local_id": "u6", "body": "a\x00b"}',            # raw NUL
        b'{"local_id": "u7", "body": "\\ud800"}',           # lone surrogate escape
        b'{"local_id": "u\\u00008", "body": "x"}',          # NUL in local_id
        b'{"local_id": "u\xff9", "body": "x"}',             # bad byte in local_id
        b'{"local_id": "u10\x00", "body": "x"}',
        b'{"local_id": "u11", "body": "x"}\x00',           # NUL after the object
        b'\xef\xbb\xbf{"local_id": "u12", "body": "x"}',   # a byte order mark
    ]
    for body in bad:
        r = post(gw, "/send", body, tok)
        assert r.status_code == 400 and r.json()["errcode"] == "TH_BAD_REQUEST", (body, r.text)
    for body in [b'{"invite": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\\u0000"}',
                 b'{"invite": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\xff\xff"}',
                 b'{"service": "helpline\\u0000x"}',
                 b'{"resume_code": "ABCD-EFGH\\u0000"}']:
        path = "/resume" if b"resume" in body else "/invitation"
        # raw: the schema lists no 400 for /resume, though docs/gateway-api.md
        # gives 400 for any body that is not JSON
        st, _, answer, _ = raw(gw.gw_port, request_bytes("POST", API + path,
                                                         [("X-Forwarded-For", addr()), JSON], body))
        assert st == 400 and json.loads(answer)["errcode"] == "TH_BAD_REQUEST", (body, answer)
    r = post(gw, "/redeem", b'{"service": "helpline", "consent": {"version": "1", "language": "e\\u0000n", '
             b'"agreed": true}}', ip=addr())
    assert r.status_code == 400
    send_and_see(gw, hs, tok, room, "after the bad ones")
    sent = [c["body"] for rm, _, c in hs.sends()[before:] if rm == room]
    assert sent == ["after the bad ones"], sent


def test_message_size_edge(gw, hs):
    tok, guest, room, _ = new_guest(gw, hs)
    exact = "é" * (MAX_MESSAGE // 2)            # 100 bytes, 50 characters
    r = post(gw, "/send", {"local_id": "edge1", "body": exact}, tok)
    assert r.status_code == 202, r.text
    for over in ["x" * (MAX_MESSAGE + 1), exact + "x", "€" * 34]:   # 101, 101, 102 bytes
        r = post(gw, "/send", {"local_id": "over", "body": over}, tok)
        assert r.status_code == 413 and r.json()["errcode"] == "TH_TOO_LARGE"
    send_and_see(gw, hs, tok, room, "x" * MAX_MESSAGE)
    bodies = [c["body"] for rm, _, c in hs.sends() if rm == room]
    assert bodies == [exact, "x" * MAX_MESSAGE]


def test_body_over_max_body_bytes(gw, hs):
    """gateway.max_body_bytes 1024: a 1024-byte body is read, 1025 is 413."""
    tok, _, _, _ = new_guest(gw, hs)
    base = json.dumps({"local_id": "b1", "body": ""})
    ok = json.dumps({"local_id": "b1", "body": "x" * 50, "pad": "p" * (1024 - len(base) - 62)})
    ok = ok + " " * (1024 - len(ok))
    assert len(ok) == 1024
    assert post(gw, "/send", ok.encode(), tok).status_code == 202
    r = post(gw, "/send", (ok + " ").encode(), tok)
    assert r.status_code == 413 and r.json()["errcode"] == "TH_TOO_LARGE"


def test_huge_declared_length_is_refused_before_the_body(gw, hs):
    tok, _, _, _ = new_guest(gw, hs)
    for port, path, auth in [(gw.gw_port, API + "/send", "Bearer " + tok),
                             (gw.gw_port, API + "/redeem", None),
                             (gw.port, "/_matrix/app/v1/transactions/huge", "Bearer " + gw.hs_token)]:
        # Far over the cap (more than the 1 MiB a server reads and throws
        # away to answer cleanly): refused before a body byte is read.
        for length in (1024 + 2 ** 20 + 1, 10 ** 12, 2 ** 62):
            head = ("POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    "Content-Length: %d\r\n" % (path, length))
            if auth:
                head += "Authorization: %s\r\n" % auth
            if port == gw.port:
                head = head.replace("POST", "PUT", 1)
                if length < 2 ** 30:
                    continue  # the AS API's cap is 8 MiB
            (st, headers, body, _), dt = timed(lambda: raw(port, (head + "\r\n").encode(), timeout=5))
            assert st == 413, (path, length, st, body)
            assert dt < 1.0, dt
    print("huge Content-Length: 413 with no body byte sent")
    assert gw.running()


# ---- other conversations ---------------------------------------------------------------

def test_guest_cannot_reach_another_conversation(gw, hs):
    tok_a, guest_a, room_a, _ = new_guest(gw, hs)
    tok_b, guest_b, room_b, _ = new_guest(gw, hs)
    assert room_a != room_b
    # something in B's feed: staff join B's room and write
    now = int(time.time() * 1000)
    events = [member_event("$jb1", room_b, guest_b, guest_b, "join", now),
              member_event("$jb2", room_b, STAFF, STAFF, "join", now),
              message_event("$mb1", room_b, STAFF, "secret for B only", now + 1)]
    assert gw.put_txn("cross-1", {"events": events})[0] == 200
    r = get(gw, "/feed", tok_b, params={"since": 0, "timeout_ms": 0})
    assert "secret for B only" in r.text  # the control: it is there for B
    lid_b = "b-local"
    send_and_see(gw, hs, tok_b, room_b, "B writes")
    ids = {"room_id": room_b, "room": room_b, "conversation": guest_b, "guest": guest_b,
           "user_id": guest_b, "sender": guest_b, "event_id": "$mb1", "in_reply_to": "$mb1",
           "session": tok_b, "since": 0, "txn_id": "cross-1"}
    # every field A can put a foreign id in
    before = len(hs.sends())
    r = post(gw, "/send", dict(ids, local_id=lid_b, body="A writes 1"), tok_a)
    assert r.status_code == 202
    r = api.post(gw.gw_url + API + "/send", params=ids, json={"local_id": "a2", "body": "A writes 2"},
                 headers={"Authorization": "Bearer " + tok_a}, timeout=10)
    assert r.status_code == 202
    # two Authorization headers: the first one counts, never a mix
    st, _, body, _ = raw(gw.gw_port, request_bytes("GET", API + "/feed?since=0&timeout_ms=0",
                                                   [("Authorization", "Bearer " + tok_a),
                                                    ("Authorization", "Bearer " + tok_b)]))
    assert st in (200, 400) and b"secret for B" not in body
    send_and_see(gw, hs, tok_a, room_a, "A writes 3")
    for room, user, content in hs.sends()[before:]:
        assert room == room_a and user == guest_a, (room, user, content)
    assert len(hs.sends()[before:]) == 3
    for path in ("/feed", "/session"):
        for params in (ids, {"since": 0, "timeout_ms": 0, "guest": guest_b, "room_id": room_b}):
            r = get(gw, path, tok_a, params=dict(params, timeout_ms=0))
            assert r.status_code == 200
            text = r.text
            assert "secret for B" not in text and "B writes" not in text and guest_b not in text
            if path == "/session":
                assert r.json()["pseudonym"] != json.loads(get(gw, "/session", tok_b).text)["pseudonym"]
    # B's session token as a resume code, B's room as an invitation: nothing
    assert post(gw, "/resume", {"resume_code": tok_b}, ip=addr()).status_code == 401
    r = post(gw, "/invitation", {"invite": room_b}, ip=addr())
    assert r.status_code == 404 and r.json()["errcode"] == "TH_INVITE_INVALID"
    # A leaves with B's ids in the body: B's conversation stays open
    assert post(gw, "/leave", ids, tok_a).status_code == 200
    assert get(gw, "/session", tok_b).json()["state"] == "open"
    # A's own session is now good only for deleting A's data
    r = get(gw, "/session", tok_a)
    assert r.status_code == 200 and r.json()["erase_only"] is True, r.text
    assert r.json()["pseudonym"] != get(gw, "/session", tok_b).json()["pseudonym"]


# ---- invitations, limits, resume codes -----------------------------------------------------

PAST_CLOCK = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <time.h>
typedef int (*cg_fn)(clockid_t, struct timespec *);
int clock_gettime(clockid_t id, struct timespec *ts)
{
	static cg_fn real;
	if (!real)
		real = (cg_fn)dlsym(RTLD_NEXT, "clock_gettime");
	int rc = real(id, ts);
	if (!rc && id == CLOCK_REALTIME)
		ts->tv_sec -= 7200;
	return rc;
}
"""


def expired_invite(d, tmp):
    """An invitation made with the clock two hours back, valid for one hour:
    expired an hour ago.  None if no C compiler is at hand."""
    cc = shutil.which("cc")
    if not cc:
        return None
    src, so = os.path.join(tmp, "past.c"), os.path.join(tmp, "past.so")
    with open(src, "w") as f:
        f.write(PAST_CLOCK)
    subprocess.run([cc, "-shared", "-fPIC", "-o", so, src, "-ldl"], check=True)
    env = dict(os.environ, LD_PRELOAD=so, ASAN_OPTIONS="verify_asan_link_order=0:detect_leaks=0")
    r = subprocess.run([d.bin, "-c", d.config_path, "invite", "create", "--service", SERVICE,
                        "--expires", "1h", "--json"], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["link"].rsplit("#invite=", 1)[1]


def new_invite(d):
    r = d.run("invite", "create", "--service", SERVICE, "--json")
    return json.loads(r.stdout)["link"].rsplit("#invite=", 1)[1]


def test_invitations_used_expired_random_answer_alike(gw, tmp_path):
    used = new_invite(gw)
    r = post(gw, "/redeem", {"invite": used, "consent": CONSENT}, ip=addr())
    assert r.status_code == 200
    tokens = {"used": used, "random": secrets.token_urlsafe(24)[:32],
              "random2": "".join(secrets.choice("ABCDEFGHabcdefgh0123_-") for _ in range(32))}
    exp = expired_invite(gw, str(tmp_path))
    if exp:
        tokens["expired"] = exp
    answers = {}
    for name, tok in tokens.items():
        for path, body in (("/invitation", {"invite": tok}),
                           ("/redeem", {"invite": tok, "consent": CONSENT})):
            r = post(gw, path, body, ip=addr())
            hd = {k.lower(): v for k, v in r.headers.items() if k.lower() != "date"}
            answers.setdefault(path, {})[name] = (r.status_code, r.content, sorted(hd.items()))
    for path, by in answers.items():
        first = next(iter(by.values()))
        assert first[0] == 404 and json.loads(first[1])["errcode"] == "TH_INVITE_INVALID"
        for name, a in by.items():
            assert a == first, (path, name)
    print("invitations compared:", sorted(tokens))
    assert "expired" in tokens, "no C compiler: the expired invitation was not tried"


def test_address_rate_limit(gw):
    away_from_minute_edge()
    ip = addr()
    statuses = [post(gw, "/invitation", {"service": SERVICE}, ip=ip).status_code
                for _ in range(ADDR_RATE + 2)]
    assert statuses == [200] * ADDR_RATE + [429, 429], statuses
    r = post(gw, "/redeem", {"service": SERVICE, "consent": CONSENT}, ip=ip)
    assert r.status_code == 429 and r.json()["errcode"] == "TH_LIMIT_EXCEEDED"
    assert 0 < r.json()["retry_after_ms"] <= 60000
    assert post(gw, "/resume", {"resume_code": "AAAA-BBBB-CCCC-DDDD"}, ip=ip).status_code == 429
    # the page is not limited; another address is not either
    assert get(gw, "/page").status_code == 200
    assert post(gw, "/invitation", {"service": SERVICE}, ip=addr()).status_code == 200


def test_forwarded_for_is_not_trusted_unless_configured(hs):
    """Without gateway.trust_forwarded_for, a made-up X-Forwarded-For per
    request does not escape the per-address limit."""
    work = tempfile.mkdtemp(prefix="th-hostile-xff-")
    d = gateway_daemon(BIN, work, hs.url, address_rate_per_minute=ADDR_RATE)
    d.start()
    try:
        wait_gateway(d)
        away_from_minute_edge()
        statuses = [post(d, "/invitation", {"service": SERVICE}, ip=addr()).status_code
                    for _ in range(ADDR_RATE + 2)]
        assert statuses == [200] * ADDR_RATE + [429, 429], statuses
    finally:
        assert d.stop() == 0
        shutil.rmtree(work, ignore_errors=True)


def test_session_limit_is_per_guest(gw, hs):
    """A new session for the same guest (resume) starts where the old one's
    count is; new guests cost a redeem each, which the address limit caps."""
    away_from_minute_edge()
    tok, _, _, started = new_guest(gw, hs)
    codes = []
    for _ in range(SESSION_RATE + 5):
        codes.append(get(gw, "/session", tok).status_code)
        if codes[-1] == 429:
            break
    assert 429 in codes and codes.index(429) <= SESSION_RATE, codes
    r = post(gw, "/resume", {"resume_code": started["resume_code"]}, ip=addr())
    assert r.status_code == 200
    tok2 = r.json()["session"]
    assert tok2 != tok
    r = get(gw, "/session", tok2)
    assert r.status_code == 429 and r.json()["retry_after_ms"] > 0
    r = post(gw, "/send", {"local_id": "x", "body": "y"}, tok2)
    assert r.status_code == 429


def test_resume_code_guessing_is_limited(gw, hs):
    away_from_minute_edge()
    _, _, _, started = new_guest(gw, hs)
    code = started["resume_code"]
    ip = addr()
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    out = []
    for _ in range(ADDR_RATE + 3):
        guess = "-".join("".join(secrets.choice(alphabet) for _ in range(4)) for _ in range(4))
        out.append(post(gw, "/resume", {"resume_code": guess}, ip=ip).status_code)
    assert out == [401] * ADDR_RATE + [429] * 3, out
    # even the right code waits now, from that address
    assert post(gw, "/resume", {"resume_code": code}, ip=ip).status_code == 429
    assert post(gw, "/resume", {"resume_code": code}, ip=addr()).status_code == 200


# ---- file descriptors ----------------------------------------------------------------------------

def test_fd_exhaustion(hs):
    """The daemon with 128 open files at most; 400 connections to the
    gateway.  It stays up, and once they close it serves the gateway and the
    AS API again."""
    work = tempfile.mkdtemp(prefix="th-hostile-fd-")
    d = gateway_daemon(BIN, work, hs.url)
    d.start(prefix=("prlimit", "--nofile=128:128", "--"))
    try:
        wait_gateway(d)
        base = pid_fds(d.proc.pid)
        socks, refused = [], 0
        for _ in range(400):
            try:
                s = socket.create_connection(("127.0.0.1", d.gw_port), timeout=2)
                s.sendall(b"GET " + API.encode() + b"/page HTTP/1.1\r\nHost: x\r\n")
                socks.append(s)
            except OSError:
                refused += 1
        time.sleep(1.0)
        peak = pid_fds(d.proc.pid)
        assert d.running()
        try:
            as_full = d.ping(timeout=3)[0]
        except OSError:
            as_full = None
        for s in socks:
            s.close()
        t0 = time.monotonic()
        wait_gateway(d, timeout=15)
        back = time.monotonic() - t0
        assert raw(d.gw_port, request_bytes("GET", API + "/page"))[0] == 200
        assert d.ping(timeout=5)[0] == 200
        r = post(d, "/redeem", {"service": SERVICE, "consent": CONSENT})
        assert r.status_code == 200
        print("fd exhaustion: %d fds at rest, %d at the peak (limit 128), %d connects refused; "
              "AS ping while full: %s; gateway back %.0f ms after they closed"
              % (base, peak, refused, as_full, back * 1000))
        assert peak <= 128
    finally:
        rc = d.stop()
        assert rc == 0, d.log_text()[-3000:]
        shutil.rmtree(work, ignore_errors=True)
