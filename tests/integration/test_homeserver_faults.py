"""The homeserver fails while a guest writes through the gateway.

With a scripted fake homeserver (tests/integration/fakehs.py, no Synapse):
the guest's messages are accepted (202) at once while every send answers 500,
then 429 with retry_after_ms, then a proxy's HTML error page, then nothing at
all (a hang past client.timeout_ms); the gateway keeps answering throughout;
when the homeserver recovers each message is delivered exactly once, in
order, every attempt at a message under the same Matrix transaction id.
A picture staff sent is fetched for the guest's page while the homeserver
hangs or answers 500: an error within client.timeout_ms and a margin, the
gateway answering everything else meanwhile, a full fetch queue refused
with 503, a guest who gives up in the middle harming nothing.

With the real Synapse (the conftest `env`): Synapse is stopped in the middle
of a conversation, the guest writes while it is down, Synapse comes back;
staff see the message once and the guest's feed gets their later reply.
"""

import base64
import json
import os
import shutil
import struct
import tempfile
import threading
import time

import pytest
import requests

from fakehs import FakeHomeserver
from media_samples import JPEG_16X8
from helpers import wait
from standalone import Standalone, free_port

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.abspath(os.environ.get("THRESHOLD_SOURCE_DIR")
                             or os.path.join(HERE, "..", ".."))
BIN = os.path.abspath(os.environ.get("THRESHOLD_BIN")
                      or os.path.join(SOURCE_DIR, "build", "threshold"))
API = "/_threshold/gateway/v1"
CLIENT_TIMEOUT_MS = 2000
MAX_BACKOFF_MS = 3000
STAFF = "@sam:localhost"


class Page:
    """The guest page, reduced to what these tests need."""

    def __init__(self, base):
        self.base = base
        self.session = None

    def call(self, method, path, body=None, timeout=10):
        headers = {"Authorization": "Bearer " + self.session} if self.session else {}
        t = time.monotonic()
        r = requests.request(method, self.base + API + path, json=body, headers=headers, timeout=timeout)
        return r, time.monotonic() - t

    def redeem(self):
        r, _ = self.call("POST", "/redeem", {"service": "helpline", "consent": {
            "version": "1", "language": "en", "agreed": True}})
        assert r.status_code == 200, r.text
        self.session = r.json()["session"]
        return r.json()

    def send(self, local_id, text, ready_timeout=20):
        deadline = time.monotonic() + ready_timeout
        while True:
            r, took = self.call("POST", "/send", {"local_id": local_id, "body": text})
            if r.status_code != 409 or time.monotonic() > deadline:
                return r, took
            time.sleep(0.05)


@pytest.fixture
def fake_setup():
    workdir = tempfile.mkdtemp(prefix="threshold-hsfault-")
    hs = FakeHomeserver().start()
    gw_port = free_port()
    d = Standalone(BIN, workdir, log_level="info", extra={
        "homeserver": {"url": hs.url, "server_name": "localhost"},
        "client": {"timeout_ms": CLIENT_TIMEOUT_MS, "connect_timeout_ms": 500,
                   "outbox_max_backoff_ms": MAX_BACKOFF_MS},
        "gateway": {"listen_address": "127.0.0.1", "listen_port": gw_port,
                    "public_url": "http://127.0.0.1:%d" % gw_port,
                    "public_per_address_per_hour": 10000, "waiting_notice_seconds": 0},
        "services": {"helpline": {"display_name": "Test Helpline", "staff_room": "!staff:localhost",
                                  "public_entry": True, "public_per_hour": 100000}},
        "roles": {"staff": [STAFF]},
    }).setup()
    d.start()
    base = "http://127.0.0.1:%d" % gw_port
    wait(lambda: requests.get(base + API + "/page", timeout=2).status_code == 200, 10, "the gateway")
    yield d, hs, base
    d.kill()
    hs.stop()
    if os.environ.get("THRESHOLD_KEEP") == "1":
        print("kept %s" % workdir)
    else:
        shutil.rmtree(workdir, ignore_errors=True)


def outbox_pending(d):
    return json.loads(d.run("status", "--json").stdout)["outbox_pending"]


def test_gateway_accepts_while_homeserver_fails_and_delivers_once(fake_setup):
    if not os.access(BIN, os.X_OK):
        pytest.fail("Threshold binary not found at %s (build it, or set THRESHOLD_BIN)" % BIN)
    d, hs, base = fake_setup
    page = Page(base)
    page.redeem()
    r, _ = page.send("first", "Hello")  # waits while the room is made
    assert r.status_code == 202, r.text
    wait(lambda: outbox_pending(d) == 0, 10, "the outbox draining")
    assert hs.by_local_id() == {"first": 1}
    t0 = time.monotonic()

    # Every send now fails with 500.  The guest is still answered at once.
    hs.fail("500", match="/send/")
    r, took = page.send("during-1", "Are you there?")
    assert r.status_code == 202 and r.content == b"", r.text
    assert took < 1.0, took
    wait(lambda: [s for _, s in hs.attempts("/send/")].count(500) >= 2, 10,
         "two attempts answered 500")

    # 429 with retry_after_ms: the wait is honoured (under the backoff cap).
    hs.fail("429", match="/send/", retry_after_ms=1500)
    n = len(hs.attempts("/send/"))
    wait(lambda: len(hs.attempts("/send/")) >= n + 3, 15, "three attempts answered 429")
    times = [t for t, s in hs.attempts("/send/") if s == 429]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps and min(gaps) >= 1.4, gaps

    # A second message while it is stuck: accepted too.
    r, took = page.send("during-2", "Hello?")
    assert r.status_code == 202 and took < 1.0, (r.text, took)

    # A proxy in front of the homeserver answers with an HTML error page.
    hs.fail("garbage", match="/send/")
    n = len(hs.attempts("/send/"))
    wait(lambda: len(hs.attempts("/send/")) >= n + 2, 15, "two attempts answered 502 HTML")

    # The homeserver hangs: each attempt times out after client.timeout_ms.
    # The gateway keeps answering meanwhile.
    hs.fail("hang", match="/send/")
    n = len(hs.attempts("/send/"))
    wait(lambda: len(hs.attempts("/send/")) >= n + 1, 15, "an attempt that hangs")
    worst = 0.0
    for path in ("/session", "/feed?timeout_ms=0", "/session"):
        r, took = page.call("GET", path)
        assert r.status_code == 200, r.text
        worst = max(worst, took)
    other = Page(base)
    r, took = other.call("POST", "/redeem", {"service": "helpline", "consent": {
        "version": "1", "language": "en", "agreed": True}})
    assert r.status_code == 200, r.text
    worst = max(worst, took)
    # A gateway that waited on the homeserver would take a whole client.timeout_ms.
    assert worst < 0.75 * CLIENT_TIMEOUT_MS / 1000, "the gateway waited on the stuck outbox: %.2f s" % worst
    time.sleep(CLIENT_TIMEOUT_MS / 1000 + 0.5)
    assert len(hs.attempts("/send/")) >= n + 1
    assert hs.by_local_id() == {"first": 1}

    # Recovery: both delivered, once each, in order, the first under one txn id throughout.
    hs.heal()
    healed = time.monotonic()
    wait(lambda: outbox_pending(d) == 0, 30, "the outbox draining after recovery")
    took = time.monotonic() - healed
    msgs = [m for m in hs.delivered() if m["content"].get("org.threshold.local_id")]
    assert [m["content"]["org.threshold.local_id"] for m in msgs] == ["first", "during-1", "during-2"]
    assert [m["content"]["body"] for m in msgs] == ["Hello", "Are you there?", "Hello?"]
    stuck = msgs[1]["path"]
    # In the guest's room (its own outbox lane; the staff room's notice about
    # the second guest is tried in another) every failed attempt was at it.
    room_sends = stuck.split("/send/")[0] + "/send/"
    fault_paths = {p for (t, _, p, _, s) in hs.requests if p.startswith(room_sends) and t > t0 and s != 200}
    assert fault_paths == {stuck}, "retries used other transaction ids: %r" % fault_paths
    attempts = [s for (t, _, p, _, s) in hs.requests if p == stuck]
    assert attempts[-1] == 200 and attempts.count(200) == 1, attempts
    assert {500, 429, 502, 0} <= set(attempts), attempts

    # The page resends after a network error on its side: still once.
    r, _ = page.send("during-1", "Are you there?")
    assert r.status_code == 202
    time.sleep(0.5)
    wait(lambda: outbox_pending(d) == 0, 10, "the outbox draining")
    assert hs.by_local_id() == {"first": 1, "during-1": 1, "during-2": 1}

    # The homeserver echoes the guest's message back (an AS transaction):
    # the page sees it as its own, by local id, so it can show "sent".
    guest, room = msgs[1]["user_id"], msgs[1]["room"]
    now = int(time.time() * 1000)
    events = [{"type": "m.room.member", "room_id": room, "sender": guest, "state_key": guest,
               "event_id": "$join-echo", "origin_server_ts": now,
               "content": {"membership": "join"}},
              {"type": "m.room.message", "room_id": room, "sender": guest,
               "event_id": "$during-1-echo", "origin_server_ts": now + 1,
               "content": msgs[1]["content"]}]
    status, _ = d.put_txn("echo-1", {"events": events})
    assert status == 200
    r, _ = page.call("GET", "/feed?since=0&timeout_ms=0")
    mine = [e for e in r.json()["events"] if e.get("local_id") == "during-1"]
    assert len(mine) == 1 and mine[0]["from"]["role"] == "self", r.json()
    assert d.verify().returncode == 0
    log = d.log_text()
    assert "attempt" in log and "retrying" in log
    print("\nfaults from t0: recovered %.1f s after the fake healed; %d attempts at the stuck "
          "message (%s)" % (took, len(attempts),
                            ", ".join("%s x%d" % (s or "hang", attempts.count(s))
                                      for s in sorted(set(attempts)))))


def _staff_picture(d, hs, page):
    """The guest's room made, the guest joined, staff send a JPEG the fake
    homeserver holds; the feed entry's id."""
    r, _ = page.send("hello", "Hello")
    assert r.status_code == 202, r.text
    mine = wait(lambda: [m for m in hs.delivered()
                         if m["content"].get("org.threshold.local_id") == "hello"], 10, "the message")
    guest, room = mine[0]["user_id"], mine[0]["room"]
    def seg(marker, data):
        return bytes([0xff, marker]) + struct.pack(">H", len(data) + 2) + data
    # A real JPEG (the gateway rebuilds staff's pictures from their pixels),
    # with an EXIF segment saying where it was taken.
    real = base64.b64decode(JPEG_16X8)
    jpeg = real[:2] + seg(0xE1, b"Exif\x00\x00GPS 51.5N") + real[2:]
    mxc = hs.add_media(jpeg)
    now = int(time.time() * 1000)
    events = [{"type": "m.room.member", "room_id": room, "sender": guest, "state_key": guest,
               "event_id": "$media-join", "origin_server_ts": now, "content": {"membership": "join"}},
              {"type": "m.room.message", "room_id": room, "sender": STAFF, "event_id": "$media-pic",
               "origin_server_ts": now + 1,
               "content": {"msgtype": "m.image", "body": "map.jpg", "url": mxc,
                           "info": {"mimetype": "image/jpeg", "size": len(jpeg)}}}]
    status, _ = d.put_txn("media-1", {"events": events})
    assert status == 200
    r, _ = page.call("GET", "/feed?since=0&timeout_ms=0")
    pics = [e for e in r.json()["events"] if e.get("attachment")]
    assert len(pics) == 1 and pics[0]["attachment"]["name"] == "map.jpg", r.json()
    assert "mxc" not in r.text and mxc[6:] not in r.text
    return pics[0]["id"]


def test_media_fetch_when_the_homeserver_hangs_or_fails(fake_setup):
    if not os.access(BIN, os.X_OK):
        pytest.fail("Threshold binary not found at %s (build it, or set THRESHOLD_BIN)" % BIN)
    d, hs, base = fake_setup
    page = Page(base)
    page.redeem()
    pic = _staff_picture(d, hs, page)

    # Healthy: the picture, fetched with the appservice's token, without its EXIF.
    r, _ = page.call("GET", "/media/%d" % pic)
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/jpeg", r.text
    assert b"GPS" not in r.content and r.content.startswith(b"\xff\xd8")
    assert hs.media_auth[-1] == "Bearer " + d.as_token

    # The homeserver hangs: the answer is an error after client.timeout_ms,
    # not a hang, and the gateway answers everything else meanwhile.
    hs.fail("hang", match="/media/")
    got = {}

    def fetch(key, timeout=30):
        try:
            got[key] = page.call("GET", "/media/%d" % pic, timeout=timeout)
        except requests.RequestException as e:
            got[key] = e
    slow = threading.Thread(target=fetch, args=("hang",))
    slow.start()
    hs.wait(lambda r: "/media/" in r.raw_path and r.status == 0, 5, "a media download that hangs")
    worst = 0.0
    for path in ("/session", "/feed?timeout_ms=0", "/media/%d" % (pic + 1000), "/session"):
        r, took = page.call("GET", path)
        assert r.status_code in (200, 404), r.text
        worst = max(worst, took)
    assert worst < 1.0, "the gateway waited on the media download: %.2f s" % worst
    slow.join(30)
    r, took = got["hang"]
    assert r.status_code == 502, r.text
    j = r.json()
    assert j["errcode"] == "TH_UNAVAILABLE" and j["retry_after_ms"] > 0, j
    assert CLIENT_TIMEOUT_MS / 1000 - 0.2 <= took < CLIENT_TIMEOUT_MS / 1000 + 1.5, took
    assert r.headers["Content-Type"] == "application/json"

    # It answers 500: an error at once.
    hs.fail("500", match="/media/")
    r, took = page.call("GET", "/media/%d" % pic)
    assert r.status_code == 502 and r.json()["errcode"] == "TH_UNAVAILABLE", r.text
    assert took < 1.0, took

    # Hanging again, with more requests than the queue holds: the rest are
    # refused at once with 503; a guest who gives up mid-fetch harms nothing.
    hs.fail("hang", match="/media/")
    hung = len(hs.seen(lambda r: "/media/" in r.raw_path and r.status == 0))
    quitter = threading.Thread(target=fetch, args=("quit", 0.5))
    quitter.start()
    hs.wait(lambda r: "/media/" in r.raw_path and r.status == 0
            and len(hs.seen(lambda q: "/media/" in q.raw_path and q.status == 0)) > hung,
            5, "the quitter's download hanging")
    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(19)]
    for t in threads:
        t.start()
    refused = wait(lambda: [v for k, v in got.items() if isinstance(k, int) and not isinstance(v, Exception)
                            and v[0].status_code == 503], 10, "a 503 for a full queue")
    assert refused[0][0].json()["retry_after_ms"] > 0 and refused[0][1] < 1.0, refused[0][0].text
    quitter.join(10)
    assert isinstance(got["quit"], requests.Timeout), got["quit"]
    hs.heal()
    for t in threads:
        t.join(60)
    statuses = sorted(got[i][0].status_code for i in range(19))
    print("media requests while hung, then healed: %s" % statuses)
    assert set(statuses) <= {200, 502, 503} and statuses.count(200) >= 10, statuses
    r, _ = page.call("GET", "/media/%d" % pic)
    assert r.status_code == 200, r.text
    assert d.running()
    log = d.log_text()
    assert "mxc" not in log and "/media/download" not in log and d.as_token not in log
    assert "fetching a picture or file from the homeserver failed" in log, log[-2000:]


# ---- the real Synapse ---------------------------------------------------------

@pytest.fixture(scope="module")
def service(env):
    """The "helpline" service of test_gateway.py, set up for this module."""
    import test_gateway
    yield from test_gateway.service.__wrapped__(env)


def synapse_available():
    return os.geteuid() == 0 or shutil.which("sudo") is not None


@pytest.mark.skipif(not synapse_available(), reason="Synapse's chroot needs root or sudo")
def test_synapse_down_mid_conversation_guest_message_arrives_once(env, threshold, service):
    from gateway import Guest
    from test_gateway import history, new_invite, staff_join_portal
    from gateway import invite_link_token
    from mx import Client, run

    guest = Guest(env.gw_url)
    guest.redeem(invite=invite_link_token(new_invite(threshold)["link"]))
    portal = staff_join_portal(env, service["staff_room"], guest.pseudonym)
    first = guest.send("Before the outage")
    guest.wait_for(lambda e: e.get("local_id") == first, what="the first message's echo")

    env.hs.stop()
    down = time.monotonic()
    try:
        t = time.monotonic()
        lid = guest.send("Sent while the homeserver was down")
        assert time.monotonic() - t < 2.0
        r = guest.get("/session")
        assert r.status_code == 200 and r.json()["state"] == "open", r.text
        time.sleep(3)  # a few failed attempts
    finally:
        env.hs.start()
    restarted = time.monotonic()

    def staff_copies():
        return [ev for ev in history(env, portal)
                if ev.get("content", {}).get("body") == "Sent while the homeserver was down"]
    copies = wait(staff_copies, 60, "the message sent during the outage reaching staff", step=0.5)
    arrived = time.monotonic() - restarted
    time.sleep(2)
    copies = staff_copies()
    assert len(copies) == 1, copies
    assert copies[0]["content"].get("org.threshold.local_id") == lid

    async def reply():
        async with Client.for_user(env, "staff") as s:
            await s.send_text(portal, "Sorry, we had an outage. I am here now.")
    run(reply())
    got = guest.wait_for(lambda e: e.get("body") == "Sorry, we had an outage. I am here now.",
                         timeout=60, what="the staff reply after the outage")
    assert got["from"]["role"] == "staff"
    guest.wait_for(lambda e: e.get("local_id") == lid, what="the outage message's echo")
    guest.poll(timeout_ms=500)
    assert [e.get("local_id") for e in guest.seen].count(lid) == 1
    assert [e.get("body") for e in guest.seen].count("Sorry, we had an outage. I am here now.") == 1
    print("\nSynapse down %.1f s; the outage message reached staff %.1f s after the restart"
          % (restarted - down, arrived))
