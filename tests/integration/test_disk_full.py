"""The disk, or the store's map, fills up while guests use the gateway.

1. The store on a small tmpfs, then the file system filled to the last byte:
   gateway sends and redeems are answered 503 TH_UNAVAILABLE with
   retry_after_ms, the log says the commit failed and why ("No space left
   on device", or "Input/output error" when LMDB's page write came up
   short), the daemon keeps running, and a refused request leaves nothing
   behind.  Once space is freed the same requests succeed, each acknowledged
   message reaches the homeserver exactly once, and the audit log verifies.
   Needs root to mount the tmpfs: skipped otherwise.
2. The LMDB map full (store.map_size_mb reached) through the gateway: the
   same 503; after a restart with a larger map the guest carries on.

The homeserver is a fake (tests/integration/fakehs.py).
"""

import json
import os
import shutil
import subprocess
import tempfile
import time

import pytest
import requests
import yaml

from fakehs import FakeHomeserver
from helpers import wait
from standalone import REMOTE_SERVER, Standalone, free_port, message_event

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.abspath(os.environ.get("THRESHOLD_SOURCE_DIR")
                             or os.path.join(HERE, "..", ".."))
BIN = os.path.abspath(os.environ.get("THRESHOLD_BIN")
                      or os.path.join(SOURCE_DIR, "build", "threshold"))
API = "/_threshold/gateway/v1"
CONSENT = {"version": "1", "language": "en", "agreed": True}


def post(base, path, body, session=None):
    headers = {"Authorization": "Bearer " + session} if session else {}
    return requests.post(base + API + path, json=body, headers=headers, timeout=10)


def redeem(base):
    return post(base, "/redeem", {"service": "helpline", "consent": CONSENT})


def send(base, session, lid, timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        r = post(base, "/send", {"local_id": lid, "body": "message " + lid}, session)
        if r.status_code != 409 or time.monotonic() > deadline:
            return r
        time.sleep(0.05)


def assert_unavailable(r):
    assert r.status_code == 503, (r.status_code, r.text)
    j = r.json()
    assert j["errcode"] == "TH_UNAVAILABLE" and j["retry_after_ms"] > 0, j


def daemon_for(workdir, hs, store_path, map_size_mb):
    gw_port = free_port()
    d = Standalone(BIN, workdir, log_level="info", map_size_mb=map_size_mb, extra={
        "homeserver": {"url": hs.url, "server_name": "localhost"},
        "client": {"timeout_ms": 2000, "connect_timeout_ms": 500, "outbox_max_backoff_ms": 1000},
        "gateway": {"listen_address": "127.0.0.1", "listen_port": gw_port,
                    "public_url": "http://127.0.0.1:%d" % gw_port,
                    "address_rate_per_minute": 100000, "session_rate_per_minute": 100000,
                    "public_per_address_per_hour": 10000},
        "services": {"helpline": {"display_name": "Test Helpline", "staff_room": "!staff:localhost",
                                  "public_entry": True, "public_per_hour": 100000}},
    })
    d.store_path = store_path
    d.setup()
    with open(d.config_path) as f:
        cfg = yaml.safe_load(f)
    cfg["store"]["path"] = store_path
    with open(d.config_path, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    return d, "http://127.0.0.1:%d" % gw_port


def start(d, base):
    d.start()
    wait(lambda: requests.get(base + API + "/page", timeout=2).status_code == 200, 10, "the gateway")


def outbox_pending(d):
    return json.loads(d.run("status", "--json").stdout)["outbox_pending"]


def consents(d):
    return len(d.audit_records(kind="consent_recorded"))


@pytest.fixture
def workdir():
    w = tempfile.mkdtemp(prefix="threshold-diskfull-")
    hs = FakeHomeserver().start()
    yield w, hs
    hs.stop()
    mnt = os.path.join(w, "mnt")
    if os.path.ismount(mnt):
        subprocess.run(["umount", "-l", mnt], check=False)
    shutil.rmtree(w, ignore_errors=True)


def mount_tmpfs(path, size):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs for the store needs root")
    os.makedirs(path)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s" % size, "tmpfs", path],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (%s)" % r.stdout.strip())


def fill(path):
    """Write a file until the file system is full; its path."""
    filler = os.path.join(path, "filler")
    chunk = b"\0" * 65536
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError:
            pass
        try:  # the last few bytes
            while True:
                f.write(b"\0" * 512)
        except OSError:
            pass
    return filler


def test_disk_full_gateway_answers_503_and_recovers(workdir):
    w, hs = workdir
    mnt = os.path.join(w, "mnt")
    mount_tmpfs(mnt, "8m")
    d, base = daemon_for(w, hs, os.path.join(mnt, "store"), 64)
    start(d, base)
    try:
        r = redeem(base)
        assert r.status_code == 200, r.text
        session = r.json()["session"]
        assert send(base, session, "before").status_code == 202
        wait(lambda: outbox_pending(d) == 0, 10, "the outbox draining")
        before = consents(d)

        # The homeserver fails from here on, so what the guest sends stays
        # queued (a drained queue would give LMDB pages back to reuse).
        hs.fail("500")
        filler = fill(mnt)
        # LMDB reuses pages it freed, so a few commits may still fit; the
        # file cannot grow, so soon every write is refused.
        acked, refused_lid = [], None
        for i in range(500):
            lid = "full-%d" % i
            r = send(base, session, lid)
            if r.status_code == 202:
                acked.append(lid)
                continue
            assert_unavailable(r)
            refused_lid = lid
            break
        assert refused_lid, "500 sends fitted on a full file system"
        t = time.monotonic()
        r = redeem(base)
        assert_unavailable(r)
        assert time.monotonic() - t < 2.0
        # Sent again while the disk is still full: refused again, or taken
        # if LMDB found a page the outbox's retries freed meanwhile; once.
        r = send(base, session, refused_lid)
        if r.status_code == 202:
            acked.append(refused_lid)
        else:
            assert_unavailable(r)
        assert d.running(), "threshold died when the disk filled:\n" + d.log_text()[-3000:]
        log = d.log_text()
        # LMDB reports ENOSPC, or EIO when a page write came up short.
        assert "store: commit failed: No space left on device" in log or \
            "store: commit failed: Input/output error" in log, log[-3000:]
        assert "gateway: the store failed" in log, log[-3000:]
        # Reads still work: the session answers.
        r = requests.get(base + API + "/session", headers={"Authorization": "Bearer " + session},
                         timeout=10)
        assert r.status_code == 200, r.text

        os.unlink(filler)
        hs.heal()
        r = send(base, session, refused_lid)
        assert r.status_code == 202, r.text
        if refused_lid not in acked:
            acked.append(refused_lid)
        r = redeem(base)
        assert r.status_code == 200, r.text
        wait(lambda: outbox_pending(d) == 0, 20, "the outbox draining after space was freed")
        counts = hs.by_local_id()
        assert {lid: counts.get(lid) for lid in ["before"] + acked} == \
            {lid: 1 for lid in ["before"] + acked}, counts
        assert all(v == 1 for v in counts.values()), counts
        # The refused redeem left no consent behind: only the one after recovery.
        assert consents(d) == before + 1
        assert d.verify().returncode == 0, d.verify().stdout
        assert d.stop() == 0
        r = d.verify()
        assert r.returncode == 0, r.stdout + r.stderr
        print("\n%d sends fitted after the disk filled; the first refused one, a redeem and a "
              "resend were answered 503 and succeeded after space was freed" % len(acked))
    finally:
        d.kill()


def test_map_full_gateway_answers_503_and_recovers_with_a_larger_map(workdir):
    w, hs = workdir
    d, base = daemon_for(w, hs, os.path.join(w, "store"), 16)
    start(d, base)
    try:
        r = redeem(base)
        assert r.status_code == 200, r.text
        session = r.json()["session"]
        assert send(base, session, "before").status_code == 202
        wait(lambda: outbox_pending(d) == 0, 10, "the outbox draining")

        # The homeserver fails from here on, so what the guests send stays
        # queued (a drained queue would give its pages back).
        hs.fail("500")
        # Fill the map with AS transactions: messages in a room Threshold does
        # not manage, which it only remembers by event id (long ones, so the
        # map fills fast without queueing homeserver work behind the guest's).
        conn = d.connection()
        n = 0
        while True:
            events = [message_event("$mapfull-%d-%d-%s" % (n, i, "x" * 200), "!elsewhere:" + REMOTE_SERVER,
                                    "@stranger:" + REMOTE_SERVER, "hello") for i in range(100)]
            status, _ = d.put_txn("mapfull-%d" % n, {"events": events}, conn=conn)
            if status != 200:
                assert status == 503
                break
            n += 1
        conn.close()
        # A smaller commit may still fit: redeem, then send, until refused.
        redeemed = 0
        for _ in range(200):
            r = redeem(base)
            if r.status_code != 200:
                break
            redeemed += 1
        assert_unavailable(r)
        acked, lid = [], None
        for i in range(200):
            r = send(base, session, "refused-%d" % i)
            if r.status_code != 202:
                lid = "refused-%d" % i
                break
            acked.append("refused-%d" % i)
        assert_unavailable(r)
        assert d.running()
        assert "store full" in d.log_text() or "MDB_MAP_FULL" in d.log_text(), d.log_text()[-2000:]
        assert d.stop() == 0
        assert d.verify().returncode == 0

        with open(d.config_path) as f:
            cfg = yaml.safe_load(f)
        cfg["store"]["map_size_mb"] = 64
        with open(d.config_path, "w") as f:
            yaml.safe_dump(cfg, f, sort_keys=False)
        hs.heal()
        start(d, base)
        r = send(base, session, lid)
        assert r.status_code == 202, r.text
        r = redeem(base)
        assert r.status_code == 200, r.text
        # The first guest, those that fitted, the one after: none from a refusal.
        assert consents(d) == 1 + redeemed + 1
        wait(lambda: outbox_pending(d) == 0, 60, "the outbox draining with the larger map")
        counts = hs.by_local_id()
        for x in ["before", lid] + acked:
            assert counts.get(x) == 1, (x, counts)
        assert all(v == 1 for v in counts.values()), counts
        assert d.stop() == 0
        r = d.verify()
        assert r.returncode == 0, r.stdout + r.stderr
        print("\nmap full after %d AS transactions (+%d redeems, %d sends that fitted); redeem and "
              "send answered 503; after a restart with a larger map both succeeded once"
              % (n, redeemed, len(acked)))
    finally:
        d.kill()


def test_disk_full_while_spooling_an_upload(workdir):
    """The file system fills while a guest's picture is written to the
    spool (appservice/spool.h): the upload is answered 503 TH_UNAVAILABLE
    with retry_after_ms, no file is left in the spool and nothing is
    queued; a short message still fits; once space frees, the same upload
    goes, once."""
    from test_spool import guest_ready, png, spooled, upload
    w, hs = workdir
    mnt = os.path.join(w, "mnt")
    mount_tmpfs(mnt, "8m")
    d, base = daemon_for(w, hs, os.path.join(mnt, "store"), 64)
    start(d, base)
    try:
        session = guest_ready(base)
        wait(lambda: outbox_pending(d) == 0, 10, "the outbox draining")
        pic = png(400, 400, 3)  # about 480 KB, cleaned and sealed
        filler = fill(mnt)
        with open(filler, "r+b") as f:  # 256 KB free: a message fits, the picture does not
            f.truncate(os.path.getsize(filler) - 262144)
        pending = outbox_pending(d)
        r = upload(base, session, "pic", pic)
        assert_unavailable(r)
        assert spooled(d) == {}
        assert outbox_pending(d) == pending
        assert "failed: No space left on device" in d.log_text(), d.log_text()[-3000:]
        assert send(base, session, "small").status_code == 202
        assert d.running()
        os.unlink(filler)
        r = upload(base, session, "pic", pic)
        assert r.status_code == 202, r.text
        wait(lambda: outbox_pending(d) == 0, 20, "the outbox draining")
        counts = hs.by_local_id()
        assert counts.get("pic") == 1 and counts.get("small") == 1, counts
        assert spooled(d) == {}
    finally:
        d.kill()
