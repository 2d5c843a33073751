"""Guests' uploads wait in the spool (`<store.path>/spool`), one file each,
not whole in the LMDB map (appservice/spool.h).

The homeserver is slow (a fake one failing with 500, tests/integration/fakehs.py),
so uploads stay queued.  Each is a file of its own, mode 0600, holding none
of the picture's bytes in the clear (sealed under the guest's key); the map
does not grow by them.  A crash (SIGKILL) with files queued, plus a file no
action names (a crash between the write and the commit), then a restart:
the stray file goes, the queued ones stay; once the homeserver heals every
upload reaches it once, byte for byte the picture Threshold made, and the
spool is empty.  gateway.max_blob_bytes_held counts the spool.  An erased
guest's queued files go at once, and none of them is uploaded.
"""

import os
import random
import shutil
import stat
import struct
import tempfile
import time
import zlib

import pytest
import requests

from fakehs import FakeHomeserver
from helpers import wait
from standalone import Standalone, free_port

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.abspath(os.environ.get("THRESHOLD_SOURCE_DIR")
                             or os.path.join(HERE, "..", ".."))
BIN = os.path.abspath(os.environ.get("THRESHOLD_BIN")
                      or os.path.join(SOURCE_DIR, "build", "threshold"))
API = "/_threshold/gateway/v1"
CONSENT = {"version": "1", "language": "en", "agreed": True}


def png(w, h, seed):
    """A PNG of random pixels (does not compress: about 3 * w * h bytes)."""
    rng = random.Random(seed)

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff))
    raw = b"".join(b"\x00" + rng.randbytes(3 * w) for _ in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 1)) + chunk(b"IEND", b""))


def post(base, path, body, session=None):
    headers = {"Authorization": "Bearer " + session} if session else {}
    return requests.post(base + API + path, json=body, headers=headers, timeout=10)


def upload(base, session, lid, data):
    deadline = time.monotonic() + 20
    while True:
        r = requests.post(base + API + "/upload", params={"local_id": lid, "name": "IMG_1.png"},
                          data=data, headers={"Authorization": "Bearer " + session,
                                              "Content-Type": "application/octet-stream"},
                          timeout=30)
        if r.status_code != 409 or time.monotonic() > deadline:
            return r
        time.sleep(0.05)


def spooled(d):
    """name -> (size, mode) of each file in the spool."""
    sp = os.path.join(d.store_path, "spool")
    if not os.path.isdir(sp):
        return {}
    out = {}
    for n in os.listdir(sp):
        st = os.lstat(os.path.join(sp, n))
        out[n] = (st.st_size, stat.S_IMODE(st.st_mode))
    return out


def outbox_pending(d):
    import json
    return json.loads(d.run("status", "--json").stdout)["outbox_pending"]


def daemon(w, hs, gateway=None):
    gw_port = free_port()
    gw = {"listen_address": "127.0.0.1", "listen_port": gw_port,
          "public_url": "http://127.0.0.1:%d" % gw_port,
          "address_rate_per_minute": 100000, "session_rate_per_minute": 100000,
          "public_per_address_per_hour": 10000,
          "guest_bytes_per_hour": 1073741824}
    gw.update(gateway or {})
    d = Standalone(BIN, w, log_level="info", map_size_mb=64, extra={
        "homeserver": {"url": hs.url, "server_name": "localhost"},
        "client": {"timeout_ms": 2000, "connect_timeout_ms": 500, "outbox_max_backoff_ms": 1000},
        "gateway": gw,
        "services": {"helpline": {"display_name": "Test Helpline", "staff_room": "!staff:localhost",
                                  "public_entry": True, "public_per_hour": 100000}},
    })
    d.setup()
    return d, "http://127.0.0.1:%d" % gw_port


def start(d, base):
    d.start()
    wait(lambda: requests.get(base + API + "/page", timeout=2).status_code == 200, 10, "the gateway")


@pytest.fixture
def workdir():
    w = tempfile.mkdtemp(prefix="threshold-spool-")
    hs = FakeHomeserver().start()
    yield w, hs
    hs.stop()
    shutil.rmtree(w, ignore_errors=True)


def guest_ready(base):
    r = post(base, "/redeem", {"service": "helpline", "consent": CONSENT})
    assert r.status_code == 200, r.text
    s = r.json()["session"]
    deadline = time.monotonic() + 20
    while post(base, "/send", {"local_id": "hello", "body": "hello"}, s).status_code == 409:
        assert time.monotonic() < deadline, "the conversation was never ready"
        time.sleep(0.05)
    return s


def test_uploads_wait_in_the_spool_survive_a_crash_and_go_once(workdir):
    w, hs = workdir
    d, base = daemon(w, hs)
    start(d, base)
    try:
        s = guest_ready(base)
        wait(lambda: outbox_pending(d) == 0, 30, "the outbox draining")
        mdb = os.path.join(d.store_path, "data.mdb")
        size_before = os.path.getsize(mdb)
        hs.fail("500", match="/media/")
        pics = {"p%d" % i: png(400, 400, i) for i in range(6)}  # 480 KB each
        for lid, data in pics.items():
            r = upload(base, s, lid, data)
            assert r.status_code == 202, r.text
        files = spooled(d)
        assert len(files) == 6, files
        assert all(mode == 0o600 and size > 400 * 400 * 3 for size, mode in files.values()), files
        # Sealed: none of a picture's rows is in its file in the clear.
        sp = os.path.join(d.store_path, "spool")
        for n in files:
            with open(os.path.join(sp, n), "rb") as f:
                body = f.read()
            assert all(data[100:200] not in body for data in pics.values())
        # The map did not take them: 2.9 MB of files, the map grew by far less.
        assert os.path.getsize(mdb) - size_before < 1048576, (size_before, os.path.getsize(mdb))

        # A crash; and a stray file as a crash between write and commit leaves.
        d.kill()
        stray = os.path.join(sp, "%032x" % random.getrandbits(128))
        with open(stray, "wb") as f:
            f.write(b"x" * 1000)
        other = os.path.join(sp, "README")  # not a spool name: left alone
        with open(other, "wb") as f:
            f.write(b"kept")
        start(d, base)
        assert not os.path.exists(stray)
        assert os.path.exists(other)
        os.unlink(other)
        assert set(spooled(d)) == set(files)

        hs.heal()
        wait(lambda: outbox_pending(d) == 0, 60, "the outbox draining")
        counts = hs.by_local_id()
        assert {k: counts.get(k) for k in pics} == {k: 1 for k in pics}, counts
        media = hs.media()
        images = [m for m in hs.sends() if m[2].get("msgtype") == "m.image"]
        assert len(images) == 6, images
        for _, _, content in images:
            got = media[content["url"]]
            assert got.startswith(b"\x89PNG") and len(got) == content["info"]["size"]
        assert spooled(d) == {}
    finally:
        d.stop()


def test_files_held_count_the_spool_and_erasure_removes_them(workdir):
    w, hs = workdir
    # 1 MiB of files held at most (the key's minimum): the third 480 KB picture waits.
    d, base = daemon(w, hs, gateway={"max_blob_bytes_held": 1048576})
    start(d, base)
    try:
        s = guest_ready(base)
        hs.fail("500", match="/media/")
        codes = [upload(base, s, "q%d" % i, png(400, 400, 10 + i)).status_code for i in range(4)]
        assert codes[:3] == [202, 202, 202] and codes[3] == 503, codes
        held = sum(size for size, _ in spooled(d).values())
        assert 1048576 <= held < 1048576 + 600000, held
        r = upload(base, s, "q9", png(400, 400, 99))
        assert r.status_code == 503 and r.json()["errcode"] == "TH_UNAVAILABLE", r.text
        assert r.json()["retry_after_ms"] > 0
        assert len(spooled(d)) == 3

        # The guest erases their data: their queued files go at once.
        r = post(base, "/erase", {"confirm": True}, s)
        assert r.status_code in (200, 202), r.text
        assert spooled(d) == {}
        hs.heal()
        wait(lambda: outbox_pending(d) == 0, 60, "the outbox draining")
        assert not [m for m in hs.sends() if m[2].get("msgtype") == "m.image"]
        assert not hs.seen(lambda r: r.path == "/_matrix/media/v3/upload" and r.status == 200)
    finally:
        d.stop()
