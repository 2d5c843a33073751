"""A store written by an earlier release opens in this build, is upgraded
once, and loses nothing.

From schema version 1: the audit chain verifies, every record is still
listed (now from the indexes), and the rooms keep their records, while what
a stranger's invites had grown in one of them is gone.  From schema version
2 (a key per transaction in `txns`): the events seen are all still seen, the
newest transactions are still known by their id, and nothing is handled
twice when the homeserver resends any of them.

The older binaries are given as THRESHOLD_OLD_BIN (schema 1) and
THRESHOLD_V2_BIN (schema 2) and THRESHOLD_V3_BIN (schema 3: every audit
record straight into the indexes): scripts/test.sh builds them from this
repository's history (build-old/, build-v2/, build-v3/) and sets them; without one (run
by hand, or no git history) its test is skipped.  No homeserver: the daemons
run standalone (standalone.py).
"""

import json
import os
import subprocess
import tempfile

import pytest

from standalone import Standalone, member_event, message_event, REMOTE_SERVER, SERVER_NAME

OLD = os.environ.get("THRESHOLD_OLD_BIN")
NEW = os.environ.get("THRESHOLD_BIN")

V2 = os.environ.get("THRESHOLD_V2_BIN")
V3 = os.environ.get("THRESHOLD_V3_BIN")

ROOM = "!theirs:" + REMOTE_SERVER
STRANGER = "@mallory:" + REMOTE_SERVER
N_INVITES = 300


def guest(i):
    return "@guest_%032x:%s" % (i, SERVER_NAME)


def status(d):
    return json.loads(d.run("status", "--json").stdout)


@pytest.mark.skipif(not OLD or not NEW, reason="THRESHOLD_OLD_BIN and THRESHOLD_BIN not both set")
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
        assert "schema version 4" in (r.stdout + r.stderr)
        assert os.path.getsize(store) >= size_before


@pytest.mark.skipif(not OLD or not NEW, reason="THRESHOLD_OLD_BIN and THRESHOLD_BIN not both set")
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
@pytest.mark.skipif(not V2 or not NEW, reason="THRESHOLD_V2_BIN and THRESHOLD_BIN not both set")
def test_upgrade_from_schema2_handles_nothing_twice():
    chat = "!chat:" + SERVER_NAME
    staff = "@staff:" + SERVER_NAME
    with tempfile.TemporaryDirectory() as work:
        old = Standalone(V2, work)
        old.setup()
        old.start()
        # A homeserver catching up: one event a transaction, then a batch.
        one = {}
        for i in range(30):
            one["c%d" % i] = {"events": [message_event("$one%d" % i, chat, staff, "one %d" % i)]}
            st, body = old.put_txn("c%d" % i, one["c%d" % i])
            assert st == 200, body
        batch = {"events": [message_event("$many%d" % i, chat, staff, "many %d" % i) for i in range(100)]}
        assert old.put_txn("batch", batch)[0] == 200
        old.kill()
        old_status = status(old)
        assert old_status["transactions"] == 31
        assert old_status["events_seen"] == 130

        new = old  # the same config, store and tokens
        new.bin = NEW
        new_status = status(new)
        # The newest 16 transactions are kept by id; every event id is kept.
        assert new_status["transactions"] == 16
        assert new_status["events_seen"] == 130
        assert {r["room_id"]: r["events"] for r in new_status["rooms"]}[chat] == 130

        new.start()
        # Synapse resends: the newest (known by id), an old one (forgotten by
        # id, its event still seen), the batch under a new id, and one new event.
        assert new.put_txn("batch", batch)[0] == 200
        assert new.put_txn("c0", one["c0"])[0] == 200
        assert new.put_txn("c29", one["c29"])[0] == 200
        assert new.put_txn("again", batch)[0] == 200
        assert new.put_txn("c30", {"events": [message_event("$one30", chat, staff, "new")]})[0] == 200
        new.kill()
        after = status(new)
        assert {r["room_id"]: r["events"] for r in after["rooms"]}[chat] == 131
        assert after["events_seen"] == 131
        # The schema-2 binary now refuses the upgraded store rather than misread it.
        r = subprocess.run([V2, "-c", old.config_path, "status", "--json"], capture_output=True, text=True)
        assert r.returncode != 0
        assert "schema version 4" in (r.stdout + r.stderr)


@pytest.mark.skipif(not V3 or not NEW, reason="THRESHOLD_V3_BIN and THRESHOLD_BIN not both set")
def test_upgrade_from_schema3_lists_every_audit_record():
    """Schema 4 keeps the newest audit records out of the index by kind, room
    and actor until a batch of them is moved there; `audit list` reads them
    from the log.  A store of schema 3 (all indexed) lists the same after the
    upgrade, and so do the records added after it, before and after a batch."""
    other = "!other:" + REMOTE_SERVER
    with tempfile.TemporaryDirectory() as work:
        old = Standalone(V3, work)
        old.setup()
        old.start()
        events = [member_event("$j3", ROOM, STRANGER, STRANGER, "join")]
        events += [member_event("$i3_%d" % i, ROOM, STRANGER, guest(i), "invite") for i in range(150)]
        for k in range(0, len(events), 50):
            assert old.put_txn("v3_%d" % k, {"events": events[k:k + 50]})[0] == 200
        old.kill()
        old_records = old.audit_records(kind="contact_blocked")
        assert len(old_records) == 150

        new = old
        new.bin = NEW
        assert [r["seq"] for r in new.audit_records(kind="contact_blocked")] == [r["seq"] for r in old_records]
        assert len(new.audit_records("--room", ROOM, kind="contact_blocked")) == 150
        new.start()
        # One at a time, as a homeserver catching up sends them: 100 more
        # refusals in another room, crossing a batch into the index.
        for i in range(100):
            ev = member_event("$i4_%d" % i, other, STRANGER, guest(1000 + i), "invite")
            assert new.put_txn("v4_%d" % i, {"events": [ev]})[0] == 200
            if i in (0, 40, 99):
                got = new.audit_records("--room", other, kind="contact_blocked")
                assert [r["subject"] for r in got] == [guest(1000 + j) for j in range(i + 1)]
        new.kill()
        by_kind = new.audit_records(kind="contact_blocked")
        assert len(by_kind) == 250
        assert [r["seq"] for r in by_kind] == sorted(r["seq"] for r in by_kind)
        assert len(new.audit_records("--room", ROOM, kind="contact_blocked")) == 150
        assert len(new.audit_records("--room", other, kind="contact_blocked")) == 100
        by_actor = new.audit_records("--actor", STRANGER)
        assert len([r for r in by_actor if r["kind"] == "contact_blocked"]) == 250
        r = new.verify()
        assert r.returncode == 0, r.stdout + r.stderr
        r = subprocess.run([V3, "-c", old.config_path, "status", "--json"], capture_output=True, text=True)
        assert r.returncode != 0
        assert "schema version 4" in (r.stdout + r.stderr)
