"""One outsider cannot lock people out: budgets, headroom before the body,
cross-site pages, parked polls and resume codes, against the real daemon
(docs/reliability.md, "Budgets").  Clients come from real loopback source
addresses (127.0.0.x; the daemon does not trust X-Forwarded-For here), so the
per-address limits see what they would see on the internet.  The homeserver
is the scripted one (fakehs.py): conversations open without Synapse.

THRESHOLD_FLOOD_SECONDS sets how long each flood runs (default 15; the
acceptance run is 600)."""

import http.client
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import jsonschema
import pytest
import yaml

from fakehs import FakeHomeserver
from gateway import API, SCHEMA
from hostile_env import SERVICE, gateway_daemon, pid_fds

BIN = os.environ.get("THRESHOLD_BIN")
pytestmark = pytest.mark.skipif(not BIN, reason="THRESHOLD_BIN is not set")

FLOOD_SECONDS = float(os.environ.get("THRESHOLD_FLOOD_SECONDS", "15"))
PUBLIC_PER_HOUR = 60
CONSENT = {"version": "1", "language": "en", "agreed": True}
REDEEM = {"service": SERVICE, "consent": CONSENT}


def set_service(d, **keys):
    with open(d.config_path) as f:
        cfg = yaml.safe_load(f)
    cfg["services"][SERVICE].update(keys)
    with open(d.config_path, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)


@pytest.fixture(scope="module")
def hs():
    h = FakeHomeserver().start()
    yield h
    h.stop()


@pytest.fixture(scope="module")
def gw(hs):
    work = tempfile.mkdtemp(prefix="th-abuse-")
    d = gateway_daemon(BIN, work, hs.url)  # defaults: real addresses, 64 connections each
    set_service(d, public_per_hour=PUBLIC_PER_HOUR)
    d.start()
    wait_up(d)
    yield d
    rc = d.stop()
    assert rc == 0, d.log_text()[-3000:]
    shutil.rmtree(work, ignore_errors=True)


class Client:
    """HTTP/1.1 keep-alive from one source address."""

    def __init__(self, d, ip):
        self.d, self.ip = d, ip
        self.conn = None

    def request(self, method, path, body=None, headers=None, raw=None):
        h = dict(headers or {})
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.d.gw_port, timeout=30,
                                                       source_address=(self.ip, 0))
            try:
                self.conn.request(method, API + path, body=data, headers=h)
                r = self.conn.getresponse()
                payload = r.read()
                if r.getheader("Connection", "").lower() == "close":
                    self.close()
                try:
                    doc = json.loads(payload)
                except ValueError:
                    doc = None
                return r.status, doc, dict((k.lower(), v) for k, v in r.getheaders())
            except (http.client.HTTPException, OSError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def wait_up(d, timeout=15):
    c = Client(d, "127.0.0.1")
    deadline = time.monotonic() + timeout
    while True:
        try:
            if c.request("GET", "/page")[0] == 200:
                return c.close()
        except OSError:
            pass
        assert time.monotonic() < deadline, "the gateway did not answer"
        time.sleep(0.05)


def start_conversation(d, ip, headers=None):
    """A new person on the page: look at the entry, agree, start.  The
    redeem's (status, body); then wait until the conversation is open."""
    c = Client(d, ip)
    st, doc, _ = c.request("POST", "/invitation", {"service": SERVICE}, headers)
    assert st == 200, (st, doc)
    st, doc, _ = c.request("POST", "/redeem", REDEEM, headers)
    if st == 200:
        auth = {"Authorization": "Bearer " + doc["session"]}
        deadline = time.monotonic() + 15
        while c.request("GET", "/session", headers=auth)[1]["state"] != "open":
            assert time.monotonic() < deadline, "the conversation never opened"
            time.sleep(0.05)
    c.close()
    return st, doc


class Flood:
    """@threads keep-alive clients from @ip sending @req as fast as the
    daemon answers, until stop(); statuses counted."""

    def __init__(self, d, ip, threads=4, method="POST", path="/redeem", body=REDEEM, headers=None, raw=None):
        self.counts = {}
        self.mu = threading.Lock()
        self.stopping = threading.Event()
        self.errors = []

        def run():
            c = Client(d, ip)
            try:
                while not self.stopping.is_set():
                    st = c.request(method, path, body, headers, raw)[0]
                    with self.mu:
                        self.counts[st] = self.counts.get(st, 0) + 1
            except Exception as e:  # noqa: BLE001 - reported by stop()
                self.errors.append(repr(e))
            finally:
                c.close()
        self.threads = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(60)
        assert not self.errors, self.errors[:3]
        return self.counts


def test_one_address_flooding_the_public_entry_locks_nobody_out(gw):
    """One address floods /redeem at full speed: it gets its own small
    budget (4 conversations an hour, at most a tenth of the service's 60)
    and 429 for the rest; meanwhile and afterwards, new people from other
    addresses start a conversation on their first try."""
    flood = Flood(gw, "127.0.0.1")
    try:
        time.sleep(min(2.0, FLOOD_SECONDS / 4))
        first = start_conversation(gw, "127.0.0.2")
        time.sleep(max(0.0, FLOOD_SECONDS - 2.0))
        during = start_conversation(gw, "127.0.0.4")
    finally:
        counts = flood.stop()
    after = start_conversation(gw, "127.0.0.5")
    total = sum(counts.values())
    print("flood from one address for %.0f s: %d redeems answered %s; new people from other "
          "addresses: %d, %d, %d" % (FLOOD_SECONDS, total, counts, first[0], during[0], after[0]))
    assert first[0] == 200 and during[0] == 200 and after[0] == 200, (first, during, after)
    assert counts.get(200, 0) == 4, counts  # its own budget, not the service's
    assert set(counts) <= {200, 429}, counts
    assert total > 100, counts  # it really flooded
    # The flooder stays refused: its budget refills one every 15 minutes.
    c = Client(gw, "127.0.0.1")
    st, doc, _ = c.request("POST", "/redeem", REDEEM)
    c.close()
    assert st == 429 and doc["errcode"] == "TH_LIMIT_EXCEEDED", doc


@pytest.mark.parametrize("kind", ["origin", "sec_fetch_site", "text_plain", "form"])
def test_a_cross_site_page_cannot_spend_the_budget(gw, kind):
    """A hostile page makes its visitors' browsers POST /redeem: with its own
    Origin, with Sec-Fetch-Site: cross-site, or as a simple text/plain or
    form request (which browsers send without asking).  Every one is refused
    before anything is counted; the same address, on the guest page itself,
    then starts a conversation on the first try."""
    ip = {"origin": "127.0.0.10", "sec_fetch_site": "127.0.0.11", "text_plain": "127.0.0.12",
          "form": "127.0.0.13"}[kind]
    body, raw, headers = REDEEM, None, {}
    if kind == "origin":
        headers = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
    elif kind == "sec_fetch_site":
        headers = {"Sec-Fetch-Site": "cross-site"}  # no Origin at all
    elif kind == "text_plain":
        body, raw = None, json.dumps(REDEEM).encode()
        headers = {"Content-Type": "text/plain;charset=UTF-8"}
    else:
        body, raw = None, b"service=" + SERVICE.encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
    flood = Flood(gw, ip, threads=2, body=body, raw=raw, headers=headers)
    try:
        time.sleep(FLOOD_SECONDS / 3)
        other = start_conversation(gw, "127.0.0.20")
        time.sleep(FLOOD_SECONDS / 3)
    finally:
        counts = flood.stop()
    # The page's own requests, from the same address as the flood's victims.
    own = "http://127.0.0.1:%d" % gw.gw_port
    same = start_conversation(gw, ip, {"Origin": own, "Sec-Fetch-Site": "same-origin"})
    expected = 415 if kind in ("text_plain", "form") else 403
    print("cross-site flood (%s) from %s: %s; another address %d, the same address on the page %d"
          % (kind, ip, counts, other[0], same[0]))
    assert set(counts) == {expected}, counts
    assert other[0] == 200 and same[0] == 200, (other, same)
    c = Client(gw, ip)
    st, doc, _ = c.request("POST", "/redeem", body, headers, raw)
    c.close()
    assert doc["errcode"] == ("TH_CONTENT_TYPE" if expected == 415 else "TH_CROSS_SITE"), doc
    assert doc["error"], doc


def test_same_site_and_null_origins_are_refused(gw):
    c = Client(gw, "127.0.0.21")
    for h in ({"Origin": "null"}, {"Sec-Fetch-Site": "same-site"},
              {"Origin": "http://127.0.0.1:%d.evil.example" % gw.gw_port},
              {"Origin": "http://127.0.0.1:%d" % (gw.gw_port + 1)}):
        st, doc, _ = c.request("POST", "/redeem", REDEEM, h)
        assert st == 403 and doc["errcode"] == "TH_CROSS_SITE", (h, st, doc)
    # The page's own origin, by gateway.public_url or by Host, is fine.
    st, _, _ = c.request("POST", "/invitation", {"service": SERVICE},
                         {"Origin": "http://127.0.0.1:%d" % gw.gw_port})
    assert st == 200
    c.close()


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _sanitized(binary):
    """True for a build with AddressSanitizer (cmake -DTHRESHOLD_SANITIZE=ON)."""
    with open(binary, "rb") as f:
        return b"__asan_init" in f.read()


def test_token_less_uploads_hold_no_memory(gw):
    """1,000 connections start an upload with no session token: each says
    1 MiB is coming and sends 128 KiB of it, and stays open.  The token is
    checked on the headers, so nothing of the bodies is kept: the daemon's
    resident memory stays under 64 MiB (it would need 125 MiB to keep them).
    They come from 16 addresses, within gateway.max_connections_per_address."""
    base_rss = rss_kib(gw.proc.pid)
    head = ("POST %s/upload?local_id=x1&name=a.jpg HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/octet-stream\r\nContent-Length: 1048576\r\n\r\n" % API).encode()
    chunk = b"\xff\xd8\xff" + b"\x00" * (128 * 1024 - 3)
    socks = []
    try:
        for i in range(1000):
            s = socket.socket()
            s.bind(("127.0.1.%d" % (i % 16 + 1), 0))
            s.settimeout(30)
            s.connect(("127.0.0.1", gw.gw_port))
            s.sendall(head + chunk)
            socks.append(s)
        deadline = time.monotonic() + 30
        while pid_fds(gw.proc.pid) < 1000 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # let it read what was sent
        peak = rss_kib(gw.proc.pid)
        fds = pid_fds(gw.proc.pid)
    finally:
        for s in socks:
            s.close()
    print("1,000 token-less uploads of 128 KiB each, held open: VmRSS %.1f -> %.1f MiB, %d fds"
          % (base_rss / 1024, peak / 1024, fds))
    assert fds >= 1000, fds  # they were all held
    # Measured on the plain build: under AddressSanitizer resident memory is
    # mostly shadow memory and the quarantine of freed blocks, not the daemon's.
    if not _sanitized(BIN):
        assert peak < 64 * 1024, peak
    # And one such upload is answered 401 from its headers alone.
    s = socket.create_connection(("127.0.0.1", gw.gw_port), timeout=10)
    try:
        s.sendall(head.replace(b"1048576", b"4194304"))
        answer = s.recv(4096)
    finally:
        s.close()
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert b"TH_SESSION_INVALID" in answer


def test_per_address_connection_cap(hs):
    """Not behind a proxy: one address holds at most
    gateway.max_connections_per_address (8 here); its next connection is
    closed unanswered, while another address is served."""
    work = tempfile.mkdtemp(prefix="th-abuse-cap-")
    d = gateway_daemon(BIN, work, hs.url, max_connections_per_address=8)
    d.start()
    held = []
    try:
        wait_up(d)
        time.sleep(0.3)  # wait_up's connection is gone
        for _ in range(8):
            s = socket.socket()
            s.bind(("127.0.0.30", 0))
            s.connect(("127.0.0.1", d.gw_port))
            held.append(s)
        time.sleep(0.5)
        ninth = socket.socket()
        ninth.bind(("127.0.0.30", 0))
        ninth.settimeout(10)
        ninth.connect(("127.0.0.1", d.gw_port))
        try:
            ninth.sendall(b"GET " + API.encode() + b"/page HTTP/1.1\r\nHost: x\r\n\r\n")
            got = ninth.recv(100)
        except OSError:
            got = b""
        ninth.close()
        other = Client(d, "127.0.0.31").request("GET", "/page")[0]
        print("per-address cap 8: the 9th connection got %r; another address %d" % (got[:20], other))
        assert got == b"", got
        assert other == 200
    finally:
        for s in held:
            s.close()
        assert d.stop() == 0
        shutil.rmtree(work, ignore_errors=True)


def test_bodies_in_flight_are_capped(hs):
    """gateway.max_body_bytes_in_flight 1 MiB, uploads up to 512 KiB: two
    slow uploads hold it all; a third is answered 503 from its headers, with
    retry_after_ms; once one finishes, the next is taken."""
    work = tempfile.mkdtemp(prefix="th-abuse-flight-")
    d = gateway_daemon(BIN, work, hs.url, max_upload_bytes=524288, max_body_bytes_in_flight=1048576)
    d.start()
    slow = []
    try:
        wait_up(d)
        c = Client(d, "127.0.0.40")
        st, doc, _ = c.request("POST", "/redeem", REDEEM)
        assert st == 200, doc
        token = doc["session"]
        c.close()
        head = ("POST %s/upload?local_id=%%s&name=a.png HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Authorization: Bearer %s\r\nContent-Type: application/octet-stream\r\n"
                "Content-Length: 524288\r\n\r\n" % (API, token))
        for i in range(2):
            s = socket.create_connection(("127.0.0.1", d.gw_port), timeout=10)
            s.sendall((head % ("s%d" % i)).encode() + b"\x89PNG")
            slow.append(s)
        time.sleep(0.5)
        s = socket.create_connection(("127.0.0.1", d.gw_port), timeout=10)
        s.sendall((head % "s2").encode() + b"\x89PNG" + b"\x00" * (524288 - 4))  # thrown away
        answer = s.recv(4096)
        s.close()
        print("third upload while two hold 1 MiB:", answer.split(b"\r\n")[0])
        assert answer.startswith(b"HTTP/1.1 503"), answer[:300]
        doc = json.loads(answer.partition(b"\r\n\r\n")[2])
        assert doc["errcode"] == "TH_UNAVAILABLE" and doc["retry_after_ms"] > 0, doc
        slow.pop(0).close()  # one gives up: its bytes are free again
        deadline = time.monotonic() + 10
        while True:  # now the whole upload is sent, and answered
            s = socket.create_connection(("127.0.0.1", d.gw_port), timeout=10)
            s.sendall((head % "s3").encode() + b"\x89PNG\r\n\x1a\n" + b"\x00" * (524288 - 8))
            answer = s.recv(4096)
            s.close()
            if not answer.startswith(b"HTTP/1.1 503"):
                break
            assert time.monotonic() < deadline, "the freed bytes were never given back"
            time.sleep(0.2)
        assert not answer.startswith(b"HTTP/1.1 5"), answer[:200]
    finally:
        for s in slow:
            s.close()
        assert d.stop() == 0
        shutil.rmtree(work, ignore_errors=True)


def test_413_closes_the_connection(gw):
    """A body a little over its cap is read and thrown away, answered 413,
    and the connection is closed (nothing more is read from that client)."""
    c = Client(gw, "127.0.0.50")
    st, doc, _ = c.request("POST", "/redeem", REDEEM)
    assert st == 200
    token = doc["session"]
    body = json.dumps({"local_id": "big", "body": "x" * 70000}).encode()
    s = socket.create_connection(("127.0.0.1", gw.gw_port), timeout=10)
    s.sendall(("POST %s/send HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
               "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
               % (API, token, len(body))).encode() + body)
    got = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break  # closed by the daemon
        got += chunk
    s.close()
    head = got.partition(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 413"), got[:200]
    assert b"connection: close" in head, head


def test_upload_and_json_routes_need_their_content_type(gw):
    c = Client(gw, "127.0.0.51")
    st, doc, _ = c.request("POST", "/redeem", REDEEM)
    token = doc["session"]
    auth = {"Authorization": "Bearer " + token}
    for h in ({"Content-Type": "text/plain"}, {"Content-Type": "multipart/form-data; boundary=x"}, {}):
        st, doc, _ = c.request("POST", "/upload?local_id=u1&name=a.png", headers=dict(auth, **h),
                               raw=b"\x89PNG\r\n\x1a\n")
        assert st == 415 and doc["errcode"] == "TH_CONTENT_TYPE", (h, st, doc)
    st, doc, _ = c.request("POST", "/leave", headers=dict(auth, **{"Content-Type": "text/plain"}), raw=b"{}")
    assert st == 415 and doc["errcode"] == "TH_CONTENT_TYPE", doc
    st, doc, _ = c.request("GET", "/session", headers=auth)
    assert st == 200 and doc["state"] != "closed"  # the refused leave did nothing
    c.close()


def test_parked_polls_are_capped_per_guest(gw):
    """A guest holds at most gateway.max_polls_per_guest (4) waiting polls,
    whatever its sessions; one more is answered 429 at once with
    retry_after_ms, and once the others go, polls wait again."""
    c = Client(gw, "127.0.0.60")
    st, doc, _ = c.request("POST", "/redeem", REDEEM)
    assert st == 200
    token = doc["session"]
    auth = {"Authorization": "Bearer " + token}
    nxt = c.request("GET", "/feed?timeout_ms=0", headers=auth)[1]["next"]
    req = ("GET %s/feed?since=%d&timeout_ms=60000 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n"
           % (API, nxt, token)).encode()
    socks = []
    try:
        for _ in range(5):
            s = socket.create_connection(("127.0.0.1", gw.gw_port), timeout=30)
            s.sendall(req)
            socks.append(s)
        # Exactly one of the five is answered at once (whichever came last):
        # 429 with retry_after_ms.  The other four stay parked.
        ready, _, _ = select.select(socks, [], [], 30)
        assert len(ready) >= 1, "no poll was refused"
        answer = ready[0].recv(65536)
        assert answer.startswith(b"HTTP/1.1 429"), answer[:200]
        doc = json.loads(answer.partition(b"\r\n\r\n")[2])
        assert doc["errcode"] == "TH_LIMIT_EXCEEDED" and doc["retry_after_ms"] > 0, doc
        time.sleep(0.5)
        ready, _, _ = select.select([s for s in socks if s is not ready[0]], [], [], 0)
        assert ready == [], "more than one poll was answered"
    finally:
        for s in socks:
            s.close()
    deadline = time.monotonic() + 15
    while True:  # the vanished ones are let go within about a second
        st, doc, _ = c.request("GET", "/feed?since=%d&timeout_ms=1500" % nxt, headers=auth)
        if st == 200:
            break
        assert st == 429 and time.monotonic() < deadline, (st, doc)
        time.sleep(0.3)
    c.close()


def test_a_resume_code_works_once_and_the_old_page_is_told(gw):
    """Continue on another device: the code works once and is replaced (the
    answer carries the new one); the old code no longer works; the first
    device keeps its session, and its feed says the conversation was
    continued on another device."""
    phone = Client(gw, "127.0.0.70")
    st, doc, _ = phone.request("POST", "/redeem", REDEEM)
    assert st == 200
    code, auth = doc["resume_code"], {"Authorization": "Bearer " + doc["session"]}
    nxt = phone.request("GET", "/feed?timeout_ms=0", headers=auth)[1]["next"]
    laptop = Client(gw, "127.0.0.71")
    st, doc2, _ = laptop.request("POST", "/resume", {"resume_code": code})
    assert st == 200, doc2
    assert doc2["resume_code"] and doc2["resume_code"] != code
    st, doc3, _ = laptop.request("POST", "/resume", {"resume_code": code})
    assert st == 401 and doc3["errcode"] == "TH_SESSION_INVALID", doc3
    # The phone still works, and is told.
    st, feed, _ = phone.request("GET", "/feed?since=%d&timeout_ms=5000" % nxt, headers=auth)
    assert st == 200
    doc = dict(SCHEMA["$defs"]["feed"], **{"$defs": SCHEMA["$defs"]})
    jsonschema.validate(feed, doc, cls=jsonschema.Draft202012Validator)
    cont = [e for e in feed["events"] if e["kind"] == "continued"]
    assert len(cont) == 1 and "another device" in cont[0]["body"], feed
    assert phone.request("GET", "/session", headers=auth)[0] == 200
    # The new code works (once).
    st, doc4, _ = laptop.request("POST", "/resume", {"resume_code": doc2["resume_code"]})
    assert st == 200 and doc4["resume_code"] not in (code, doc2["resume_code"])
    phone.close()
    laptop.close()


# ---- IPv6: counted by /64 ----------------------------------------------------------

NET_A1, NET_A2, NET_B = "fd00:7468:0:1::1", "fd00:7468:0:1::2", "fd00:7468:0:2::1"


def _ipv6_scenario():
    """Run inside a private network namespace (see the test below): the
    daemon listens on "::"; addresses in two /64s reach it."""
    for cmd in (["ip", "link", "set", "lo", "up"],
                ["ip", "-6", "addr", "add", NET_A1 + "/64", "dev", "lo", "nodad"],
                ["ip", "-6", "addr", "add", NET_A2 + "/64", "dev", "lo", "nodad"],
                ["ip", "-6", "addr", "add", NET_B + "/64", "dev", "lo", "nodad"]):
        subprocess.run(cmd, check=True)
    hs = FakeHomeserver().start()
    work = tempfile.mkdtemp(prefix="th-abuse-v6-")
    d = gateway_daemon(BIN, work, hs.url, listen_address="::")
    d.gw_url = "http://[::1]:%d" % d.gw_port
    with open(d.config_path) as f:
        cfg = yaml.safe_load(f)
    cfg["gateway"]["public_url"] = d.gw_url
    cfg["services"][SERVICE]["public_per_hour"] = PUBLIC_PER_HOUR
    with open(d.config_path, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    d.start()
    out = {}
    try:
        def redeem(ip):
            c = http.client.HTTPConnection("::1" if ":" in ip else "127.0.0.1", d.gw_port, timeout=10,
                                           source_address=(ip, 0))
            c.request("POST", API + "/redeem", body=json.dumps(REDEEM),
                      headers={"Content-Type": "application/json"})
            st = c.getresponse().status
            c.close()
            return st
        deadline = time.monotonic() + 15
        while True:
            try:
                c = http.client.HTTPConnection("::1", d.gw_port, timeout=2)
                c.request("GET", API + "/page")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the gateway did not answer on ::1"
            time.sleep(0.05)
        out["a1"] = [redeem(NET_A1) for _ in range(8)]
        out["a2"] = redeem(NET_A2)   # same /64
        out["b"] = redeem(NET_B)     # another /64
    finally:
        out["rc"] = d.stop()
        hs.stop()
        shutil.rmtree(work, ignore_errors=True)
    print("RESULT " + json.dumps(out))


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"),
                    reason="needs root for a private network namespace")
def test_ipv6_is_counted_by_its_64():
    """IPv6 addresses count by their /64 (what one home or phone network is
    given): after one address spends its /64's public entry budget, another
    address in the same /64 is refused too, while one in another /64 starts
    a conversation.  Run in a private network namespace
    (unshare -n), with its own loopback addresses."""
    r = subprocess.run(["unshare", "-n", "--", sys.executable, os.path.abspath(__file__), "ipv6"],
                       capture_output=True, text=True, timeout=120)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    assert r.returncode == 0 and lines, (r.returncode, r.stdout[-2000:], r.stderr[-3000:])
    out = json.loads(lines[-1][len("RESULT "):])
    print("IPv6 by /64:", out)
    assert out["a1"] == [200] * 4 + [429] * 4, out
    assert out["a2"] == 429, out  # the same /64: its budget is spent
    assert out["b"] == 200, out
    assert out["rc"] == 0, out


if __name__ == "__main__" and sys.argv[1:] == ["ipv6"]:
    _ipv6_scenario()
