"""The daemon's whole life under valgrind memcheck: no invalid access, no use
of uninitialised memory, no definite or indirect leak, and exit status 0.

Start, guest gateway requests (tests/integration/test_memcheck.py
gateway_traffic: a parked feed poll answered at SIGTERM included),
transactions (invites of the bot from staff and from another server,
the bot's joins, commands from staff and from a stranger, a stranger's invite
to a guest and a guest found in an unmanaged room (both alerts in the
safeguarding room), a lead's `!audit` questions, a replay, and requests
refused for auth, JSON and path), a ping from the homeserver's side,
`threshold status`, SIGTERM.  No homeserver: Threshold's ping and outbox fail
and retry against a closed port (tests/integration/standalone.py), so the
Client-Server success paths are not covered here.

The one-shot commands the test runs (guest create, status, audit list, audit
verify) run under valgrind too, each with its own log.

A second life covers the Client-Server side of one path: a scripted fake
homeserver (tests/integration/fakehs.py) serves pictures and files staff
sent, the guest's page fetches them (GET /media/{id}: the fetcher thread,
its queue, a 500 from the homeserver), and SIGTERM comes while one fetch
hangs and two more wait: each is answered 503 and the daemon exits clean.

Run it alone with
    python3 -m pytest -m memcheck tests/integration
or `ctest -L memcheck`.  Skipped when valgrind is not installed.
"""

import json
import os
import re
import shutil
import signal
import struct
import subprocess
import tempfile
import time
import warnings
import zlib

import threading

import pytest
import requests

from fakehs import FakeHomeserver
from standalone import REMOTE_SERVER, Standalone, free_port, member_event, message_event

with warnings.catch_warnings():  # the mark needs no registration to select with -m
    warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
    pytestmark = pytest.mark.memcheck

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.abspath(os.environ.get("THRESHOLD_SOURCE_DIR")
                             or os.path.join(HERE, "..", ".."))
BIN = os.path.abspath(os.environ.get("THRESHOLD_BIN")
                      or os.path.join(SOURCE_DIR, "build", "threshold"))
VALGRIND = shutil.which("valgrind")
VG_OPTS = ["--leak-check=full", "--errors-for-leak-kinds=definite,indirect",
           "--error-exitcode=99", "--track-fds=no", "--num-callers=30"]

STAFF = "@staff:localhost"
LEAD = "@lead:localhost"
STRANGER = "@stranger:" + REMOTE_SERVER
SG_ROOM = "!safeguarding:localhost"


def vg(log_path):
    return [VALGRIND, *VG_OPTS, "--log-file=" + log_path]


def check_vg_log(path, what):
    """The valgrind log must report no error and no definite/indirect leak."""
    with open(path, errors="replace") as f:
        text = f.read()
    summary = re.findall(r"ERROR SUMMARY: (\d+) errors", text)
    assert summary, "%s: no ERROR SUMMARY in %s:\n%s" % (what, path, text[-3000:])
    bad = [ln for ln in text.splitlines() if re.search(
        r"Invalid (read|write|free)|uninitialised|Mismatched free|Syscall param|"
        r"Source and destination overlap|definitely lost in|indirectly lost in|"
        r"Process terminating", ln)]
    assert summary[-1] == "0" and not bad, "%s: valgrind found problems (%s):\n%s" % (
        what, path, text[-6000:])
    for kind in ("definitely", "indirectly"):
        m = re.search(r"%s lost: ([\d,]+) bytes" % kind, text)
        assert m is None or m.group(1) == "0", "%s: %s lost %s bytes:\n%s" % (
            what, kind, m.group(1), text[-6000:])
    return text


PARKED_SESSION = []


def exit_code(d, proc):
    """The daemon's exit code once it stops after SIGTERM (40 s at most)."""
    try:
        rc = proc.wait(40)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError("no exit within 40 s of SIGTERM:\n%s" % d.log_text()[-3000:])
    d.proc = None
    return rc


def gateway_traffic(d, workdir, gw):
    """The guest gateway's paths, none needing a homeserver: the page, a
    public entry, redeem, session, a send before the room exists, feeds
    (answered at once, and parked until their timeout), resume, an
    invitation from the CLI (with a QR code), leave, erase, and refusals."""
    assert requests.get(gw + "/page", timeout=30).status_code == 200
    assert requests.get(gw.rsplit("/_threshold", 1)[0] + "/", timeout=30).status_code == 200
    entry = {"service": "helpline"}
    assert requests.post(gw + "/invitation", json=entry, timeout=30).status_code == 200
    consent = {"version": "1", "language": "en", "agreed": True}
    r = requests.post(gw + "/redeem", json=dict(entry, consent=consent), timeout=30)
    assert r.status_code == 200, r.text
    first = r.json()
    auth = {"Authorization": "Bearer " + first["session"]}
    assert requests.get(gw + "/session", headers=auth, timeout=30).json()["state"] == "waiting"
    r = requests.post(gw + "/send", json={"local_id": "m1", "body": "hello"}, headers=auth, timeout=30)
    assert r.status_code == 409, r.text
    feed = requests.get(gw + "/feed", params={"timeout_ms": 0}, headers=auth, timeout=30).json()
    assert feed["events"] and feed["events"][0]["kind"] == "notice", feed
    r = requests.get(gw + "/feed", params={"since": feed["next"], "timeout_ms": 1500}, headers=auth, timeout=30)
    assert r.status_code == 200 and r.json()["events"] == [], r.text
    r = requests.post(gw + "/resume", json={"resume_code": first["resume_code"]}, timeout=30)
    assert r.status_code == 200, r.text
    link = vg_run(d, workdir, "invite", "create", "--service", "helpline", "--qr",
                  os.path.join(workdir, "invite.png")).stdout.strip()
    token = link.rsplit("#invite=", 1)[1]
    r = requests.post(gw + "/redeem", json={"invite": token, "consent": consent}, timeout=30)
    assert r.status_code == 200, r.text
    second = {"Authorization": "Bearer " + r.json()["session"]}
    for body, ctype, code in ((b"{", "application/json", 400), (b"x" * 70000, "application/json", 413),
                              (b"{}", "text/plain", 415)):
        h = dict(auth, **{"Content-Type": ctype})
        assert requests.post(gw + "/send", data=body, headers=h, timeout=30).status_code == code
    # refused on its headers: a cross-site page, and no token on an upload
    assert requests.post(gw + "/send", json={}, headers=dict(auth, Origin="https://evil.example"),
                         timeout=30).status_code == 403
    assert requests.post(gw + "/upload?local_id=u1", data=b"\x89PNG" * 1000,
                         headers={"Content-Type": "application/octet-stream"}, timeout=30).status_code == 401
    assert requests.get(gw + "/session", timeout=30).status_code == 401
    assert requests.get(gw + "/nothing", timeout=30).status_code == 404
    assert requests.get(gw + "/media/1", headers=auth, timeout=30).status_code == 404
    assert requests.post(gw + "/leave", json={}, headers=auth, timeout=30).status_code == 200
    r = requests.post(gw + "/erase", json={"confirm": True}, headers=second, timeout=30)
    assert r.status_code == 202, r.text
    assert requests.get(gw + "/erasure/" + r.json()["receipt"], timeout=30).status_code == 200
    r = requests.post(gw + "/redeem", json=dict(entry, consent=consent), timeout=30)
    PARKED_SESSION.append(r.json()["session"])


def vg_run(d, workdir, *args):
    """A one-shot command under valgrind; it must exit 0 with a clean log."""
    name = "-".join(os.path.basename(a).strip("-") for a in args)
    log = os.path.join(workdir, "valgrind-%s.log" % name)
    r = d.run(*args, prefix=vg(log), timeout=60, check=False)
    check_vg_log(log, "threshold " + " ".join(args))
    assert r.returncode == 0, "threshold %s exited %d: %s" % (" ".join(args), r.returncode,
                                                              r.stderr[-2000:])
    return r


@pytest.fixture
def workdir():
    d = tempfile.mkdtemp(prefix="threshold-memcheck-")
    yield d
    if os.environ.get("THRESHOLD_KEEP") == "1":
        print("kept %s" % d)
    else:
        shutil.rmtree(d, ignore_errors=True)


def test_daemon_lifecycle_under_valgrind(workdir):
    if not VALGRIND:
        pytest.skip("valgrind not installed")
    if not os.access(BIN, os.X_OK):
        pytest.fail("Threshold binary not found at %s (build it, or set THRESHOLD_BIN)" % BIN)
    t0 = time.monotonic()
    gw_port = free_port()
    gw = "http://127.0.0.1:%d/_threshold/gateway/v1" % gw_port
    d = Standalone(BIN, workdir, audit={"checkpoint_every": 3}, log_level="debug",
                   extra={"roles": {"staff": [STAFF]},
                          "safeguarding": {"room": SG_ROOM, "leads": [LEAD]},
                          "gateway": {"listen_port": gw_port},
                          "services": {"helpline": {"display_name": "Helpline",
                                                    "staff_room": "!staff:localhost",
                                                    "public_entry": True}}}).setup()
    guest = json.loads(vg_run(d, workdir, "guest", "create", "--json").stdout)
    serve_log = os.path.join(workdir, "valgrind-serve.log")
    d.start(prefix=vg(serve_log), ready_timeout=45)
    try:
        room = "!memcheck:localhost"
        remote_room = "!memcheck:" + REMOTE_SERVER
        txns = [
            ("mc-1", {"events": [
                member_event("$mc-remote-invite", remote_room, STRANGER, d.bot, "invite"),
                member_event("$mc-local-invite", room, STAFF, d.bot, "invite")]}),
            ("mc-2", {"events": [member_event("$mc-join", room, d.bot, d.bot, "join")]}),
            ("mc-3", {"events": [
                message_event("$mc-cmd", room, STAFF, "!threshold ping"),
                message_event("$mc-cmd-remote", room, STRANGER, "!threshold ping"),
                message_event("$mc-plain", room, STAFF, "hello"),
                {"type": "m.room.message", "event_id": "$mc-malformed"}]}),
            ("mc-4", {"events": [], "ephemeral": []}),
            ("mc-sg", {"events": [
                member_event("$mc-sg-invite", SG_ROOM, LEAD, d.bot, "invite"),
                member_event("$mc-sg-join", SG_ROOM, d.bot, d.bot, "join")]}),
            ("mc-guest", {"events": [
                member_event("$mc-guest-invite", "!dm:" + REMOTE_SERVER, STRANGER,
                             guest["user_id"], "invite"),
                member_event("$mc-guest-join", "!elsewhere:localhost", guest["user_id"],
                             guest["user_id"], "join")]}),
            ("mc-audit", {"events": [
                message_event("$mc-audit-recent", SG_ROOM, LEAD, "!audit recent"),
                message_event("$mc-audit-guest", SG_ROOM, LEAD, "!audit guest " + guest["pseudonym"]),
                message_event("$mc-audit-id", SG_ROOM, LEAD, "!audit guest " + guest["user_id"]),
                message_event("$mc-audit-nobody", SG_ROOM, LEAD, "!audit guest Nobody Here"),
                message_event("$mc-audit-usage", SG_ROOM, LEAD, "!audit"),
                message_event("$mc-audit-staff", SG_ROOM, STAFF, "!audit recent"),
                message_event("$mc-audit-elsewhere", room, LEAD, "!audit recent")]}),
        ]
        for txn_id, body in txns:
            status, resp = d.put_txn(txn_id, body, timeout=30)
            assert status == 200, (txn_id, status, resp)
        # A replay, then the same events under a new txnId: both deduplicated.
        assert d.put_txn("mc-1", txns[0][1], timeout=30)[0] == 200
        assert d.put_txn("mc-5", txns[0][1], timeout=30)[0] == 200
        # Refusals: bad JSON, wrong token, unknown path.
        assert d.put_txn("mc-bad", b'{"events": [', timeout=30)[0] == 400
        tok, d.hs_token = d.hs_token, "wrong"
        try:
            assert d.put_txn("mc-6", {"events": []}, timeout=30)[0] == 403
        finally:
            d.hs_token = tok
        assert d._request("GET", "/_matrix/app/v1/nothing-here", None, timeout=30)[0] == 404

        assert d.ping(timeout=30)[0] == 200

        r = vg_run(d, workdir, "status", "--json")
        assert "!memcheck:localhost" in r.stdout, r.stdout

        gateway_traffic(d, workdir, gw)
        # A feed poll still parked when the daemon is told to stop is answered.
        parked = {}
        poller = threading.Thread(target=lambda: parked.update(r=requests.get(
            gw + "/feed", params={"since": 99, "timeout_ms": 60000},
            headers={"Authorization": "Bearer " + PARKED_SESSION[0]}, timeout=120)))
        poller.start()
        time.sleep(1.0)

        # Let the outbox and the ping retry against the missing homeserver a few times.
        time.sleep(1.5)
        assert d.running(), "threshold died:\n%s" % d.log_text()[-3000:]

        proc = d.proc
        proc.send_signal(signal.SIGTERM)
        poller.join(60)
        assert parked.get("r") is not None and parked["r"].status_code == 200, parked
        rc = exit_code(d, proc)
    finally:
        d.kill()

    text = check_vg_log(serve_log, "threshold serve")
    assert rc == 0, "threshold serve under valgrind exited %d (99: valgrind errors):\n%s" % (
        rc, text[-6000:])
    assert "stopped cleanly" in d.log_text(), d.log_text()[-3000:]

    # The life it had is in the log, signed at the end.
    r = vg_run(d, workdir, "audit", "list", "--format", "jsonl")
    kinds = [line.split('"kind":"', 1)[1].split('"', 1)[0] for line in r.stdout.splitlines()]
    assert kinds.count("contact_blocked") == 2, kinds  # the bot's and the guest's invites
    assert kinds.count("membership_enforced") == 1, kinds
    assert kinds.count("guest_created") == 4, kinds  # the CLI's, and three through the gateway
    assert kinds.count("consent_recorded") == 3, kinds
    assert kinds.count("invite_created") == 1, kinds
    assert kinds.count("conversation_closed") == 2, kinds  # one left, one erased
    assert kinds.count("data_erased") == 1, kinds
    # The lead's five questions in the safeguarding room are answered; the two others are not.
    lead_views = [ln for ln in r.stdout.splitlines()
                  if '"kind":"audit_viewed"' in ln and '"actor":"%s"' % LEAD in ln]
    assert len(lead_views) == 5, lead_views
    assert "startup" in kinds and "config_loaded" in kinds, kinds
    assert kinds[-3:-1] == ["shutdown", "checkpoint"], kinds  # then this listing's audit_viewed
    # the homeserver is gone by now: the store alone (the witness is test_audit_witness.py's)
    vg_run(d, workdir, "audit", "verify", "--no-witness")
    print("\nmemcheck lifecycle: %.1f s, %d audit records" % (time.monotonic() - t0, len(kinds)))


def png_with_text():
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
            + chunk(b"tEXt", b"where\x00home") + chunk(b"IDAT", zlib.compress(b"\x00\x80"))
            + chunk(b"IEND", b""))


def test_media_fetch_under_valgrind(workdir):
    if not VALGRIND:
        pytest.skip("valgrind not installed")
    if not os.access(BIN, os.X_OK):
        pytest.fail("Threshold binary not found at %s (build it, or set THRESHOLD_BIN)" % BIN)
    t0 = time.monotonic()
    hs = FakeHomeserver().start()
    gw_port = free_port()
    gw = "http://127.0.0.1:%d/_threshold/gateway/v1" % gw_port
    # A long client timeout: the hung fetch is ended by stopping, not by curl.
    d = Standalone(BIN, workdir, log_level="debug", extra={
        "homeserver": {"url": hs.url, "server_name": "localhost"},
        "client": {"timeout_ms": 30000, "connect_timeout_ms": 5000, "outbox_max_backoff_ms": 5000},
        "roles": {"staff": [STAFF]},
        "gateway": {"listen_port": gw_port},
        "services": {"helpline": {"display_name": "Helpline", "staff_room": "!staff:localhost",
                                  "public_entry": True}}}).setup()
    serve_log = os.path.join(workdir, "valgrind-serve-media.log")
    d.start(prefix=vg(serve_log), ready_timeout=45)
    try:
        consent = {"version": "1", "language": "en", "agreed": True}
        r = requests.post(gw + "/redeem", json={"service": "helpline", "consent": consent}, timeout=30)
        assert r.status_code == 200, r.text
        auth = {"Authorization": "Bearer " + r.json()["session"]}
        deadline = time.monotonic() + 60
        while True:  # until the room is made
            r = requests.post(gw + "/send", json={"local_id": "m1", "body": "hello"}, headers=auth,
                              timeout=30)
            if r.status_code != 409 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert r.status_code == 202, r.text
        mine = hs.wait(lambda q: q.method == "PUT" and "/send/" in q.raw_path and q.body
                       and q.body.get("org.threshold.local_id") == "m1", 60, "the guest's message")[0]
        guest, room = mine.query["user_id"], mine.path.split("/")[5]
        now = int(time.time() * 1000)
        events = [member_event("$mm-join", room, guest, guest, "join", now)]
        for i, (data, name, msgtype) in enumerate(((png_with_text(), "map.png", "m.image"),
                                                   (b"%PDF-1.4 leaflet", "leaflet.pdf", "m.file"))):
            events.append({"type": "m.room.message", "room_id": room, "sender": STAFF,
                           "event_id": "$mm-%d" % i, "origin_server_ts": now + 1 + i,
                           "content": {"msgtype": msgtype, "body": name, "url": hs.add_media(data)}})
        status, resp = d.put_txn("mm-1", {"events": events}, timeout=30)
        assert status == 200, resp
        feed = requests.get(gw + "/feed", params={"timeout_ms": 0}, headers=auth, timeout=30).json()
        ids = [e["id"] for e in feed["events"] if e.get("attachment")]
        assert len(ids) == 2, feed
        r = requests.get(gw + "/media/%d" % ids[0], headers=auth, timeout=60)
        assert r.status_code == 200 and r.headers["Content-Type"] == "image/png", r.text
        assert b"tEXt" not in r.content
        r = requests.get(gw + "/media/%d" % ids[1], headers=auth, timeout=60)
        assert r.status_code == 200 and r.content == b"%PDF-1.4 leaflet", r.text
        hs.fail("500", match="/media/")
        assert requests.get(gw + "/media/%d" % ids[1], headers=auth, timeout=60).status_code == 502

        # One fetch hangs, two wait behind it; then SIGTERM.
        hs.fail("hang", match="/media/")
        got = {}

        def fetch(k):
            got[k] = requests.get(gw + "/media/%d" % ids[k % 2], headers=auth, timeout=120)
        threads = [threading.Thread(target=fetch, args=(k,)) for k in range(3)]
        threads[0].start()
        hs.wait(lambda q: "/media/" in q.raw_path and q.status == 0, 30, "a hung download")
        for t in threads[1:]:
            t.start()
        time.sleep(1.0)
        proc = d.proc
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(60)
        assert sorted(got) == [0, 1, 2], got
        assert [got[k].status_code for k in range(3)] == [503, 503, 503], [got[k].text for k in got]
        assert all(got[k].json()["retry_after_ms"] > 0 for k in range(3))
        rc = exit_code(d, proc)
    finally:
        d.kill()
        hs.stop()
    text = check_vg_log(serve_log, "threshold serve (media)")
    assert rc == 0, "threshold serve under valgrind exited %d (99: valgrind errors):\n%s" % (
        rc, text[-6000:])
    assert "stopped cleanly" in d.log_text(), d.log_text()[-3000:]
    assert "mxc" not in d.log_text() and "/media/download" not in d.log_text()
    print("\nmemcheck media: %.1f s" % (time.monotonic() - t0))
