"""Delivery that no outsider can hold up: the outbox's lanes.

With a scripted fake homeserver (tests/integration/fakehs.py, no Synapse),
since a server that holds a request for a minute is a fault:

- Strangers on another server invite the bot into rooms there; Threshold
  rejects each invite (a leave of a room another server holds).  The
  homeserver holds every such leave for 60 s.  A guest writes meanwhile: the
  message reaches the homeserver while the first leave is still held, and
  only one of the held leaves is ever in flight at once (the remote share of
  outbox.concurrency), so they never take the slot the guest's message needs.
- One such leave fails for good (500 every time): after
  outbox.give_up_after_seconds it is set aside, `threshold status` shows it,
  the safeguarding room is told in plain words, and other rooms' actions
  flowed all along.
"""

import json
import os
import shutil
import tempfile
import time

import pytest
import requests

from fakehs import FakeHomeserver
from helpers import wait
from standalone import REMOTE_SERVER, Standalone, free_port, member_event

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.abspath(os.environ.get("THRESHOLD_SOURCE_DIR")
                             or os.path.join(HERE, "..", ".."))
BIN = os.path.abspath(os.environ.get("THRESHOLD_BIN")
                      or os.path.join(SOURCE_DIR, "build", "threshold"))
API = "/_threshold/gateway/v1"
BOT = "@threshold:localhost"
SAFEGUARDING = "!safeguarding:localhost"
STRANGER = "@stranger:" + REMOTE_SERVER


def setup_daemon(workdir, hs, outbox):
    gw_port = free_port()
    d = Standalone(BIN, workdir, log_level="info", extra={
        "homeserver": {"url": hs.url, "server_name": "localhost"},
        # Longer than the homeserver holds a request: held, not timed out.
        "client": {"timeout_ms": 65000, "connect_timeout_ms": 500, "outbox_max_backoff_ms": 2000},
        "outbox": outbox,
        "gateway": {"listen_address": "127.0.0.1", "listen_port": gw_port,
                    "public_url": "http://127.0.0.1:%d" % gw_port},
        "services": {"helpline": {"display_name": "Test Helpline", "staff_room": "!staff:localhost",
                                  "public_entry": True}},
        "roles": {"staff": ["@sam:localhost"]},
        "safeguarding": {"room": SAFEGUARDING},
    }).setup()
    d.start()
    base = "http://127.0.0.1:%d" % gw_port
    wait(lambda: requests.get(base + API + "/page", timeout=2).status_code == 200, 10, "the gateway")
    return d, base


@pytest.fixture
def workdir():
    if not os.access(BIN, os.X_OK):
        pytest.fail("Threshold binary not found at %s (build it, or set THRESHOLD_BIN)" % BIN)
    w = tempfile.mkdtemp(prefix="threshold-lanes-")
    yield w
    if os.environ.get("THRESHOLD_KEEP") == "1":
        print("kept %s" % w)
    else:
        shutil.rmtree(w, ignore_errors=True)


class Guest:
    def __init__(self, base):
        self.base = base
        self.session = None

    def call(self, method, path, body=None):
        headers = {"Authorization": "Bearer " + self.session} if self.session else {}
        return requests.request(method, self.base + API + path, json=body, headers=headers, timeout=10)

    def redeem(self):
        r = self.call("POST", "/redeem", {"service": "helpline", "consent": {
            "version": "1", "language": "en", "agreed": True}})
        assert r.status_code == 200, r.text
        self.session = r.json()["session"]

    def send(self, local_id, text, ready_timeout=20):
        deadline = time.monotonic() + ready_timeout
        while True:
            r = self.call("POST", "/send", {"local_id": local_id, "body": text})
            if r.status_code != 409 or time.monotonic() > deadline:
                assert r.status_code == 202, r.text
                return
            time.sleep(0.05)


def pending(d):
    return json.loads(d.run("status", "--json").stdout)["outbox_pending"]


def invite_bot(d, n, room):
    """A stranger on another server invites the bot into @room."""
    status, body = d.put_txn("inv%d" % n, {"events": [
        member_event("$inv%d" % n, room, STRANGER, BOT, "invite")]})
    assert status == 200, body


def leave_path(room):
    return "/_matrix/client/v3/rooms/%s/leave" % room


def message(local_id):
    """A predicate: the guest's message @local_id, answered."""
    return lambda r: (r.method == "PUT" and "/send/" in r.path and r.status == 200
                      and (r.body or {}).get("org.threshold.local_id") == local_id)


def test_slow_remote_server_does_not_hold_up_a_guest(workdir):
    hs = FakeHomeserver().start()
    try:
        # Two slots: one for actions that may wait on another server.
        d, base = setup_daemon(workdir, hs, {"concurrency": 2})
        guest = Guest(base)
        guest.redeem()
        guest.send("hello", "Hello")  # waits while the room is made
        wait(lambda: pending(d) == 0, 15, "the outbox draining")

        # Every leave of a room on the stranger's server is held for 60 s.
        hs.fail("hang", match=REMOTE_SERVER, hold_s=60)
        rooms = ["!slow%d:%s" % (i, REMOTE_SERVER) for i in range(3)]
        for i, room in enumerate(rooms):
            invite_bot(d, i, room)
        first = hs.wait(lambda r: REMOTE_SERVER in r.path and r.path.endswith("/leave"),
                        15, "a rejection of a remote invite")[0]

        guest.send("danger", "I am in danger")
        msg = hs.wait(message("danger"), 30, "the guest's message")[0]

        # The message arrived while the first leave was still held (no leave of
        # a remote room has been answered yet), and the other held leaves never
        # took a second slot: one remote request in flight, the rest queued.
        remote = hs.seen(lambda r: REMOTE_SERVER in r.path)
        assert all(r.status == 0 for r in remote), remote
        assert len(remote) == 1, remote
        assert first.time < msg.time
        assert [m["content"].get("body") for m in hs.delivered()
                if m["content"].get("org.threshold.local_id")] == ["Hello", "I am in danger"]

        # The remote server recovers: every rejection goes through, after the message.
        hs.heal()
        wait(lambda: pending(d) == 0, 30, "the outbox draining")
        done = {r.path for r in hs.seen(lambda r: REMOTE_SERVER in r.path and r.status == 200)}
        assert done == {leave_path(room) for room in rooms}
        answered = hs.seen(lambda r: REMOTE_SERVER in r.path and r.status == 200)
        assert min(r.time for r in answered) > msg.time
        assert d.stop() == 0
    finally:
        hs.stop()


def test_an_action_failing_for_good_is_set_aside(workdir):
    hs = FakeHomeserver().start()
    try:
        d, base = setup_daemon(workdir, hs, {"concurrency": 4, "give_up_after_seconds": 5})
        guest = Guest(base)
        guest.redeem()
        guest.send("hello", "Hello")
        wait(lambda: pending(d) == 0, 15, "the outbox draining")

        dead = "!dead:" + REMOTE_SERVER
        hs.fail("500", match=REMOTE_SERVER)
        invite_bot(d, 1, dead)
        hs.wait(lambda r: REMOTE_SERVER in r.path and r.status == 500, 15, "a failed rejection")

        # Other rooms flow while it keeps failing.
        guest.send("meanwhile", "Still here")
        msg = hs.wait(message("meanwhile"), 15, "the guest's message")[0]

        alert = hs.wait(lambda r: r.method == "PUT" and SAFEGUARDING in r.path
                        and "set it aside" in (r.body or {}).get("body", ""),
                        30, "the alert in the safeguarding room")[0]
        failures = hs.seen(lambda r: REMOTE_SERVER in r.path)
        assert len(failures) >= 2 and all(r.status == 500 for r in failures)
        assert msg.time < failures[-1].time  # not held up by the failing lane
        body = alert.body["body"]
        assert alert.query.get("user_id") == BOT
        assert alert.body["msgtype"] == "m.notice"
        assert "leave in " + dead in body and "HTTP 500" in body and "threshold status" in body

        wait(lambda: pending(d) == 0, 15, "the outbox draining")
        st = json.loads(d.run("status", "--json").stdout)
        assert len(st["outbox_failed"]) == 1, st["outbox_failed"]
        row = st["outbox_failed"][0]
        assert row["op"] == "leave" and row["room_id"] == dead and row["user_id"] == BOT
        assert row["attempts"] == len(failures) and row["last_error"] == "HTTP 500 M_UNKNOWN"
        text = d.run("status").stdout
        assert "outbox set aside   1" in text and dead in text

        # Nothing more is tried for it.
        n = len(hs.seen(lambda r: REMOTE_SERVER in r.path))
        time.sleep(2.5)
        assert len(hs.seen(lambda r: REMOTE_SERVER in r.path)) == n
        assert d.stop() == 0
    finally:
        hs.stop()
