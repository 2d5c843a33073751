"""A store written by the release before schema version 2 opens in this
build, is upgraded once, and loses nothing: the audit chain verifies, every
record is still listed (now from the indexes), and the rooms keep their
records, while what a stranger's invites had grown in one of them is gone.

The older binary is given as THRESHOLD_OLD_BIN: scripts/test.sh builds it
from this repository's history (the commit before schema version 2's, into
build-old/) and sets it; without it (run by hand, or no git history) the
test is skipped.  No homeserver: both daemons run standalone (standalone.py).
"""

import json
import os
import subprocess
import tempfile

import pytest

from standalone import Standalone, member_event, message_event, REMOTE_SERVER, SERVER_NAME

OLD = os.environ.get("THRESHOLD_OLD_BIN")
NEW = os.environ.get("THRESHOLD_BIN")

pytestmark = pytest.mark.skipif(not OLD or not NEW, reason="THRESHOLD_OLD_BIN and THRESHOLD_BIN not both set")

ROOM = "!theirs:" + REMOTE_SERVER
STRANGER = "@mallory:" + REMOTE_SERVER
N_INVITES = 300


def guest(i):
    return "@guest_%032x:%s" % (i, SERVER_NAME)


def status(d):
    return json.loads(d.run("status", "--json").stdout)


def test_upgrade_keeps_everything():
    with tempfile.TemporaryDirectory() as work:
        old = Standalone(OLD, work)
        old.setup()
        old.start()
        events = [member_event("$join", ROOM, STRANGER, STRANGER, "join")]
        events += [member_event("$inv%d" % i, ROOM, STRANGER, guest(i), "invite") for i in range(N_INVITES)]
        events += [message_event("$msg%d" % i, "!chat:" + SERVER_NAME, "@staff:" + SERVER_NAME, "hello %d" % i)
                   for i in range(20)]
        for k in range(0, len(events), 100):
            st, body = old.put_txn("up%d" % k, {"events": events[k:k + 100]})
            assert st == 200, body
        old.kill()
        old_records = old.audit_records(kind="contact_blocked")
        assert len(old_records) == N_INVITES
        old_status = status(old)
        old_rooms = {r["room_id"]: r for r in old_status["rooms"]}
        store = os.path.join(work, "store", "data.mdb")
        size_before = os.path.getsize(store)

        new = Standalone(NEW, work)
        new.bin = NEW
        # The new binary opens the same store and config: upgraded once.
        new_status = status(new)
        new_rooms = {r["room_id"]: r for r in new_status["rooms"]}
        assert new_rooms[ROOM]["events"] == old_rooms[ROOM]["events"] == N_INVITES + 1
        assert new_rooms["!chat:" + SERVER_NAME]["events"] == 20
        assert new_status["transactions"] == old_status["transactions"]
        assert new_status["events_seen"] == old_status["events_seen"]
        # Every record, by kind, by room and by actor: from the indexes.
        by_kind = new.audit_records(kind="contact_blocked")
        assert [r["seq"] for r in by_kind] == [r["seq"] for r in old_records]
        by_room = new.audit_records("--room", ROOM, kind="contact_blocked")
        assert len(by_room) == N_INVITES
        by_actor = new.audit_records("--actor", STRANGER)
        assert len([r for r in by_actor if r["kind"] == "contact_blocked"]) == N_INVITES
        r = new.verify()
        assert r.returncode == 0, r.stdout + r.stderr
        # The old binary now refuses the upgraded store rather than misread it.
        r = subprocess.run([OLD, "-c", old.config_path, "status", "--json"], capture_output=True, text=True)
        assert r.returncode != 0
        assert "schema version 2" in r.stderr or "schema version 2" in (r.stdout + r.stderr)
        assert os.path.getsize(store) >= size_before


def test_upgrade_sends_files_an_older_release_queued_in_the_store():
    """Files an older release queued whole in the store (STORE_BLOBS, before
    the spool) are still uploaded once by this build, read from the store
    where they are, and deleted from it; nothing is moved into the spool
    (appservice/outbox.c run_send_media; docs/reliability.md)."""
    import requests
    from fakehs import FakeHomeserver
    from helpers import wait
    from standalone import free_port
    from test_spool import guest_ready, png, spooled, start, upload, API

    hs = FakeHomeserver().start()
    try:
        with tempfile.TemporaryDirectory() as work:
            port = free_port()
            base = "http://127.0.0.1:%d" % port
            # Keys the older release knows too.
            d = Standalone(OLD, work, log_level="info", extra={
                "homeserver": {"url": hs.url, "server_name": "localhost"},
                "client": {"timeout_ms": 2000, "connect_timeout_ms": 500, "outbox_max_backoff_ms": 1000},
                "gateway": {"listen_address": "127.0.0.1", "listen_port": port, "public_url": base,
                            "address_rate_per_minute": 100000, "session_rate_per_minute": 100000},
                "services": {"helpline": {"display_name": "Test Helpline", "staff_room": "!staff:localhost",
                                          "public_entry": True, "public_per_hour": 100000}},
            })
            d.setup()
            d.start()
            wait(lambda: requests.get(base + API + "/page", timeout=2).status_code == 200, 10, "the gateway")
            s = guest_ready(base)
            hs.fail("500", match="/media/")
            pics = {"old%d" % i: png(120, 120, 50 + i) for i in range(3)}
            for lid, data in pics.items():
                r = upload(base, s, lid, data)
                assert r.status_code == 202, r.text
            d.kill()

            def blobs():
                dump = subprocess.run(["mdb_dump", "-s", "blobs", d.store_path], capture_output=True,
                                      text=True)
                assert dump.returncode == 0, dump.stderr
                body = dump.stdout.split("HEADER=END", 1)[1].strip().split("\n")
                return (len(body) - 1) // 2  # key and value lines, then DATA=END
            assert blobs() == 3  # whole in the store, as that release kept them
            assert not hs.seen(lambda r: r.path == "/_matrix/media/v3/upload" and r.status == 200)
            d.bin = NEW
            start(d, base)
            hs.heal()
            wait(lambda: json.loads(d.run("status", "--json").stdout)["outbox_pending"] == 0, 60,
                 "the outbox draining")
            counts = hs.by_local_id()
            assert {k: counts.get(k) for k in pics} == {k: 1 for k in pics}, counts
            media = hs.media()
            images = [m for m in hs.sends() if m[2].get("msgtype") == "m.image"]
            assert len(images) == 3
            for _, _, content in images:
                assert media[content["url"]].startswith(b"\x89PNG")
            assert spooled(d) == {}
            assert blobs() == 0  # once sent, gone from the store too
            d.stop()
    finally:
        hs.stop()
